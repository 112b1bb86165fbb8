"""Normalization, radial spectra (exact and Welch) and spectrum TSV files."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from deepict_dask.errors import InputError
from deepict_dask.io.volume import make_volume
from deepict_dask.preprocess import (
    default_target,
    normalize,
    radial_spectrum,
    read_spectrum,
    write_spectrum,
)


def _vol(data, voxel=10.0, chunks=32, source="mem.mrc"):
    return make_volume(np.asarray(data, dtype=np.float32), voxel, chunks=chunks, attrs={"source": source})


def test_normalize_is_lazy_and_standardizes():
    rng = np.random.default_rng(0)
    v = _vol(5 + 3 * rng.standard_normal((32, 40, 48)))
    out = normalize(v)
    assert isinstance(out.data, da.Array)
    x = out.values
    assert abs(x.mean()) < 1e-5 and abs(x.std() - 1) < 1e-4
    assert out.attrs["normalization"]["mean"] == pytest.approx(5, abs=0.05)
    assert out.attrs["voxel_size"] == (10.0, 10.0, 10.0)


def test_normalize_rejects_constant_and_nan():
    with pytest.raises(InputError, match="constant") as exc:
        normalize(_vol(np.full((16, 16, 16), 3.0), source="flat.mrc"))
    assert "flat.mrc" in str(exc.value)
    x = np.random.default_rng(1).standard_normal((16, 16, 16))
    x[3, 4, 5] = np.nan
    with pytest.raises(InputError, match="NaN") as exc:
        normalize(_vol(x, source="holes.mrc"))
    assert "holes.mrc" in str(exc.value)
    with pytest.raises(InputError, match="3D"):
        normalize(make_volume(np.zeros((2, 8, 8, 8)), 1.0))


@pytest.mark.parametrize("method", ["exact", "welch"])
def test_white_noise_spectrum_is_flat_at_its_std(method):
    x = 2.0 * np.random.default_rng(2).standard_normal((64, 64, 64))
    spec = radial_spectrum(_vol(x), method=method, window=32)
    assert list(spec.columns) == ["freq_inv_A", "freq_nyquist", "amplitude"]
    band = spec[(spec.freq_nyquist > 0.1) & (spec.freq_nyquist <= 1.0)]
    assert np.allclose(band.amplitude, 2.0, rtol=0.1)
    assert spec.freq_nyquist.iloc[-1] == pytest.approx(1.0)
    assert spec.freq_inv_A.iloc[-1] == pytest.approx(1 / 20)


def test_plane_wave_peaks_at_its_physical_frequency_with_anisotropic_voxels():
    # 8 cycles along y over 64 voxels of 5 A = 8 / 320 1/A; z voxels are coarser (10 A).
    y = np.arange(64) * 5.0
    wave = np.cos(2 * np.pi * y / 40.0)[None, :, None] * np.ones((32, 64, 48))
    spec = radial_spectrum(_vol(wave, voxel=(10.0, 5.0, 5.0)), method="exact")
    peak = spec.freq_inv_A[spec.amplitude.idxmax()]
    assert peak == pytest.approx(1 / 40.0, abs=spec.freq_inv_A.diff().iloc[-1] / 2)
    assert spec.freq_inv_A.iloc[-1] == pytest.approx(1 / 20)  # Nyquist of the coarsest axis


def test_welch_agrees_with_exact_on_a_smooth_volume():
    x = ndimage.gaussian_filter(np.random.default_rng(3).standard_normal((96, 96, 96)), 1.5)
    v = normalize(_vol(x, chunks=48))
    ex = radial_spectrum(v, method="exact")
    we = radial_spectrum(v, method="welch", window=48)
    assert we.attrs["n_windows"] == 27
    mid = we[(we.freq_nyquist >= 0.1) & (we.freq_nyquist <= 0.4)]
    ref = np.interp(mid.freq_inv_A, ex.freq_inv_A, ex.amplitude)
    assert np.allclose(mid.amplitude, ref, rtol=0.15)


def test_spectrum_tsv_round_trip(tmp_path):
    spec = radial_spectrum(_vol(np.random.default_rng(4).standard_normal((32, 32, 32))), method="exact")
    path = write_spectrum(spec, tmp_path / "t.tsv")
    back = read_spectrum(path)
    assert np.allclose(back.to_numpy(), spec.to_numpy(), rtol=1e-6)
    assert back.attrs["source"] == str(path) and back.attrs["method"] == "exact"


@pytest.mark.parametrize(
    "content, problem",
    [
        ("freq\tvalue\n0\t1\n1\t2\n2\t3\n", "missing column"),
        ("freq_inv_A\tamplitude\n0\t1\n0.1\tabc\n0.2\t3\n", "non-numeric"),
        ("freq_inv_A\tamplitude\n0\t1\n0.1\t2\n", "at least 3 rows"),
        ("freq_inv_A\tamplitude\n0\t1\n0.2\t2\n0.1\t3\n", "increasing"),
        ("", "not a spectrum"),
    ],
)
def test_bad_spectrum_files_are_named(tmp_path, content, problem):
    path = tmp_path / "bad.tsv"
    path.write_text(content)
    with pytest.raises(InputError, match=problem) as exc:
        read_spectrum(path)
    assert str(path) in str(exc.value)


def test_binary_or_missing_spectrum_file(tmp_path):
    path = tmp_path / "tomo.mrc"
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(InputError) as exc:
        read_spectrum(path)
    assert str(path) in str(exc.value)
    with pytest.raises(InputError, match="not found"):
        read_spectrum(tmp_path / "nope.tsv")


def test_default_target_is_shipped():
    t = default_target()
    assert isinstance(t, pd.DataFrame) and len(t) > 60
    assert t.freq_inv_A.iloc[-1] == pytest.approx(0.1)  # made at 5 A/voxel
    assert (t.amplitude[1:] > 0).all()


def test_auto_spectrum_transforms_at_once_only_within_one_window():
    """``auto`` picks the whole-volume FFT only for volumes no larger than one Welch window, whatever
    the memory: its memory is bounded by the window, never by the volume."""
    x = np.random.default_rng(7).standard_normal((40, 40, 40))
    assert radial_spectrum(_vol(x), window=32).attrs["method"] == "welch"
    assert radial_spectrum(_vol(x[:32, :32, :32]), window=32).attrs["method"] == "exact"


def test_stored_welch_matches_chunked_welch(tmp_path):
    """Welch on a stored volume (each task reads its block and half-window look-ahead from the file,
    z-scored) equals Welch on the normalized chunked volume, window for window."""
    import zarr

    rng = np.random.default_rng(8)
    raw = (ndimage.gaussian_filter(rng.standard_normal((50, 40, 36)), 1.0) * 40 + 7).astype(np.float32)
    z = zarr.open_array(str(tmp_path / "t.zarr"), mode="w", shape=raw.shape, chunks=(16, 16, 16), dtype=raw.dtype)
    z[:] = raw
    vol = make_volume(raw, 10.0, chunks=16)
    norm = normalize(vol)
    stats = (norm.attrs["normalization"]["mean"], norm.attrs["normalization"]["std"])
    want = radial_spectrum(norm, method="welch", window=16)
    got = radial_spectrum(make_volume(da.from_zarr(z), 10.0), method="welch", window=16, normalization=stats)
    windows = np.prod([(n - 16) // 8 + 1 for n in raw.shape])
    assert got.attrs["n_windows"] == want.attrs["n_windows"] == windows
    np.testing.assert_allclose(got["amplitude"], want["amplitude"], rtol=1e-5)
