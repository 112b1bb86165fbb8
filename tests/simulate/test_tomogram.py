"""Simulator: truth consistent with masks, determinism, imaging physics, bad input, CLI layout."""

from __future__ import annotations

import json

import mrcfile
import numpy as np
import pandas as pd
import pytest

from deepict_dask.cli.main import main
from deepict_dask.errors import DeepictError
from deepict_dask.simulate import (
    CLASS_IDS,
    ImagingParams,
    ctf_zeros,
    output_paths,
    simulate_tomogram,
    write_preview,
    write_simulation,
)
from deepict_dask.simulate.imaging import filter_volume, wedge_mask

SMALL = (64, 128, 128)


@pytest.fixture(scope="module")
def sim():
    # 20 A voxels: a small array that still spans an organelle (2.5 um field of view)
    return simulate_tomogram(SMALL, 20.0, seed=3, preset="cell", microtubule_density=20.0, actin_density=40.0)


def test_truth_table_matches_masks(sim):
    t = sim.table
    assert len(t) > 10 and set(t["class"]) <= set(CLASS_IDS)
    idx = np.rint(t[["z", "y", "x"]].to_numpy()).astype(int)
    # every centre lies inside its own class label and its own instance
    assert np.all(sim.labels[tuple(idx.T)] == t["class"].map(CLASS_IDS).to_numpy())
    assert np.all(sim.instance[tuple(idx.T)] == t["instance"].to_numpy())
    # one instance per row, no instance painted over another (no overlaps), class per instance unique
    ids = np.unique(sim.instance[sim.instance > 0])
    assert set(ids) == set(t["instance"])
    lab = pd.DataFrame({"i": sim.instance[sim.instance > 0], "c": sim.labels[sim.instance > 0]})
    assert lab.groupby("i")["c"].nunique().max() == 1
    # Angstrom and voxel columns agree
    np.testing.assert_allclose(t["x_A"], t["x"] * sim.voxel_size)
    for col in ("phi", "theta", "psi", "membrane_bound"):
        assert col in t


def test_cell_content(sim):
    assert sim.membrane.any() and set(np.unique(sim.compartments)) >= {0, 1, 2}
    # membrane-bound particles sit next to a membrane, free ones do not touch one
    bound = sim.table[sim.table["membrane_bound"]]
    assert len(bound)
    mem = np.argwhere(sim.membrane > 0)
    for _, row in bound.iterrows():
        d = np.min(np.linalg.norm(mem - row[["z", "y", "x"]].to_numpy(float), axis=1)) * sim.voxel_size
        assert d < 250, d
    assert not np.any((sim.membrane > 0) & (sim.labels > 0))
    assert len(sim.filaments) and set(sim.filaments["class"]) <= {"microtubule", "actin"}
    fz = np.rint(sim.filaments[["z", "y", "x"]].to_numpy()).astype(int)
    assert np.mean(np.isin(sim.labels[tuple(fz.T)], [CLASS_IDS["microtubule"], CLASS_IDS["actin"]])) > 0.95
    assert sim.tomogram.dtype == np.float32 and sim.tomogram.shape == SMALL
    assert abs(float(sim.tomogram.std()) - 1) < 0.3


def test_protein_is_dark():
    s = simulate_tomogram((48, 96, 96), 13.48, seed=1, preset="particles", ctf=False, snr=100.0,
                          counts={"ribosome": 3}, classes=("ribosome",))
    inside = s.tomogram[s.labels == CLASS_IDS["ribosome"]].mean()
    assert inside < s.tomogram[s.compartments == 1].mean() - 0.3


def test_deterministic_and_seeds_differ():
    a = simulate_tomogram((32, 64, 64), 13.48, seed=5, preset="particles")
    b = simulate_tomogram((32, 64, 64), 13.48, seed=5, preset="particles")
    c = simulate_tomogram((32, 64, 64), 13.48, seed=6, preset="particles")
    np.testing.assert_array_equal(a.tomogram, b.tomogram)
    pd.testing.assert_frame_equal(a.table, b.table)
    assert not np.array_equal(a.tomogram, c.tomogram)


def test_ctf_zeros_in_radial_spectrum():
    # White-ish density, no wedge, no noise: the spectrum's minima sit at the predicted zeros.
    p = ImagingParams(defocus_um=3.0, bfactor=0.0, missing_wedge=False, amplitude_contrast=0.07)
    vs, n = 4.0, 96
    rng = np.random.default_rng(0)
    dens = rng.normal(size=(n, n, n)).astype(np.float32)
    out, _, _ = filter_volume(dens, None, None, vs, p, 10.0)
    f = np.abs(np.fft.fftn(out)) ** 2
    k = np.sqrt(sum(g**2 for g in np.meshgrid(*[np.fft.fftfreq(n, vs)] * 3, indexing="ij")))
    edges = np.linspace(0, 0.5 / vs, 97)
    which = np.digitize(k.ravel(), edges)
    prof = np.bincount(which, f.ravel(), minlength=98)[1:97] / np.maximum(np.bincount(which, minlength=98)[1:97], 1)
    centres = 0.5 * (edges[1:] + edges[:-1])
    zeros = ctf_zeros(p, 0.45 / vs)
    assert len(zeros) >= 3
    lam_df = 0.0196876 * 3e4
    np.testing.assert_allclose(zeros[:2], np.sqrt(np.arange(1, 3) / lam_df), rtol=0.03)
    for z in zeros[:4]:
        i = int(np.argmin(np.abs(centres - z)))
        lobe = np.max(prof[max(i - 6, 0): i + 7])
        assert prof[i] < 0.1 * lobe, (z, prof[i], lobe)


def test_missing_wedge_is_empty():
    p = ImagingParams(ctf=False, tilt_min=-60, tilt_max=60, snr=0.5)
    s = simulate_tomogram((64, 64, 64), 13.48, seed=2, preset="particles", ctf=False, tilt_min=-60, tilt_max=60)
    f = np.abs(np.fft.rfftn(s.tomogram))
    m = wedge_mask((64, 64, 64), 13.48, p)
    # the wedge (|kz| > tan(60) |kx|) holds nothing; the measured region holds everything
    assert (~m).sum() > 0.1 * m.size
    assert f[~m].max() < 1e-3 * f[m].max()
    kz, kx = np.fft.fftfreq(64)[:, None, None], np.fft.rfftfreq(64)[None, None, :]
    assert not m[np.broadcast_to((np.abs(kz) > 2 * kx) & (np.abs(kz) > 0.1), m.shape)].any()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(voxel_size=0), "voxel size"),
        (dict(voxel_size=-3), "voxel size"),
        (dict(snr=0), "snr"),
        (dict(snr=-1), "snr"),
        (dict(preset="nucleus"), "unknown preset"),
        (dict(imaging="cryo-em"), "unknown imaging"),
        (dict(classes=("ribosome", "spliceosome")), "spliceosome"),
        (dict(counts={"nope": 3}), "nope"),
        (dict(wiggles=3), "unknown simulation option"),
        (dict(shape=(4, 64, 64)), "too small"),
    ],
)
def test_bad_input(kwargs, match):
    args = dict(shape=(32, 64, 64), voxel_size=13.48)
    args.update(kwargs)
    with pytest.raises(DeepictError, match=match):
        simulate_tomogram(**args)


def test_too_many_particles_says_how_many_fit():
    with pytest.raises(DeepictError, match=r"cannot hold 500 ribosome.*only \d+ fit"):
        simulate_tomogram((32, 64, 64), 13.48, preset="particles", classes=("ribosome",), counts={"ribosome": 500})


def test_write_layout_and_preview(sim, tmp_path):
    paths = write_simulation(sim, tmp_path, "t1")
    assert paths == output_paths(tmp_path, "t1")
    for p in paths.values():
        assert p.exists(), p
    with mrcfile.open(paths["tomogram"], permissive=True) as m:
        assert m.data.shape == SMALL and abs(float(m.voxel_size.x) - sim.voxel_size) < 1e-3
    with mrcfile.open(paths["labels"]) as m:
        np.testing.assert_array_equal(m.data, sim.labels)
    meta = json.loads(paths["meta"].read_text())
    assert meta["class_ids"] == CLASS_IDS and meta["n_particles"] == len(sim.table)
    t = pd.read_csv(paths["table"])
    assert list(t.columns[:8]) == ["tomo", "class", "x", "y", "z", "x_A", "y_A", "z_A"]
    png = write_preview(sim, tmp_path / "p.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_writes_layout_and_nothing_on_error(tmp_path):
    out = tmp_path / "o"
    rc = main(["simulate", "--out", str(out), "--n", "2", "--shape", "32", "64", "64", "--preset", "particles",
               "--seed", "7", "--preview"])
    assert rc == 0
    for name in ("sim_0007", "sim_0008"):
        for p in output_paths(out, name).values():
            assert p.exists()
        assert (out / "previews" / f"{name}.png").exists()
    both = pd.read_csv(out / "particles.csv")
    assert set(both["tomo"]) == {"sim_0007", "sim_0008"}
    a = mrcfile.read(out / "tomograms" / "sim_0007.mrc")
    b = mrcfile.read(out / "tomograms" / "sim_0008.mrc")
    assert not np.array_equal(a, b)
    bad = tmp_path / "bad"
    for argv in (["--voxel-size", "0"], ["--snr", "-1"], ["--preset", "x"], ["--classes", "ribosome", "foo"],
                 ["--count", "ribosome=900", "--classes", "ribosome"]):
        rc = main(["simulate", "--out", str(bad), "--shape", "32", "64", "64", "--preset", "particles", *argv]
                  if "--preset" not in argv else ["simulate", "--out", str(bad), "--shape", "32", "64", "64", *argv])
        assert rc == 2
        assert not bad.exists() or not any(bad.rglob("*"))


def test_blockwise_matches_truth_and_is_close_to_whole():
    kw = dict(shape=(48, 80, 80), voxel_size=13.48, seed=4, preset="particles", snr=1e6)
    whole = simulate_tomogram(**kw)
    lazy = simulate_tomogram(**kw, blockwise=True, chunks=(48, 40, 40), halo=16)
    assert lazy.is_lazy
    import dask

    labels, instance, comp, t = dask.compute(lazy.labels, lazy.instance, lazy.compartments, lazy.tomogram)
    np.testing.assert_array_equal(labels, whole.labels)
    np.testing.assert_array_equal(instance, whole.instance)
    np.testing.assert_array_equal(comp, whole.compartments)
    inner = (slice(8, -8),) * 3
    r = np.corrcoef(t[inner].ravel(), whole.tomogram[inner].ravel())[0, 1]
    assert r > 0.9, r
