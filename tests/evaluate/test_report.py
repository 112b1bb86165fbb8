"""`deepict report`: HTML content from a small run directory, and rendering in headless Chromium."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from deepict_dask.cli.main import main
from deepict_dask.evaluate.files import write_json
from deepict_dask.evaluate.picking import evaluate_picks
from deepict_dask.evaluate.report import build_report, discover
from deepict_dask.evaluate.segmentation import probability_metrics
from deepict_dask.evaluate.sweep import sweep
from deepict_dask.io import write_ome_zarr
from deepict_dask.io.volume import make_volume

VOXEL = 10.0


def _table(zyx, tomo="tomo1", cls="ribo", **cols):
    zyx = np.asarray(zyx, float).reshape(-1, 3)
    df = pd.DataFrame({"tomo": tomo, "class": cls, "x": zyx[:, 2], "y": zyx[:, 1], "z": zyx[:, 0]})
    for a in "xyz":
        df[f"{a}_A"] = df[a] * VOXEL
    for k, v in cols.items():
        df[k] = v
    return df


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    rng = np.random.default_rng(0)
    shape = (32, 48, 48)
    zz, yy, xx = np.indices(shape)
    centres = [(16, 12, 12), (16, 24, 30), (14, 36, 16), (18, 10, 38)]
    prob = np.zeros(shape, np.float32)
    for c in centres[:3]:
        prob[(zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= 9] = 0.9
    prob[16, 40, 40] = 0.8
    image = rng.normal(size=shape).astype(np.float32) - 2 * prob
    store = root / "tomo1.ome.zarr"
    write_ome_zarr(make_volume(image, VOXEL), store, levels=2, chunks=16)
    write_ome_zarr(make_volume(prob, VOXEL), store, group="predictions/ribo", levels=2, chunks=16)
    write_ome_zarr(make_volume((prob > 0.5).astype(np.uint8), VOXEL), store, group="labels/ribo", levels=2, chunks=16, label=True)
    truth = _table(centres)
    (root / "truth").mkdir()
    truth.to_csv(root / "truth" / "particles.csv", index=False)
    picks = _table([*centres[:3], (16, 40, 40)], score=[0.9, 0.8, 0.7, 0.6])
    (root / "picks").mkdir()
    picks.to_csv(root / "picks" / "tomo1_ribo.csv", index=False)
    ev = evaluate_picks(picks, truth, 3.0)
    write_json(ev.metrics, root / "metrics_picks.json")
    vol = make_volume(prob, VOXEL)
    write_json(sweep({"tomo1": vol}, truth, 3.0, thresholds=[0.5, 0.85], min_sizes=[1, 20]), root / "sweep.json")
    write_json(probability_metrics(vol, make_volume((prob > 0.5).astype(np.uint8), VOXEL)), root / "metrics_masks.json")
    f = np.linspace(0.001, 0.05, 40)
    pd.DataFrame({"frequency_1/A": f, "input": 1 / (1 + 200 * f), "target": np.exp(-20 * f)}).to_csv(root / "spectrum.tsv", sep="\t", index=False)
    pd.DataFrame({"tomo": ["tomo1"], "particles": [4], "seconds": [1.5]}).to_csv(root / "summary.csv", index=False)
    (root / "run.yaml").write_text("inputs: ['*.mrc']  # <not html>\n")
    return root


@pytest.fixture(scope="module")
def report_html(run_dir, tmp_path_factory):
    return build_report(run_dir, tmp_path_factory.mktemp("out") / "r.html")


def test_discover_roles(run_dir):
    f = discover(run_dir)
    assert [p.name for p in f.truth] == ["particles.csv"]
    assert sorted(p.name for p in f.tables) == ["summary.csv", "tomo1_ribo.csv"]
    assert sorted(k for _, k, _ in f.metrics) == ["masks", "picks", "sweep"]
    assert [p.name for p in f.images] == ["tomo1.ome.zarr"] and len(f.spectra) == 1


def test_report_html_content(report_html):
    text = report_html.read_text()
    for heading in ("Picks metrics", "Masks metrics", "Sweep metrics", "Tomograms", "Spectra", "Tables", "Configuration"):
        assert heading in text
    imgs = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(imgs) >= 7
    assert all(base64.b64decode(i)[:8] == b"\x89PNG\r\n\x1a\n" for i in imgs)
    assert "&lt;not html&gt;" in text and "<not html>" not in text
    assert "not readable" not in text and "cannot show" not in text
    assert "<script" not in text and "http://" not in text.replace("http://www.w3.org", "")
    # the picks table: 3 TP, 1 FP, 1 FN
    assert re.search(r"<td>pooled</td>\s*<td>4</td>\s*<td>3</td>\s*<td>1</td>\s*<td>1</td>", text)


def test_cli_report_and_bad_dir(run_dir, tmp_path, capsys):
    out = tmp_path / "x.html"
    assert main(["report", str(run_dir), "--out", str(out), "--tolerance", "30", "--unit", "A", "--max-images", "0"]) == 0
    assert out.is_file()
    capsys.readouterr()
    before = out.read_bytes()
    assert main(["report", str(run_dir), "-o", str(out), "--max-images", "0"]) == 2  # one rule: --overwrite
    assert capsys.readouterr().err.strip() == f"deepict report: error: {out}: already exists (use --overwrite to replace it)"
    assert out.read_bytes() == before
    assert main(["report", str(run_dir), "-o", str(out), "--max-images", "0", "--overwrite"]) == 0
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "not a directory" in capsys.readouterr().err


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.mark.skipif(_chromium() is None, reason="no chromium/chrome binary found (CI installs Debian's chromium)")
def test_report_renders_in_headless_chromium(report_html, tmp_path):
    out = report_html
    shot = tmp_path / "shot.png"
    profile = tmp_path / "profile"
    base = [
        _chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
        f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
    ]
    dom = subprocess.run([*base, "--dump-dom", out.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "Picks metrics" in dom.stdout and dom.stdout.count("<img") >= 7
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not console, console
    res = subprocess.run([*base, f"--screenshot={shot}", "--window-size=1300,2400", out.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and shot.is_file() and shot.stat().st_size > 10_000
    from matplotlib.image import imread

    pixels = imread(shot)
    assert pixels.std() > 0.05  # a rendered page, not a blank one
