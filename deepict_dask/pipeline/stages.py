"""The stages of one tomogram's chain, each a thin call into the package's own APIs.

    convert -> preprocess -> predict:<model> ... -> pick:<target> ... -> tables

Everything of a tomogram lives in one OME-Zarr store ``RUN_DIR/tomograms/<name>.ome.zarr``: the
converted image (root, with pyramid), ``filtered`` (normalized / spectrum-equalized),
``predictions/<model>`` (probability maps) and ``labels/<target>`` (cluster labels or masks);
tables go to ``RUN_DIR/tables/<name>/``. Every output is written atomically by the I/O layer.

A stage's ``params`` are exactly the settings that change its output, so the engine's hash of them
decides what a changed config recomputes. Stage functions run on workers; their returned
``result`` is small (counts, shapes) and lands in the manifest.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from deepict_dask.io.checksum import file_sha256
from deepict_dask.io.convert import ConvertOptions
from deepict_dask.layout import FILTERED, TomoStore
from deepict_dask.models.spec import network_sha256
from deepict_dask.pipeline.config import RunConfig, TargetConfig
from deepict_dask.pipeline.engine import Stage, TomoJob

# ------------------------------------------------------------------------------------- stage bodies


def run_convert(job: TomoJob, params: Mapping[str, Any], upstream: Mapping[str, Any]) -> dict[str, Any]:
    """Input tomogram (MRC/Zarr/OME-Zarr) -> the run's OME-Zarr store with a pyramid."""
    from deepict_dask.io import spatial_shape, voxel_size_of
    from deepict_dask.io.convert import ConvertOptions, open_source, write_converted

    options = ConvertOptions.model_validate(params["convert"])
    vol = open_source(job.source, options)
    out = write_converted(vol, job.store, options, attrs={"tomogram": job.name}, overwrite=True)
    return {
        "outputs": [out],
        "result": {"shape": list(spatial_shape(vol)), "voxel_size": list(voxel_size_of(vol))},
    }


def run_preprocess(job: TomoJob, params: Mapping[str, Any], upstream: Mapping[str, Any]) -> dict[str, Any]:
    """Normalize and (optionally) equalize the amplitude spectrum -> ``filtered`` image."""
    from deepict_dask.io import open_volume, write_ome_zarr
    from deepict_dask.preprocess import FilterOptions, apply_filter

    vol = open_volume(job.store, chunks=params["chunks"])
    out = apply_filter(vol, FilterOptions.model_validate(params["filter"]))
    attrs = {k: out.attrs[k] for k in ("normalization", "equalization") if k in out.attrs}
    path = write_ome_zarr(out, job.store, group=FILTERED, levels=1, chunks=params["chunks"], attrs=attrs)
    return {"outputs": [path]}


def run_predict(job: TomoJob, params: Mapping[str, Any], upstream: Mapping[str, Any]) -> dict[str, Any]:
    """Probability maps of one model -> ``predictions/<model>`` (GPU when the worker has one)."""
    from deepict_dask.inference.options import PredictOptions
    from deepict_dask.inference.predict import make_ref, predict_volume, write_prediction
    from deepict_dask.io import open_volume

    options = PredictOptions.model_validate(params["predict"])
    volume = open_volume(job.store, group=params["image"])
    pred = predict_volume(volume, make_ref(params["model_path"], options), options, as_stored=True)
    path = write_prediction(pred, job.store, options, overwrite=True)
    return {"outputs": [path], "result": {"classes": list(pred.info.classes)}}


def _mask_block(block, scale: float, threshold: float):
    from deepict_dask.pick.threshold import foreground, to_probability

    return foreground(to_probability(block, scale), threshold).astype("uint8")


def run_segment(job: TomoJob, params: Mapping[str, Any], upstream: Mapping[str, Any]) -> dict[str, Any]:
    """Threshold one class of a probability map into a binary mask -> ``labels/<target>``.

    Stored values become probabilities and foreground exactly as in the pick stage."""
    import numpy as np

    from deepict_dask.io import make_volume, open_volume, origin_of, voxel_size_of, write_ome_zarr
    from deepict_dask.pick.options import PickOptions
    from deepict_dask.pick.threshold import probability_scale

    options = PickOptions.model_validate(params["pick"])
    prob = open_volume(upstream[f"predict:{params['model']}"]["outputs"][0])
    cls = prob.sel(c=params["class"]) if "c" in prob.dims else prob
    scale = probability_scale(cls.dtype, prob.attrs)
    mask = cls.data.map_blocks(_mask_block, scale, options.threshold, dtype=np.uint8)
    # a fresh volume: the map's own attributes (its probability scale) must not describe the 0/1 mask
    vol = make_volume(mask, voxel_size_of(prob), origin_of(prob), name=params["target"])
    out = write_ome_zarr(vol, job.store, group=params["target"], label=True, levels=1,
                         chunks=params["chunks"], attrs={"threshold": options.threshold, "class": params["class"],
                                                         "probability_scale": 1.0})  # a 0/1 mask, not a map
    fraction = float(mask.mean().compute())
    return {"outputs": [out], "result": {"fraction": fraction}}


def run_pick(job: TomoJob, params: Mapping[str, Any], upstream: Mapping[str, Any]) -> dict[str, Any]:
    """Threshold, cluster, filter by size and context -> table + ``labels/<target>``."""
    from deepict_dask.io import write_ome_zarr
    from deepict_dask.io.tables import write_table
    from deepict_dask.pick.api import pick
    from deepict_dask.pick.options import PickOptions

    options = PickOptions.model_validate(params["pick"])
    rule = options.context
    if rule is not None:  # the rule names a segmentation target: its mask is a group of this store
        options = options.model_copy(update={"context": rule.model_copy(
            update={"target": str(job.store), "group": TomoStore.label_group(rule.target)})})
    result = pick(upstream[f"predict:{params['model']}"]["outputs"][0], options, classes=[params["class"]],
                  tomo=job.name, labels=True)
    df = result.table.assign(**{"class": params["target"]})
    labels = result.labels[params["class"]]
    group = write_ome_zarr(labels, job.store, group=params["target"], label=True, levels=1, chunks=params["chunks"],
                           attrs={"pick": {k: v for k, v in params.items() if k != "chunks"}})
    table_path = write_table(df, job.layout.target_table(job.name, params["target"]))
    return {"outputs": [table_path, group], "result": {"count": len(df)}}


def run_tables(job: TomoJob, params: Mapping[str, Any], upstream: Mapping[str, Any]) -> dict[str, Any]:
    """All particle classes of the tomogram in one table per requested format.

    A one-set format (a copick point file) gets one file per target; directory formats (a copick
    project) are written for the whole run only (:func:`deepict_dask.pipeline.summary.write_run_outputs`).
    """
    from deepict_dask.io.tables import TableContext, concat_tables, get_format, read_table, write_table

    tables = {t: read_table(Path(upstream[f"pick:{t}"]["outputs"][0])) for t in params["targets"]}
    df = concat_tables(tables.values())
    ctx = TableContext(voxel_size=params["voxel_size"], shape=params["shape"],
                       tilt_series_pixel_size=params.get("tilt_series_pixel_size"))
    outputs = []
    for name in params["formats"]:
        fmt = get_format(name)
        if fmt.directory:
            continue
        suffix = fmt.suffixes[0]
        if fmt.one_set:
            outputs += [write_table(part, job.table_dir / f"{job.name}_{t}{suffix}", fmt=name, context=ctx)
                        for t, part in tables.items()]
        else:
            outputs.append(write_table(df, job.table_dir / f"{job.name}_particles{suffix}", fmt=name, context=ctx))
    counts = {str(k): int(v) for k, v in df["class"].value_counts().items()} if len(df) else {}
    return {"outputs": outputs, "result": {"counts": {t: counts.get(t, 0) for t in params["targets"]}}}


# ----------------------------------------------------------------------------------------- registry

STAGE_KINDS = ("convert", "preprocess", "predict", "pick", "tables")
VERSIONS = {"convert": "1", "preprocess": "1", "predict": "1", "segment": "2", "pick": "1", "tables": "1"}


def model_files(config: RunConfig) -> dict[str, Path]:
    """Model name -> model file (shipped demo names resolved), without importing torch."""
    from deepict_dask.models.spec import resolve_model_path

    return {m.name: resolve_model_path(m.path) for m in config.models}


def read_model_meta(path: Path) -> dict[str, Any]:
    """A model file's self-description (ModelInfo fields as a dict), read without torch."""
    from deepict_dask.models.spec import read_model_info

    return read_model_info(path).model_dump()


def _target_params(t: TargetConfig, chunks: int, tuned: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The settings the target's stage runs with: the config's, else the model's tuned ones, else built
    in (:func:`~deepict_dask.pick.api.with_tuned`, as ``deepict pick`` chooses them).

    ``pick`` holds the :class:`PickOptions` as JSON, exactly what the stage validates and runs with,
    so the stage hash changes when a re-tuned model changes them.
    """
    from deepict_dask.pick.api import with_tuned

    options, _ = with_tuned(t.pick, tuned or {})
    return {"target": t.name, "model": t.model, "class": t.model_class, "pick": options.model_dump(mode="json"),
            "chunks": chunks}


def predict_chunk(store_chunks: int) -> int:
    """The prediction block edge a run uses unless ``predict.chunk`` is set: twice the store's chunk
    edge (each task writes whole chunks, and few tasks per tomogram), at least 64 voxels."""
    return max(2 * store_chunks, 64)


def build_stages(config: RunConfig, job: TomoJob) -> list[Stage]:
    """The ordered stage list of one tomogram for ``config`` (a context target comes before its users)."""
    chunks = config.output.chunks
    pre = config.preprocess
    filter_params = pre.filter.model_dump(mode="json")
    target_sha256 = file_sha256(pre.filter.target) if pre.filter.enabled and pre.filter.target_path else None
    convert = ConvertOptions(chunks=chunks, levels=config.output.levels,
                             # the header has none: the config's, as the input check took it
                             voxel_size=job.header["voxel_size"] if job.header.get("voxel_size_given") else None)
    stages: list[Stage] = [Stage("convert", run_convert, {"convert": convert.model_dump(mode="json")},
                                 version=VERSIONS["convert"])]
    image_stage = "convert"
    image_group = None
    if pre.normalize or pre.filter.enabled:
        stages.append(Stage("preprocess", run_preprocess, {"filter": filter_params, "chunks": chunks,
                                                            "target_sha256": target_sha256},
                            deps=("convert",), version=VERSIONS["preprocess"]))
        image_stage, image_group = "preprocess", FILTERED
    files = model_files(config)
    for m in config.models:
        predict = m.predict
        if "chunk" not in predict.model_fields_set:  # whole store chunks per task: see predict_chunk
            predict = predict.model_copy(update={"chunk": predict_chunk(chunks)})
        # keyed on the network, not the file: tuning rewrites only the picking settings in the file
        params = {"model": m.name, "model_path": str(files[m.name]), "network_sha256": network_sha256(files[m.name]),
                  "image": image_group, "predict": predict.model_dump(mode="json")}
        stages.append(Stage(f"predict:{m.name}", run_predict, params, deps=(image_stage,), gpu=True,
                            version=VERSIONS["predict"]))
    picking = {m.name: read_model_meta(files[m.name]).get("picking", {}) for m in config.models}
    segmentations = [t for t in config.targets if t.kind == "segmentation"]
    particles = [t for t in config.targets if t.kind == "particles"]
    for t in segmentations + particles:
        deps = (f"predict:{t.model}",) + ((f"pick:{t.pick.context.target}",) if t.pick.context else ())
        tuned = picking.get(t.model, {}).get(t.model_class)
        if t.kind == "segmentation":
            stages.append(Stage(f"pick:{t.name}", run_segment, _target_params(t, chunks, tuned), deps=deps,
                                version=VERSIONS["segment"]))
        else:
            stages.append(Stage(f"pick:{t.name}", run_pick, _target_params(t, chunks, tuned), deps=deps,
                                version=VERSIONS["pick"]))
    header = job.header
    stages.append(Stage(
        "tables", run_tables,
        {"targets": [t.name for t in particles], "formats": list(config.output.table_formats),
         "voxel_size": header.get("voxel_size"), "shape": header.get("shape"),
         "tilt_series_pixel_size": config.output.tilt_series_pixel_size},
        deps=tuple(f"pick:{t.name}" for t in particles), version=VERSIONS["tables"],
    ))
    return _sequence_store_writers(stages)


def _sequence_store_writers(stages: Sequence[Stage]) -> list[Stage]:
    """Let the stages of one tomogram that write into its store run one after another.

    Two writers updating the same store's group metadata at once could lose an update; ordering
    them costs nothing in throughput because other tomograms keep the workers busy.
    """
    from dataclasses import replace

    out: list[Stage] = []
    previous: str | None = None
    for st in stages:
        if previous is not None and previous not in st.deps and st.name != "tables":
            st = replace(st, after=(previous,))
        out.append(st)
        if st.name != "tables":
            previous = st.name
    return out
