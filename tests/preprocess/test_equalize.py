"""Equalization filter: exact vs blockwise, spectrum matching, target resampling, bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from deepict_dask.errors import InputError
from deepict_dask.io.volume import make_volume
from deepict_dask.preprocess import (
    apply_filter,
    choose_mode,
    default_target,
    equalization_filter,
    exact_equalize,
    lowpass,
    normalize,
    radial_spectrum,
    write_spectrum,
)


def _tomo(shape=(48, 64, 56), voxel=10.0, seed=0, chunks=24):
    """Blurred noise plus white noise: a spectrum that falls, then flattens (like a tomogram's)."""
    rng = np.random.default_rng(seed)
    x = ndimage.gaussian_filter(rng.standard_normal(shape), 1.5) * 8 + rng.standard_normal(shape)
    return make_volume(x.astype(np.float32), voxel, chunks=chunks, attrs={"source": f"tomo{seed}.mrc"})


def _smooth_target(nyquist=0.05):
    """A smooth target (no shell-to-shell noise, gentle low-frequency boost): a compact kernel."""
    f = np.linspace(0, nyquist, 65)
    amp = 0.5 + 3.0 * np.exp(-((f / 0.012) ** 2))
    return pd.DataFrame({"freq_inv_A": f, "freq_nyquist": f / nyquist, "amplitude": amp})


def _rel_rms(a, b):
    return float(np.sqrt(np.mean((a - b) ** 2) / np.mean(b**2)))


def test_blockwise_equals_exact_away_from_border():
    vol = _tomo()
    # A smooth filter: the gain from a Welch spectrum (no shell-to-shell noise), same for both modes.
    spec = radial_spectrum(normalize(vol), method="welch", window=24)
    target = _smooth_target()
    exact = apply_filter(vol, target=target, mode="exact", input_spectrum=spec)
    block = apply_filter(vol, target=target, mode="blockwise", block_size=24, input_spectrum=spec, halo_energy=0.9999)
    info = block.attrs["equalization"]
    assert exact.attrs["equalization"]["mode"] == "exact" and info["mode"] == "blockwise"
    halo = info["halo"]
    assert 0 < halo < 24 and info["halo_energy_fraction"] >= 0.9999
    e, b = exact.values, block.values
    # "Away from the border": voxels at least `halo` voxels from every face of the volume.
    inner = (slice(halo, -halo),) * 3
    assert _rel_rms(b[inner], e[inner]) < 0.01
    # Both use periodic boundaries, so the border agrees too (looser: the kernel tail wraps there).
    assert _rel_rms(b, e) < 0.02


def test_output_spectrum_follows_target_in_pass_band():
    vol = _tomo(shape=(64, 64, 64), seed=1, chunks=32)
    target = default_target()
    out = apply_filter(vol, target=target, mode="exact", lowpass_cutoff=0.5, lowpass_width=0.05)
    spec = radial_spectrum(out, method="exact")
    f = spec.freq_inv_A.to_numpy()
    tgt = np.interp(f, target.freq_inv_A[1:], target.amplitude[1:])
    lp = lowpass(spec.freq_nyquist.to_numpy(), 0.5, 0.05)
    ratio = spec.amplitude.to_numpy() / tgt
    assert spec.freq_nyquist.iloc[-1] == pytest.approx(1.0)
    pass_band = (f > 0) & (lp >= 0.99)  # up to 0.27 Nyquist for these settings
    assert pass_band.sum() >= 8
    assert np.all(np.abs(ratio[pass_band] - 1) < 0.10)
    # Through the transition band the output follows target x low-pass.
    slope = (f > 0) & (lp >= 0.05)
    assert np.all(np.abs(ratio[slope] / lp[slope] - 1) < 0.10)
    # Far above the cutoff, little is left.
    assert np.all(ratio[spec.freq_nyquist.to_numpy() > 0.9] < 0.01)


def test_blockwise_with_welch_spectrum_also_matches_target():
    vol = _tomo(shape=(64, 64, 64), seed=2, chunks=32)
    target = default_target()
    out = apply_filter(vol, target=target, mode="blockwise", spectrum_method="welch", block_size=32)
    assert out.attrs["equalization"]["input_spectrum_method"] == "welch"
    spec = radial_spectrum(out, method="welch", window=32)
    f = spec.freq_inv_A.to_numpy()
    band = (spec.freq_nyquist > 0.1) & (spec.freq_nyquist < 0.25)
    tgt = np.interp(f, target.freq_inv_A[1:], target.amplitude[1:])
    assert np.allclose(spec.amplitude[band], tgt[band], rtol=0.2)


def test_torch_backend_matches_scipy():
    x = normalize(_tomo(shape=(32, 40, 36))).values
    target = default_target()
    a = exact_equalize(x, (10.0, 10.0, 10.0), target, backend="scipy")
    b = exact_equalize(x, (10.0, 10.0, 10.0), target, backend="torch-cpu")
    assert _rel_rms(b, a) < 1e-4


def test_target_is_resampled_and_zero_padded_above_its_nyquist():
    f_in = np.arange(33) / 32 * 0.05  # input at 10 A: Nyquist 0.05 1/A
    flat = pd.DataFrame({"freq_inv_A": f_in, "freq_nyquist": f_in / 0.05, "amplitude": np.ones(33)})
    # Target sampled at other frequencies and ending at 0.04 1/A (Nyquist of 12.5 A voxels).
    f_t = np.linspace(0, 0.04, 11)
    target = pd.DataFrame({"freq_inv_A": f_t, "freq_nyquist": f_t / 0.04, "amplitude": 1 + 100 * f_t})
    filt = equalization_filter(flat, target, voxel_size=10.0, lowpass_cutoff=0.79, lowpass_width=0.1)
    f = np.array([0.01, 0.03, 0.045])
    g = np.interp(f, filt.freqs, filt.gain)
    lp = lowpass(f / 0.05, 0.79, 0.1)
    assert g[0] == pytest.approx(2.0 * lp[0], rel=5e-3) and g[1] == pytest.approx(4.0 * lp[1], rel=5e-3)
    assert lp[2] > 0.2 and g[2] == 0.0  # above the target's Nyquist: zero-padded


def test_voxel_size_mismatch_beyond_resampling_names_target(tmp_path):
    f = np.linspace(0, 1 / 40, 20)  # target from 20 A voxels
    path = write_spectrum(pd.DataFrame({"freq_inv_A": f, "freq_nyquist": f * 40, "amplitude": np.ones(20)}),
                          tmp_path / "coarse.tsv")
    vol = _tomo(shape=(32, 32, 32), voxel=4.0)  # pass band reaches 0.0625 1/A
    with pytest.raises(InputError, match="voxel sizes differ too much") as exc:
        apply_filter(vol, target=path)
    assert "coarse.tsv" in str(exc.value)


def test_bad_volumes_raise_input_error_naming_source():
    const = make_volume(np.ones((16, 16, 16), np.float32), 10.0, attrs={"source": "const.mrc"})
    with pytest.raises(InputError, match="const.mrc"):
        apply_filter(const, mode="exact")
    x = np.random.default_rng(5).standard_normal((16, 16, 16)).astype(np.float32)
    x[0, 0, 0] = np.nan
    with pytest.raises(InputError, match="nan.mrc"):
        apply_filter(make_volume(x, 10.0, attrs={"source": "nan.mrc"}), mode="blockwise")


def test_auto_mode_uses_worker_memory():
    shape = (64, 64, 64)
    assert choose_mode(shape, "auto", memory_limit=10**12) == "exact"
    assert choose_mode(shape, "auto", memory_limit=10**6) == "blockwise"
    assert choose_mode(shape, "blockwise", memory_limit=10**12) == "blockwise"
    vol = _tomo(shape=(32, 32, 32), chunks=16)
    out = apply_filter(vol, mode="auto", memory_limit=10**5, block_size=16)
    assert out.attrs["equalization"]["mode"] == "blockwise"


def test_sharper_lowpass_needs_larger_halo():
    vol = normalize(_tomo(shape=(48, 48, 48), chunks=48))
    spec = radial_spectrum(vol, method="welch", window=24)
    target = _smooth_target()
    soft = equalization_filter(spec, target, voxel_size=10.0, lowpass_width=0.1)
    sharp = equalization_filter(spec, target, voxel_size=10.0, lowpass_width=0.02)
    assert soft.choose_halo(0.9999, 24)[0] < sharp.choose_halo(0.9999, 24)[0]



def _ancestors(deps: dict, key) -> set:
    seen, todo = set(), [key]
    while todo:
        for d in deps[todo.pop()]:
            if d not in seen:
                seen.add(d)
                todo.append(d)
    return seen


def test_stored_blockwise_reads_its_own_region_and_matches_chunked(tmp_path):
    """Each block of a stored tomogram reads its region + periodic halo from the file: a block task
    depends on nothing but the kernel (with shared chunk pieces, Dask keeps them for later readers and
    memory grows with the volume), and the result equals the map_overlap path on the same data."""
    import dask.array as da
    import zarr
    from dask.core import flatten

    from deepict_dask.io import open_volume
    from deepict_dask.io.mrc import write_mrc

    raw = (_tomo(shape=(40, 44, 36), chunks=40).values * 30 + 200).astype(np.int16)
    write_mrc(make_volume(raw, 10.0), tmp_path / "t.mrc")
    z = zarr.open_array(str(tmp_path / "t.zarr"), mode="w", shape=raw.shape, chunks=(16, 12, 20), dtype=raw.dtype)
    z[:] = raw
    spec = radial_spectrum(normalize(make_volume(raw, 10.0)), method="welch", window=16)
    opts = dict(mode="blockwise", input_spectrum=spec, target=_smooth_target(), halo=5, block_size=16)
    chunked = apply_filter(make_volume(raw, 10.0, chunks=(16, 12, 20)), **opts)
    deps = chunked.data.__dask_graph__().get_all_dependencies()
    assert max(len(_ancestors(deps, k)) for k in flatten(chunked.data.__dask_keys__())) > 1
    for data in (open_volume(tmp_path / "t.mrc", chunks=(16, 12, 20)).data, da.from_zarr(z)):
        out = apply_filter(make_volume(data, 10.0), **opts)
        deps = out.data.__dask_graph__().get_all_dependencies()
        assert all(len(_ancestors(deps, k)) <= 1 for k in flatten(out.data.__dask_keys__()))
        np.testing.assert_allclose(out.values, chunked.values, rtol=1e-5, atol=1e-5)


def test_blockwise_measures_the_spectrum_with_welch_by_default():
    """Blockwise mode never transforms the whole volume for its spectrum unless told to (memory)."""
    vol = _tomo(shape=(40, 40, 40), chunks=20)
    out = apply_filter(vol, target=_smooth_target(), mode="blockwise", block_size=20)
    assert out.attrs["equalization"]["input_spectrum_method"] == "welch"
    exact = apply_filter(vol, target=_smooth_target(), mode="blockwise", block_size=20, spectrum_method="exact")
    assert exact.attrs["equalization"]["input_spectrum_method"] == "exact"
