"""ConvertOptions and convert(): one rule for the chunk edge in the CLI and the API; the API writes what it says."""

from __future__ import annotations

import mrcfile
import numpy as np
import pytest
import zarr
from pydantic import ValidationError

from deepict_dask.cli.main import main
from deepict_dask.errors import ConfigError, OutputError
from deepict_dask.io import open_volume
from deepict_dask.io.convert import ConvertOptions, convert
from deepict_dask.options import build


def _mrc(path, shape=(12, 20, 16)):
    data = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    with mrcfile.new(path, overwrite=True) as m:
        m.set_data(data)
        m.voxel_size = 10.0
    return path, data


@pytest.mark.parametrize(("value", "flag_value"), [(0, "0"), ([8, 8], "8,8"), ("x", "x")])
def test_bad_chunks_same_message_in_cli_and_api(tmp_path, capsys, value, flag_value):
    message = f"takes one positive integer or three (z,y,x), got {flag_value!r}" if isinstance(value, str) else None
    with pytest.raises(ValidationError):
        ConvertOptions(chunks=value)
    with pytest.raises(ConfigError) as exc:
        build(ConvertOptions, {"chunks": value})
    api = str(exc.value)
    assert api.startswith("chunks: takes one positive integer or three (z,y,x), got ")
    if message:
        assert api == f"chunks: {message}"
    src, _ = _mrc(tmp_path / "t.mrc")
    assert main(["convert", str(src), "--out", str(tmp_path / "o"), "--chunks", flag_value]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("deepict convert: error: --chunks (chunks): takes one positive integer or three (z,y,x), "
                   f"got {flag_value!r}")
    assert not (tmp_path / "o").exists()


def test_convert_api_writes_the_options(tmp_path):
    src, data = _mrc(tmp_path / "t.mrc")
    out = convert(src, tmp_path / "t.ome.zarr", ConvertOptions(chunks="4,8,8", levels=2, ngff="0.5", voxel_size=7.5))
    root = zarr.open_group(str(out), mode="r")
    assert root["0"].chunks == (4, 8, 8) and sorted(root.array_keys()) == ["0", "1"]
    assert root.metadata.zarr_format == 3  # NGFF 0.5
    vol = open_volume(out)
    np.testing.assert_array_equal(vol.values, data)
    assert tuple(float(v) for v in vol.attrs["voxel_size"]) == (7.5, 7.5, 7.5)
    with pytest.raises(OutputError, match="already exists"):
        convert(src, out, ConvertOptions())
    mrc = convert(out, tmp_path / "back.mrc", ConvertOptions(format="mrc"))
    np.testing.assert_array_equal(open_volume(mrc).values, data)
