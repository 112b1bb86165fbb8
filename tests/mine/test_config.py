"""The ``deepict mine run`` configuration: sections are the steps' options models, errors name line and key."""

from __future__ import annotations

import pytest

from deepict_dask.errors import ConfigError
from deepict_dask.mine import CentreOptions, ChooseKOptions, ClusterOptions, PatchOptions
from deepict_dask.mine.config import EXAMPLE, MineConfig, load_mine_config, parse_mine_config
from deepict_dask.train.patch_stack import StackTrainOptions


def test_example_validates_with_the_steps_own_models():
    cfg = parse_mine_config(EXAMPLE)
    assert isinstance(cfg.centres, CentreOptions) and isinstance(cfg.patches, PatchOptions)
    assert isinstance(cfg.train, StackTrainOptions) and isinstance(cfg.cluster, ClusterOptions)
    assert cfg.centres == CentreOptions(method="dog", sigma=2.0, dog_sigma=5.0, dog_k=1.1, min_distance=10.0,
                                        polarity="dark", stride=16)
    assert cfg.cluster == ClusterOptions(k=100, seed=0) and cfg.choose_k is None  # commented out in the example
    assert cfg.train.patience == 20 and cfg.train.batch_size == 8


def test_minimal_config_takes_every_default_and_resolves_paths(tmp_path):
    path = tmp_path / "cfg" / "mine.yaml"
    path.parent.mkdir()
    path.write_text(f"tomograms: [a.mrc, {tmp_path / 'b.mrc'}]\nout: ../m\nchoose_k: {{ks: [3, 5]}}\n")
    cfg = load_mine_config(path)
    assert cfg.tomograms == [str(path.parent / "a.mrc"), str(tmp_path / "b.mrc")]
    assert cfg.out == str(path.parent / ".." / "m")
    assert cfg.patches == PatchOptions() and cfg.choose_k == ChooseKOptions(ks=(3, 5))


@pytest.mark.parametrize(("text", "message"), [
    ("tomograms: [a.mrc]\nout: m\ncluster:\n  k: 1\n", "line 4, cluster.k: Input should be greater than or equal to 2"),
    ("tomograms: [a.mrc]\nout: m\npatches:\n  patch_size: [8, 8, 8]\n", "line 4, patches.patch_size: unknown key"),
    ("tomograms: [a.mrc]\nout: m\npatches: {patch_shape: [2, 8, 8]}\n",
     "line 3, patches.patch_shape: patch edges must be >= 4 voxels, got [2, 8, 8]"),
    ("tomograms: [a.mrc, a.mrc]\nout: m\n", "line 1, tomograms: listed twice: a.mrc"),
    ("out: m\n", "tomograms: required key missing"),
    ("tomograms: [a.mrc]\nout: m\ncentres: {method: blob}\n", "line 3, centres.method: Input should be 'dog' or 'grid'"),
    ("tomograms: [a.mrc\nout: m\n", "not valid YAML"),
    ("- a.mrc\n", "the configuration must be a mapping"),
    ("tomograms: !!python/object/apply:os.system [echo hi]\nout: m\n", "not valid YAML"),
    ("tomograms: [a.mrc]\nout: m\ntrain: null\n", "train: null skips the autoencoder, but encode.codes autoencoder needs it"),
])
def test_bad_configs_are_one_error_naming_line_and_key(text, message):
    with pytest.raises(ConfigError) as exc:
        parse_mine_config(text, "mine.yaml")
    assert str(exc.value).startswith("mine.yaml: ") and message in str(exc.value)
    assert "\n" not in str(exc.value)


def test_train_null_skips_the_autoencoder_for_invariant_codes():
    cfg = parse_mine_config("tomograms: [a.mrc]\nout: m\ntrain: null\nencode: {codes: invariant}\n", "mine.yaml")
    assert cfg.train is None and cfg.encode.codes == "invariant"
    assert cfg.encode.invariant_lowpass == 0.0  # unfiltered patches by default; null: the stack as it is
    cfg = parse_mine_config("tomograms: [a.mrc]\nout: m\nencode: {codes: invariant, invariant_lowpass: null}\n", "m.yaml")
    assert cfg.encode.invariant_lowpass is None
    assert parse_mine_config("tomograms: [a.mrc]\nout: m\n", "mine.yaml").train is not None


def test_missing_file_is_one_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read configuration"):
        load_mine_config(tmp_path / "none.yaml")
    assert MineConfig(tomograms=["a"], out="m").gallery.columns == 8
