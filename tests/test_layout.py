"""RunLayout / TomoStore: every run-directory path and store group name comes from one place."""

from __future__ import annotations

from pathlib import Path

from deepict_dask.layout import RUN_RECORD, RunLayout, TomoStore, is_temporary, store_path


def test_run_layout_paths(tmp_path):
    lay = RunLayout(tmp_path)
    assert lay.manifest_file("TS_01") == tmp_path / "manifest" / "TS_01.json"
    assert lay.manifest_file(RUN_RECORD) == tmp_path / "manifest" / ".run.json"
    assert lay.inventory_dir("TS_01") == tmp_path / "manifest" / "TS_01.files"
    assert lay.lock == tmp_path / ".deepict-run.lock"
    assert lay.store("TS_01").path == tmp_path / "tomograms" / "TS_01.ome.zarr"
    assert lay.target_table("TS_01", "ribosome") == tmp_path / "tables" / "TS_01" / "ribosome.csv"
    assert lay.tomo_particles("TS_01", "star") == tmp_path / "tables" / "TS_01" / "TS_01_particles.star"
    assert lay.particles("csv") == tmp_path / "particles.csv"
    assert (lay.summary, lay.provenance, lay.evaluation, lay.report) == (
        tmp_path / "summary.csv", tmp_path / "provenance.json", tmp_path / "evaluation.json", tmp_path / "report.html")
    assert store_path("out", "a") == Path("out") / "a.ome.zarr"


def test_tomo_store_groups_and_contents(tmp_path):
    store = TomoStore(tmp_path / "t.ome.zarr")
    assert TomoStore.prediction_group("demo3d") == "predictions/demo3d"
    assert TomoStore.label_group("cytosol") == "labels/cytosol"
    assert store.filtered == store.path / "filtered" and store.group(None) == store.path
    assert TomoStore.of_group(f"{store.path}/predictions/demo3d") == str(store.path)
    assert store.models() == []
    for d in ("predictions/b", "predictions/a", "predictions/.a.tmp-1", "labels/cytosol"):
        (store.path / d).mkdir(parents=True)
    assert store.models() == ["a", "b"]
    assert store.sub_images() == [("predictions", "predictions/a"), ("predictions", "predictions/b"),
                                  ("labels", "labels/cytosol")]


def test_run_dir_markers_and_temporaries(tmp_path):
    lay = RunLayout(tmp_path)
    assert not lay.is_run_dir()
    lay.provenance.write_text("{}")
    assert lay.is_run_dir()
    dirs = lay.temporary_dirs(["a"])
    assert lay.store("a").path / "labels" in dirs and lay.tomo_tables("a") in dirs
    assert is_temporary(".x.zarr.tmp-1a2b") and is_temporary(".y.old-3") and not is_temporary("x.tmp-1")
