"""``deepict spectrum`` and ``deepict filter`` end to end (in-process, small volumes)."""

from __future__ import annotations

import numpy as np
import zarr
from scipy import ndimage

from deepict_dask.cli.main import main
from deepict_dask.io import open_volume
from deepict_dask.preprocess import read_spectrum
from tests.helpers import mrc_file

CLUSTER = ["--workers", "1", "--threads-per-worker", "2"]


def _tomo(seed=0, shape=(40, 48, 48)):
    rng = np.random.default_rng(seed)
    return (ndimage.gaussian_filter(rng.standard_normal(shape), 1.5) * 8 + rng.standard_normal(shape) + 100).astype(np.float32)


def test_spectrum_then_filter_with_plot(tmp_path, capsys):
    ref = str(mrc_file(tmp_path / "ref.mrc", _tomo(0)))
    tomo = str(mrc_file(tmp_path / "tomo.mrc", _tomo(1)))
    tsv = tmp_path / "target.tsv"
    assert main(["spectrum", ref, "-o", str(tsv), "--method", "exact", *CLUSTER]) == 0
    target = read_spectrum(tsv)
    assert target.attrs["method"] == "exact" and target.freq_inv_A.iloc[-1] > 0.049
    assert capsys.readouterr().err.count("Dask dashboard:") == 1
    # an existing spectrum is kept unless --overwrite says otherwise
    before = tsv.read_text()
    assert main(["spectrum", ref, "-o", str(tsv), "--method", "welch", *CLUSTER]) == 2
    assert capsys.readouterr().err.strip() == f"deepict spectrum: error: {tsv}: already exists (use --overwrite to replace it)"
    assert tsv.read_text() == before
    out = tmp_path / "out"
    code = main(["filter", tomo, "--target", str(tsv), "-o", str(out), "--mode", "exact", "--plot", "--no-progress",
                 *CLUSTER])
    assert code == 0, capsys.readouterr().err
    result = open_volume(out / "tomo.ome.zarr")
    assert result.attrs["voxel_size"] == (10.0, 10.0, 10.0) and result.shape == (40, 48, 48)
    info = zarr.open_group(str(out / "tomo.ome.zarr"), mode="r").attrs["deepict"]["equalization"]
    assert info["mode"] == "exact" and info["lowpass_cutoff"] == 0.5
    assert np.allclose(info["target_spectrum"]["amplitude"], target.amplitude)
    png = out / "tomo.spectrum.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_normalize_only_and_bad_inputs_are_skipped(tmp_path, capsys):
    good = str(mrc_file(tmp_path / "good.mrc", _tomo(2)))
    flat = str(mrc_file(tmp_path / "flat.mrc", np.full((16, 16, 16), 7.0, np.float32)))
    out = tmp_path / "out"
    code = main(["filter", good, flat, "--mode", "normalize", "--out", str(out), *CLUSTER])
    err = capsys.readouterr().err
    assert code == 2 and "flat.mrc" in err and "constant" in err
    x = open_volume(out / "good.ome.zarr").values
    assert abs(x.mean()) < 1e-4 and abs(x.std() - 1) < 1e-3
    assert not (out / "flat.ome.zarr").exists()
    # --normalize-only is the same; an existing output is refused without --overwrite.
    assert main(["filter", good, "--normalize-only", "--out", str(out), *CLUSTER]) == 2
    assert "already exists" in capsys.readouterr().err


def test_bad_target_file_is_named(tmp_path, capsys):
    tomo = str(mrc_file(tmp_path / "tomo.mrc", _tomo(3, (16, 16, 16))))
    bad = tmp_path / "target.tsv"
    bad.write_text("radius\tintensity\n0\t1\n1\t2\n2\t3\n")
    assert main(["filter", tomo, "--target", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "freq_inv_A" in err
    assert main(["filter", tomo, "--out", str(tmp_path / "o"), "--lowpass-cutoff", "0"]) == 2
