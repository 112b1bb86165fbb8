"""Predict probability maps for whole tomograms: the Python API behind ``deepict predict``.

``predict_volume`` returns lazy probability maps; ``predict_file`` writes them into
``<out>/<tomo>.ome.zarr``: the tomogram itself at the root (so the store is an NGFF image that
ome-zarr-py, napari and ``ome_zarr info`` open, with the label images beside it, the same layout as
a run directory's store), group ``predictions/<model>``, and for 2D models a thresholded label
image ``labels/<model>``; ``predict_many`` keeps a bounded number of tomograms in flight on the
current Dask client.
"""

from __future__ import annotations

import logging
import re
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import xarray as xr

from deepict_dask import __version__
from deepict_dask.errors import ConfigError, DeepictError, InputError, OutputError
from deepict_dask.inference.blockwise import quantize
from deepict_dask.inference.devices import choose_device, is_cuda
from deepict_dask.inference.options import PredictOptions
from deepict_dask.inference.predict2d import (
    DEFAULT_MARGIN_2D,
    DEFAULT_THRESHOLD_2D,
    predict2d,
)
from deepict_dask.inference.predict3d import DEFAULT_MARGIN_3D, predict3d
from deepict_dask.inference.rescale import needs_rescale, to_model_grid, to_tomogram_grid
from deepict_dask.inference.worker_cache import PredictorRef, get_predictor
from deepict_dask.io import tomogram_name
from deepict_dask.io.checksum import file_sha256
from deepict_dask.io.volume import make_volume, origin_of, spatial_shape, voxel_size_of
from deepict_dask.layout import TomoStore, store_path
from deepict_dask.models.spec import ModelInfo
from deepict_dask.preprocess.normalize import checked_stats, zscore

log = logging.getLogger(__name__)

# Window edge for 3D models when none is given. Larger windows keep a larger share of each forward
# pass (core / window); benchmarks/bench_predict.py measures the trade-off per device. On CPU, windows
# of 144+ also keep every convolution of the DeePiCt networks on oneDNN even with one window per pass.
DEFAULT_WINDOW_3D = {"cpu": 160, "cuda": 128}


@dataclass
class Prediction:
    """Lazy outputs of one tomogram; ``probabilities`` is float32 ``(c, z, y, x)`` on the tomogram grid
    (or already in the stored dtype, see ``predict_volume(as_stored=True)``; ``params["scale"]``
    turns it back into probabilities)."""

    probabilities: xr.DataArray
    variance: xr.DataArray | None
    info: ModelInfo
    params: dict[str, Any] = field(default_factory=dict)
    gpu: bool = False


def model_group_name(info: ModelInfo) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", info.name).strip("._") or "model"


def _cluster_has_gpu_resources() -> bool:
    try:
        from distributed import get_client

        workers = get_client().scheduler_info().get("workers", {}).values()
    except (ImportError, ValueError):
        return False
    return any("GPU" in (w.get("resources") or {}) for w in workers)


def make_ref(model: str | Path, options: PredictOptions, loader: Callable | None = None) -> PredictorRef:
    """The picklable model reference every task carries (path + sha256 + options).

    Parameters
    ----------
    model : path
        The model file (a segmentation model; an autoencoder is refused).
    options : PredictOptions
        Device, batch size, precision, TTA and the other settings the tasks' predictor uses.
    loader : callable, optional
        Builds the predictor instead of loading ``model`` (tests, custom networks).

    Returns
    -------
    PredictorRef
        The reference to pass to :func:`predict_volume`, :func:`predict_file` or :func:`predict_many`.
    """
    from deepict_dask.models.spec import read_model_info, require_segmentation

    path = Path(model)
    if loader is None and not path.is_file():
        raise InputError("model file not found", path)
    if loader is None:
        require_segmentation(read_model_info(path), path)  # an autoencoder makes no probability maps
    return PredictorRef(
        model_path=str(path.resolve()) if path.exists() else str(path),
        sha256=file_sha256(path) if path.is_file() else "",
        device=choose_device(options.device),
        batch_size=options.batch_size,
        precision=options.precision,
        tta=options.tta,
        channels_last=options.channels_last,
        fold_bn=options.fold_bn,
        compile=options.compile,
        threads=options.threads,
        loader=loader,
    )


def _resolved(options: PredictOptions, info: ModelInfo, device: str) -> PredictOptions:
    if info.dim == 3:
        window = options.window or DEFAULT_WINDOW_3D["cuda" if is_cuda(device) else "cpu"]
        margin = DEFAULT_MARGIN_3D if options.margin is None else options.margin
    else:
        window = options.window or int(info.patch_size[-1])
        margin = DEFAULT_MARGIN_2D if options.margin is None else options.margin
    if window - 2 * margin < 1:
        raise ConfigError(f"window {window} leaves nothing after cropping margin {margin} per side")
    threshold = options.threshold
    if threshold is None and info.dim == 2:
        threshold = DEFAULT_THRESHOLD_2D
    return options.model_copy(update={"window": window, "margin": margin, "threshold": threshold})


def predict_volume(volume: xr.DataArray, ref: PredictorRef, options: PredictOptions = PredictOptions(), *,
                   as_stored: bool = False) -> Prediction:
    """Lazy probability maps of one tomogram (``z, y, x`` DataArray from ``open_volume``).

    Checks the model against the tomogram, normalizes with the global mean/std (computed now, one
    pass), rescales to the model's voxel size when needed and maps the result back.

    ``as_stored=True`` (what writing uses): where nothing follows the network (3D model, no
    rescaling, no TTA variance), the tasks emit ``options.dtype`` (uint8: ``p * 255``) directly,
    so no float32 block waits in a worker between prediction and store.

    Parameters
    ----------
    volume : DataArray
        The tomogram, ``z, y, x``, with its voxel size.
    ref : PredictorRef
        The model (:func:`make_ref`).
    options : PredictOptions
        Window, margin, blending, chunks, output dtype, device settings.
    as_stored : bool
        Emit the stored dtype directly where possible (see above).

    Returns
    -------
    Prediction
        Lazy probabilities (and TTA variance) with the model's metadata.
    """
    from deepict_dask.models import check_voxel_size

    source = volume.attrs.get("source")
    if volume.ndim != 3:
        raise InputError(f"expected a single-channel 3D tomogram (z, y, x), got dims {volume.dims}", source)
    if min(spatial_shape(volume)) < 1:
        raise InputError("tomogram is empty", source)
    predictor = get_predictor(ref)  # loads here once to check the model before any task runs
    info = predictor.info
    opts = _resolved(options, info, ref.device)
    vs = voxel_size_of(volume)
    try:
        factors = check_voxel_size(info, vs, rescale=opts.rescale)
    except DeepictError as exc:
        raise InputError(exc.problem, source) from exc
    mean, std = checked_stats(volume, source=source)  # also refuses NaNs and constant input
    if info.normalization == "none":
        mean, std = 0.0, 1.0
    shape = spatial_shape(volume)
    # without rescaling, the tasks z-score the input they assemble (no normalized copy of the tomogram)
    x, in_task = volume.data, ((mean, std) if info.normalization != "none" else None)
    if needs_rescale(factors):
        x, in_task = to_model_grid(zscore(volume.data, mean, std), factors, (opts.chunk,) * 3), None
        log.info("%s: rescaled by %s to the model's %.3g A voxels", source, factors, info.voxel_size)
    window = (opts.window,) * 3 if info.dim == 3 else (1, opts.window, opts.window)
    predictor.check_window(window[3 - info.dim :])
    gpu = is_cuda(ref.device) and _cluster_has_gpu_resources()
    n = len(info.classes) * (2 if predictor.uncertainty else 1)
    if info.dim == 3:
        direct = as_stored and not needs_rescale(factors) and n == len(info.classes)
        p = predict3d(x, ref, n, window=opts.window, margin=opts.margin, blend=opts.blend, chunk=opts.chunk,
                      out_dtype=opts.dtype if direct else "float32", gpu=gpu, normalize=in_task)
    else:
        p = predict2d(x, ref, n, tile=opts.window, margin=opts.margin, blend=opts.blend, sigma_z=opts.sigma_z,
                      gpu=gpu, normalize=in_task)
    if needs_rescale(factors):
        p = to_tomogram_grid(p, factors, shape, (opts.chunk,) * 3)
    params = {
        "model": info.name,
        "model_file": Path(ref.model_path).name,
        "model_path": ref.model_path,  # where deepict pick finds the model's tuned settings
        "model_sha256": ref.sha256,
        "classes": list(info.classes),
        "activation": info.activation,
        "dim": info.dim,
        "window": opts.window,
        "margin": opts.margin,
        "blend": opts.blend,
        "tta": opts.tta,
        "dtype": opts.dtype,
        "scale": 1 / 255 if opts.dtype == "uint8" else 1.0,
        "threshold": opts.threshold,
        "sigma_z": opts.sigma_z if info.dim == 2 else None,
        "normalization": {"kind": info.normalization, "mean": mean, "std": std},
        "rescale_factors": list(factors),
        "model_voxel_size": info.voxel_size,
        "software_version": __version__,
    }
    vs, origin = voxel_size_of(volume), origin_of(volume)
    k = len(info.classes)
    probs = make_volume(p[:k], vs, origin, name=info.name, channels=info.classes)
    var = make_volume(p[k:], vs, origin, name=f"{info.name}_variance", channels=info.classes) if n > k else None
    return Prediction(probs, var, info, params, gpu)


# ---------------------------------------------------------------------------------------------- files


def _existing_prediction(store: Path, group: str) -> dict[str, Any] | None:
    if not (store / group).exists():
        return None
    import zarr

    try:
        attrs = zarr.open_group(str(store), path=group, mode="r").attrs.asdict()
    except Exception:  # an unreadable leftover is treated like a foreign prediction
        return {}
    meta = attrs.get("deepict", {})
    return dict(meta.get("prediction", {})) if isinstance(meta, dict) else {}


def _same_run(old: dict[str, Any], new: dict[str, Any]) -> bool:
    keys = ("model_sha256", "window", "margin", "blend", "tta", "dtype", "threshold", "sigma_z")
    return bool(old) and all(old.get(k) == new.get(k) for k in keys)


def output_store(tomo: str | Path, out_dir: str | Path) -> Path:
    return store_path(out_dir, tomogram_name(tomo))


def _mask(probs: da.Array, threshold: float) -> da.Array:
    """Label image: 0 background, k+1 where class k is the most probable class above ``threshold``."""
    above = probs >= threshold
    best = da.argmax(probs, axis=0).astype(np.uint8) + np.uint8(1)
    return da.where(above.any(axis=0), best, np.uint8(0)).astype(np.uint8)


def write_prediction(pred: Prediction, store: Path, options: PredictOptions, *, overwrite: bool = False) -> Path:
    """Write probabilities (and mask / variance) into ``store``; returns the probability group path.

    The probability group is written last and atomically, so its presence means a finished run.
    """

    name = model_group_name(pred.info)
    group = TomoStore.prediction_group(name)
    old = _existing_prediction(store, group)
    if old is not None and not overwrite:
        if old.get("model_sha256") != pred.params["model_sha256"]:
            raise OutputError(
                f"already holds a prediction '{group}' from another model file "
                f"(sha256 {str(old.get('model_sha256'))[:12]}...); use --overwrite to replace it", store)
        if not _same_run(old, pred.params):
            raise OutputError(f"already holds a prediction '{group}' made with other parameters; "
                              "use --overwrite to replace it", store)
        log.warning("%s: %s is already there, skipped", store, group)
        return store / group
    try:
        store.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output directory: {exc.strerror}", store.parent) from exc
    created = not store.exists()
    try:
        return _write_prediction(pred, store, options, name, group)
    except BaseException:
        if created:  # a failed write (e.g. a full disk) leaves no empty store skeleton behind
            from deepict_dask.io.atomic import remove_path

            remove_path(store)
        raise


def _write_prediction(pred: Prediction, store: Path, options: PredictOptions, name: str, group: str) -> Path:
    from deepict_dask.io import open_volume, write_ome_zarr
    from deepict_dask.io.zarr_store import default_levels

    levels = default_levels(pred.probabilities.shape, options.levels)
    chunks = tuple(c[0] for c in pred.probabilities.data.chunks[1:])
    dtype = pred.params["dtype"]
    attrs = {"prediction": {**pred.params, "finished": True}}
    # GPU workers are asked for on the computation itself: per-layer annotations are lost when a
    # scheduler fuses tasks (its own configuration decides), and the predictions then ran anywhere
    resources = {"GPU": 1} if pred.gpu else None
    if pred.variance is None:
        probs = pred.probabilities
        if probs.dtype != np.dtype(dtype):  # else the tasks quantized already (predict_volume(as_stored=True))
            probs = probs.copy(data=probs.data.map_blocks(quantize, dtype, dtype=dtype))
        written = write_ome_zarr(probs, store, group=group, levels=levels, chunks=chunks, attrs=attrs,
                                 overwrite=True, stats=False, resources=resources,
                                 value_range=_probability_range(dtype))
    else:
        written = _write_with_variance(pred, store, group, levels, chunks, dtype, attrs, resources)
    threshold = pred.params.get("threshold")
    if threshold is not None:
        stored = open_volume(written).data
        scale = pred.params["scale"]
        mask = make_volume(_mask(stored.astype(np.float32) * np.float32(scale), threshold),
                           voxel_size_of(pred.probabilities), origin_of(pred.probabilities), name=name)
        write_ome_zarr(mask, store, group=TomoStore.label_group(name), levels=levels, chunks=chunks, label=True,
                       attrs={"prediction": {**pred.params, "mask_threshold": threshold}}, overwrite=True,
                       label_names={k + 1: c for k, c in enumerate(pred.info.classes)})
    return written


def _probability_range(dtype: str) -> tuple[float, float]:
    """What probability 0..1 is stored as: the display window of a prediction's channels."""
    return (0.0, 255.0) if np.dtype(dtype) == np.uint8 else (0.0, 1.0)


def _write_with_variance(pred: Prediction, store: Path, group: str, levels: int, chunks: tuple[int, ...],
                         dtype: str, attrs: dict[str, Any], resources: dict[str, float] | None) -> Path:
    """TTA: compute mean and variance once into a scratch Zarr, then write both groups from it."""
    from deepict_dask.io import write_ome_zarr

    both = da.concatenate([pred.probabilities.data, pred.variance.data]).astype(np.float16)
    k = pred.probabilities.shape[0]
    with tempfile.TemporaryDirectory(dir=store.parent, prefix=f".{store.name}.scratch-") as tmp:
        scratch = str(Path(tmp) / "both.zarr")
        with dask.annotate(**({"resources": resources} if resources else {})):
            da.to_zarr(both.rechunk((1,) + chunks), scratch)
        back = da.from_zarr(scratch).astype(np.float32)
        var = pred.variance.copy(data=back[k:].astype(np.float16))
        write_ome_zarr(var, store, group=f"{group}_variance", levels=levels, chunks=chunks, overwrite=True,
                       attrs={"prediction": {**pred.params, "quantity": "variance over TTA"}})
        probs = pred.probabilities.copy(data=back[:k].map_blocks(quantize, dtype, dtype=dtype))
        return write_ome_zarr(probs, store, group=group, levels=levels, chunks=chunks, attrs=attrs,
                              overwrite=True, value_range=_probability_range(dtype))


def root_image(volume: xr.DataArray, store: Path, options: PredictOptions, *, overwrite: bool) -> xr.DataArray:
    """The tomogram at the root of ``store``, written there first unless the store already holds it.

    The root image is what makes the store an NGFF image readers open (and the parent image its
    ``labels/`` point to). Its level-0 statistics come from the same pass as the copy, and are
    returned in ``volume``'s attributes so that normalization needs no separate pass.
    """
    from deepict_dask.io import open_volume, write_ome_zarr
    from deepict_dask.io.zarr_store import default_levels

    held = _held_tomogram(store)
    if held is not None and (held.shape != volume.shape or
                             not np.allclose(voxel_size_of(held), voxel_size_of(volume), rtol=1e-6)):
        if not overwrite:
            raise OutputError(f"holds another tomogram ({'x'.join(map(str, held.shape))} voxels of "
                              f"{voxel_size_of(held)[-1]:g} A); use --overwrite to replace the store", store)
        held = None
    if held is None:
        if store.exists() and not overwrite:
            raise OutputError("exists but holds no tomogram image (an older layout?); "
                              "use --overwrite to replace it", store)
        write_ome_zarr(volume, store, levels=default_levels(volume.shape, options.levels), overwrite=True,
                       attrs={"role": "input tomogram of deepict predict"})
        held = open_volume(store)
    stats = held.attrs.get("stats")
    return volume.assign_attrs(stats=stats, level=0) if stats else volume


def _held_tomogram(store: Path) -> xr.DataArray | None:
    """The store's root image, or None when the store or its root image does not exist."""
    from deepict_dask.io import open_volume

    if not store.is_dir():
        return None
    try:
        return open_volume(store)
    except InputError:
        return None


def predict_file(tomo: str | Path, ref: PredictorRef, out_dir: str | Path, options: PredictOptions = PredictOptions(),
                 *, overwrite: bool = False, chunks: int | None = None,
                 voxel_size: float | tuple[float, float, float] | None = None) -> Path:
    """Predict one tomogram file and write ``<out_dir>/<tomo>.ome.zarr``; returns the probability group.

    ``voxel_size`` (Angstrom) replaces the file's (needed for files whose header has none).

    Parameters
    ----------
    tomo : path
        The tomogram file (MRC or Zarr/OME-Zarr).
    ref : PredictorRef
        The model (:func:`make_ref`).
    out_dir : path
        Folder of the output store ``<tomo>.ome.zarr``.
    options : PredictOptions
        The prediction settings.
    overwrite : bool
        Replace an existing prediction of this model.
    chunks : int, optional
        Read chunk edge (default ``min(options.chunk, 256)``).
    voxel_size : float or (float, float, float), optional
        Angstrom per voxel, replacing the file's.

    Returns
    -------
    Path
        The probability group written (see :func:`write_prediction`).
    """
    from deepict_dask.io import open_volume

    volume = open_volume(tomo, chunks=chunks or min(options.chunk, 256), voxel_size=voxel_size)
    store = output_store(tomo, out_dir)
    created = not store.exists()
    try:
        volume = root_image(volume, store, options, overwrite=overwrite)
        pred = predict_volume(volume, ref, options, as_stored=True)
        return write_prediction(pred, store, options, overwrite=overwrite)
    except BaseException:
        if created:  # a model that does not fit, a full disk...: no store with only the tomogram in it
            from deepict_dask.io.atomic import remove_path

            remove_path(store)
        raise


def predict_many(
    tomos: Sequence[str | Path],
    ref: PredictorRef,
    out_dir: str | Path,
    options: PredictOptions = PredictOptions(),
    *,
    overwrite: bool = False,
    max_in_flight: int = 2,
    on_done: Callable[[str, Path | None, BaseException | None], None] | None = None,
    voxel_size: float | tuple[float, float, float] | None = None,
) -> dict[str, Path | BaseException]:
    """Predict many tomograms, at most ``max_in_flight`` at a time, on the current Dask scheduler.

    Each tomogram's graph is submitted from its own thread, so several tomograms share the workers
    (a small one does not leave them idle) while memory stays bounded. A tomogram that fails with a
    :class:`DeepictError` is reported and the others go on; other errors stop the run.

    Parameters
    ----------
    tomos : sequence of path
        The tomogram files.
    ref : PredictorRef
        The model (:func:`make_ref`).
    out_dir : path
        Folder of the output stores.
    options : PredictOptions
        The prediction settings.
    overwrite : bool
        Replace existing predictions of this model.
    max_in_flight : int
        Tomograms predicted at the same time (at least 1).
    on_done : callable, optional
        ``on_done(tomo, group or None, error or None)`` after each tomogram.
    voxel_size : float or (float, float, float), optional
        Angstrom per voxel, replacing the files'.

    Returns
    -------
    dict
        Tomogram (as given, a string) -> its probability group, or the :class:`DeepictError` it
        failed with.
    """
    if max_in_flight < 1:
        raise ConfigError(f"max_in_flight must be >= 1, got {max_in_flight}")
    results: dict[str, Path | BaseException] = {}
    pending: dict[Future, str] = {}
    todo = list(tomos)
    with ThreadPoolExecutor(max_workers=max_in_flight, thread_name_prefix="deepict-predict") as pool:
        while todo or pending:
            while todo and len(pending) < max_in_flight:
                t = str(todo.pop(0))
                pending[pool.submit(predict_file, t, ref, out_dir, options, overwrite=overwrite,
                                       voxel_size=voxel_size)] = t
            done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
            for fut in done:
                t = pending.pop(fut)
                exc = fut.exception()
                if exc is not None and not isinstance(exc, DeepictError):
                    for other in pending:
                        other.cancel()
                    raise exc
                results[t] = exc if exc is not None else fut.result()
                if on_done:
                    on_done(t, None if exc else fut.result(), exc)
    return results

