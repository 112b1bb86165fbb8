"""The run.yaml example in the README is a valid schema-2 configuration."""

import re
from pathlib import Path

from deepict_dask.pipeline.config import parse_config
from deepict_dask.units import Length

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_run_yaml_example_validates():
    blocks = re.findall(r"```yaml\n(.*?)```", README.read_text(), flags=re.S)
    example = next(b for b in blocks if "schema" not in b and "targets:" in b and "pick:" in b)
    config = parse_config(example, "README.md")
    ribosome = next(t for t in config.targets if t.name == "ribosome")
    assert ribosome.pick.method.name == "watershed"
    assert ribosome.pick.method.min_distance == Length(80, "A")
    assert config.models[1].predict.window == 64 and config.models[1].predict.margin == 16
    assert config.output.table_formats == ["csv", "star", "copick"]
