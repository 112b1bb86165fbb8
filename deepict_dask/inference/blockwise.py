"""The per-block prediction function and the Dask graph that maps it over output blocks.

The graph is built over *output* blocks. For each block we know (from the global window grid)
which windows touch it and which global input range they read. When the input is a stored array
as opened (MRC, Zarr) the task reads exactly that range from the file; otherwise it receives the
input chunks overlapping the range and assembles them. It reflects at the volume border and runs
the windows. No halo arithmetic is involved, so the result is the same for every chunking, including
chunks smaller than a window.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from itertools import product
from typing import Any

import dask
import dask.array as da
import numpy as np
import torch
from dask.highlevelgraph import HighLevelGraph, MaterializedLayer

from deepict_dask.errors import ConfigError
from deepict_dask.inference.blend import BlockAccumulator
from deepict_dask.inference.devices import (
    BatchRunner,
    auto_batch_size,
    autocast,
    free_device_cache,
    inference_mode,
    is_cuda,
    is_oom,
    set_torch_threads,
    worker_threads,
)
from deepict_dask.inference.tta import tta_flips
from deepict_dask.inference.windows import AxisGrid, block_windows, reflect_index, window_starts
from deepict_dask.io.volume import stored_source
from deepict_dask.models.spec import ModelInfo

log = logging.getLogger(__name__)

OUT_DTYPES = ("uint8", "float16", "float32")


def fold_batchnorm(module: torch.nn.Module) -> torch.nn.Module:
    """Fold eval-mode batch norm into the convolution just before it (same output, one pass less).

    Looks for ``Conv -> BatchNorm`` pairs inside ``nn.Sequential`` containers (how the U-Nets are
    built); the input module is left untouched.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    if not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in module.modules()):
        return module
    module = copy.deepcopy(module).eval()
    for seq in module.modules():
        if not isinstance(seq, torch.nn.Sequential):
            continue
        names = list(seq._modules)
        for a, b in zip(names, names[1:]):
            conv, bn = seq._modules[a], seq._modules[b]
            if (
                isinstance(conv, (torch.nn.Conv2d, torch.nn.Conv3d))
                and isinstance(bn, torch.nn.modules.batchnorm._BatchNorm)
                and bn.track_running_stats
            ):
                seq._modules[a] = fuse_conv_bn_eval(conv, bn)
                seq._modules[b] = torch.nn.Identity()
    return module


def logits_network(module: torch.nn.Module) -> torch.nn.Module:
    """The bare network when given a probability wrapper (the engine applies the activation)."""
    from deepict_dask.models import ProbabilityHead

    return module.net if isinstance(module, ProbabilityHead) else module


class Predictor:
    """A network ready for inference: device, precision, batching, activation and TTA.

    ``forward(patches)`` takes windows ``(B, *window)`` of normalized float32 input and returns
    class probabilities ``(B, n_classes, *window)`` (background dropped for softmax models) and,
    with TTA, their variance over the augmentations.
    """

    def __init__(
        self,
        module: torch.nn.Module,
        info: ModelInfo,
        device: str = "cpu",
        *,
        batch_size: int | None = None,
        precision: str = "auto",
        tta: str = "none",
        channels_last: bool | None = None,
        fold_bn: bool = True,
        compile: bool = False,
        threads: int | None = None,
    ):
        if info.in_channels != 1:
            raise ConfigError(f"model {info.name!r} expects {info.in_channels} input channels; tomograms have 1")
        self.info = info
        self.device = device
        module = logits_network(module).eval().to(device)
        if fold_bn:
            module = fold_batchnorm(module)
        if channels_last is None:  # auto: measured 1.7-1.9x faster on CPU (benchmarks/bench_predict.py)
            channels_last = not is_cuda(device)
        self.channels_last = channels_last and info.dim == 3
        if self.channels_last:
            module = module.to(memory_format=torch.channels_last_3d)
        if compile:
            module = torch.compile(module, dynamic=False)
        self.module = module
        self.precision = precision
        self.flips = tta_flips(info.dim, tta)
        self.threads = threads
        self.batch_size = batch_size
        self.blend_on_host = False  # set once a block did not fit in GPU memory (see predict_block)
        self._runners: dict[tuple[int, ...], BatchRunner] = {}
        self.lock = threading.Lock()
        self._checked: set[tuple[int, ...]] = set()

    def runner(self, window: tuple[int, ...]) -> BatchRunner:
        """The batch runner for windows of this size: the batch fits the window (on a GPU, a few
        windows' worth of voxels), and after an out-of-memory error it stays halved for this size."""
        window = tuple(int(w) for w in window)
        if window not in self._runners:
            voxels = int(np.prod(window))
            self._runners[window] = BatchRunner(auto_batch_size(self.device, voxels, requested=self.batch_size))
        return self._runners[window]

    @property
    def n_classes(self) -> int:
        return len(self.info.classes)

    @property
    def uncertainty(self) -> bool:
        return len(self.flips) > 1

    def _activate(self, y: torch.Tensor) -> torch.Tensor:
        if self.info.activation == "softmax":
            return torch.softmax(y, dim=1)[:, 1:]
        return torch.sigmoid(y)

    def _check_output(self, x_shape: tuple[int, ...], y_shape: tuple[int, ...]) -> None:
        if y_shape[1] != self.info.out_channels or tuple(y_shape[2:]) != tuple(x_shape[2:]):
            raise ConfigError(
                f"model {self.info.name!r} turned a window of {tuple(x_shape[2:])} into {tuple(y_shape[1:])}; "
                f"expected {self.info.out_channels} channels of the same size (choose a window the "
                "network accepts, e.g. a multiple of 2**depth)"
            )

    def check_window(self, window: tuple[int, ...]) -> None:
        """Refuse a window the network cannot turn into a same-size prediction, without computing.

        Shapes are propagated on torch's ``meta`` device (no arithmetic, no memory); a network that
        cannot run there is checked with one real forward pass instead. Checked once per window size.
        """
        window = tuple(int(w) for w in window)
        if window in self._checked:
            return
        if getattr(getattr(self.module, "_orig_mod", self.module), "keeps_size", False):
            self._checked.add(window)  # our U-Nets accept any window (tracing on meta costs seconds)
            return
        try:
            meta = copy.deepcopy(self.module).to("meta")
            with torch.no_grad():
                y_shape = tuple(meta(torch.empty((1, 1) + window, device="meta")).shape)
        except (NotImplementedError, RuntimeError, TypeError):
            self.forward(np.zeros((1,) + window, np.float32))
        else:
            self._check_output((1, 1) + window, y_shape)
        self._checked.add(window)

    def forward(self, patches: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """:meth:`forward_tensor` for host arrays: windows ``(B, *window)`` in, host arrays out."""
        mean, var = self.forward_tensor(torch.from_numpy(np.ascontiguousarray(patches, dtype=np.float32)))
        return mean.cpu().numpy(), (None if var is None else var.cpu().numpy())

    def forward_tensor(self, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Probabilities (and TTA variance) of float32 windows ``(B, *window)``, returned on the device
        (the windows are moved there first if they are elsewhere)."""
        with inference_mode():
            x = patches.to(self.device).unsqueeze(1)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last_3d)
            total = sq = None
            for flip in self.flips:
                dims = [a + 2 for a in flip]
                xi = torch.flip(x, dims) if flip else x
                with autocast(self.device, self.precision):
                    y = self.module(xi)
                self._check_output(tuple(x.shape), tuple(y.shape))
                p = self._activate(y.float())
                if flip:
                    p = torch.flip(p, dims)
                total = p if total is None else total + p
                sq = p * p if sq is None else sq + p * p
            n = len(self.flips)
            mean = total / n
            var = (sq / n - mean * mean).clamp_min(0) if n > 1 else None
            return mean, var


def predict_block(
    slab: np.ndarray,
    slab_start: tuple[int, ...],
    grids: tuple[AxisGrid, ...],
    bounds: tuple[tuple[int, int], ...],
    predictor: Predictor,
) -> np.ndarray:
    """Blend every window touching the output block ``bounds`` (global coordinates).

    ``slab`` holds normalized input covering at least those windows, its corner at global
    ``slab_start``. Returns float32 ``(n_classes [+ n_classes variances], *block)``.

    The slab goes to the predictor's device once; windows are cut from it, predicted and blended
    there, and only the finished block comes back (on a GPU, per-window host copies and host-side
    blending would otherwise leave the GPU waiting). A block that does not fit in GPU memory beside
    the network is blended on the host instead, its windows sent to the GPU batch by batch.
    """
    starts = window_starts(grids, block_windows(grids, bounds))
    with predictor.lock, inference_mode():
        set_torch_threads(worker_threads(predictor.threads))
        where = predictor.device
        if not predictor.blend_on_host:
            try:
                return _blend_windows(slab, slab_start, grids, bounds, starts, predictor, where)
            except Exception as exc:
                if not (is_cuda(where) and is_oom(exc)):
                    raise
                free_device_cache()
                predictor.blend_on_host = True  # later blocks of this process go straight to the host
                log.warning("a block of %s voxels does not fit on %s beside the network: blocks are blended "
                            "on the host from now on", "x".join(str(b - a) for a, b in bounds), where)
        try:
            return _blend_windows(slab, slab_start, grids, bounds, starts, predictor, "cpu")
        except Exception as again:
            if not (is_cuda(where) and is_oom(again)):
                raise
            free_device_cache()
            window = "x".join(str(g.window) for g in grids if g.window > 1)
            raise ConfigError(f"a single {window} window does not fit in the free memory of {where}: "
                              "choose a smaller window (deepict predict --patch), or device cpu") from None


def _blend_windows(
    slab: np.ndarray,
    slab_start: tuple[int, ...],
    grids: tuple[AxisGrid, ...],
    bounds: tuple[tuple[int, int], ...],
    starts: list[tuple[int, ...]],
    predictor: Predictor,
    where: str,
) -> np.ndarray:
    """:func:`predict_block` with the slab and the blended block kept on ``where``."""
    n = predictor.n_classes
    window = tuple(g.window for g in grids)
    # 2D models see (1, t, t) windows as (t, t): the unit axes are dropped for the network
    squeeze = tuple(i + 1 for i, w in enumerate(window) if w == 1 and predictor.info.dim == 2)
    src = torch.from_numpy(np.ascontiguousarray(slab, dtype=np.float32)).to(where)
    mean_acc = BlockAccumulator(n, grids, bounds, where)
    var_acc = BlockAccumulator(n, grids, bounds, where) if predictor.uncertainty else None

    def run_batch(batch: list[tuple[int, ...]]) -> list[None]:
        patches = torch.stack(
            [src[tuple(slice(s - o, s - o + w) for s, o, w in zip(st, slab_start, window))] for st in batch])
        for axis in reversed(squeeze):
            patches = patches.squeeze(axis)
        mean, var = predictor.forward_tensor(patches)
        mean, var = mean.to(where), (None if var is None else var.to(where))
        for axis in squeeze:
            mean = mean.unsqueeze(axis + 1)
            var = None if var is None else var.unsqueeze(axis + 1)
        for i, st in enumerate(batch):
            mean_acc.add(st, mean[i])
            if var_acc is not None:
                var_acc.add(st, var[i])
        return [None] * len(batch)

    predictor.runner(window).run(run_batch, starts)
    out = mean_acc.result()
    if var_acc is not None:
        out = torch.cat([out, var_acc.result()])
    return out.cpu().numpy()


def predict_whole(volume: np.ndarray, grids: tuple[AxisGrid, ...], predictor: Predictor) -> np.ndarray:
    """The same sliding window over an in-memory volume in one piece (the reference result)."""
    bounds = tuple((0, n) for n in volume.shape)
    runs = block_windows(grids, bounds)
    slab = volume.astype(np.float32, copy=False)
    ext_lo = []
    for axis, (g, r, n) in enumerate(zip(grids, runs, volume.shape)):
        lo, hi = g.extent(r)
        slab = np.take(slab, reflect_index(np.arange(lo, hi), n), axis=axis)
        ext_lo.append(lo)
    return predict_block(slab, tuple(ext_lo), grids, bounds, predictor)


def quantize(p: np.ndarray, dtype: str) -> np.ndarray:
    """Probabilities in [0, 1] to the output dtype (uint8: 255 steps, value = p * 255)."""
    if dtype == "uint8":
        return np.clip(np.rint(p * 255.0), 0, 255).astype(np.uint8)
    if dtype in ("float16", "float32"):
        return p.astype(dtype)
    raise ConfigError(f"output dtype must be one of {', '.join(OUT_DTYPES)}, got {dtype!r}")


def _predict_slab(
    src: np.ndarray,
    local: tuple[np.ndarray | None, ...],
    ext_lo: tuple[int, ...],
    grids: tuple[AxisGrid, ...],
    bounds: tuple[tuple[int, int], ...],
    get_predictor: Callable[[], Predictor],
    out_dtype: str,
    normalize: tuple[float, float] | None,
) -> np.ndarray:
    """Predict one output block from ``src``, the float32 input range its windows read."""
    if normalize is not None:  # the same float32 arithmetic as preprocess.normalize.zscore, in place
        src -= np.float32(normalize[0])
        src *= np.float32(1.0 / normalize[1])
    slab = src
    for axis, idx in enumerate(local):
        if idx is not None:  # reflect at the volume border
            slab = np.take(slab, idx, axis=axis)
    out = predict_block(slab, ext_lo, grids, bounds, get_predictor())
    return quantize(out, out_dtype)


def _assemble_and_predict(
    pieces: list[np.ndarray],
    offsets: list[tuple[int, ...]],
    src_lo: tuple[int, ...],
    src_shape: tuple[int, ...],
    *args: Any,
) -> np.ndarray:
    """Assemble the block's input range from pieces of input chunks, then predict."""
    src = np.empty(src_shape, dtype=np.float32)
    for piece, off in zip(pieces, offsets):
        src[tuple(slice(o - lo, o - lo + n) for o, lo, n in zip(off, src_lo, piece.shape))] = piece
    return _predict_slab(src, *args)


@dataclass(frozen=True)
class _BlockRead:
    """Where one output block's windows read their input: the range ``[lo, hi)`` of the volume, and
    (per axis, ``None`` when no reflection is needed) the indices that reflect it at the border."""

    lo: tuple[int, ...]
    hi: tuple[int, ...]
    local: tuple[np.ndarray | None, ...]
    ext_lo: tuple[int, ...]


def _block_read(grids: tuple[AxisGrid, ...], shape: tuple[int, ...], bounds: tuple[tuple[int, int], ...]) -> _BlockRead:
    lo, hi, local, ext_lo = [], [], [], []
    for g, r, n in zip(grids, block_windows(grids, bounds), shape):
        a_ext, b_ext = g.extent(r)
        gi = reflect_index(np.arange(a_ext, b_ext), n)
        a, b = int(gi.min()), int(gi.max()) + 1
        lo.append(a)
        hi.append(b)
        ext_lo.append(a_ext)
        local.append(None if (a_ext == a and b_ext == b) else (gi - a).astype(np.intp))
    return _BlockRead(tuple(lo), tuple(hi), tuple(local), tuple(ext_lo))


@dataclass(frozen=True)
class _StoredPrediction:
    """What every task of a prediction from a stored array needs; a task finds its block from its
    block index. Small (the array handle, not its data), so each task carries its own copy."""

    source: Any
    shape: tuple[int, ...]
    grids: tuple[AxisGrid, ...]
    out_bounds: tuple[tuple[int, ...], ...]  # per axis, the block boundaries
    get_predictor: Callable[[], Predictor]
    out_dtype: str
    normalize: tuple[float, float] | None


def _predict_stored_block(plan: _StoredPrediction, block_id: tuple[int, ...] | None = None) -> np.ndarray:
    """Read the block's input range straight from the stored array, then predict."""
    bounds = tuple((ob[i], ob[i + 1]) for ob, i in zip(plan.out_bounds, block_id[1:]))
    r = _block_read(plan.grids, plan.shape, bounds)
    region = np.asarray(plan.source[tuple(slice(a, b) for a, b in zip(r.lo, r.hi))])
    src = region.astype(np.float32, copy=False)
    if src is region and not region.flags.owndata:  # never normalize someone else's buffer in place
        src = src.copy()
    return _predict_slab(src, r.local, r.ext_lo, plan.grids, bounds, plan.get_predictor, plan.out_dtype,
                         plan.normalize)


def blockwise_predict(
    x: da.Array,
    grids: tuple[AxisGrid, ...],
    out_chunks: tuple[tuple[int, ...], ...],
    get_predictor: Callable[[], Predictor],
    n_out: int,
    *,
    out_dtype: str = "float32",
    gpu: bool = False,
    token: str | None = None,
    normalize: tuple[float, float] | None = None,
) -> da.Array:
    """Lazy ``(n_out, *x.shape)`` prediction of normalized ``x``, one task per output block.

    ``normalize=(mean, std)`` z-scores raw ``x`` inside each task, on the assembled input, instead
    of a separate pass that would write a normalized copy of the whole tomogram.

    ``get_predictor`` is called inside the task (pass a picklable callable such as
    :class:`~deepict_dask.inference.worker_cache.PredictorRef`, which loads the model once per
    worker). With ``gpu=True`` the layer is annotated ``resources={"GPU": 1}``; a scheduler that
    fuses tasks low-level drops layer annotations, so whoever computes the result should also ask
    for the resource on the computation (as ``write_prediction`` does).
    """
    if x.ndim != len(grids):
        raise ValueError("one grid per axis is needed")
    name = "predict-" + (token or dask.base.tokenize(x.name, grids, out_chunks, get_predictor, n_out, out_dtype,
                                                    normalize))
    annotations = {"resources": {"GPU": 1}} if gpu else {}
    out_bounds = tuple(tuple(int(v) for v in np.cumsum((0,) + c)) for c in out_chunks)
    source = stored_source(x)
    if source is not None:
        # A task reads exactly its input range from the file, so a worker holds one range per
        # running task, never chunks kept for later readers. The tasks form a blockwise layer, so
        # writing them (da.store) fuses into the same task: each block is stored as soon as it is
        # predicted. (As separate tasks, every write waited behind the next prediction already
        # queued on that worker, its block in memory meanwhile: all writes ran last.) The handle
        # travels inside each task: a shared key would tie every task to the worker holding it
        # (measured: 2 workers 1.3x busy instead of 1.8x).
        plan = _StoredPrediction(source, tuple(x.shape), grids, out_bounds, get_predictor, out_dtype, normalize)
        with dask.annotate(**annotations):
            return da.map_blocks(_predict_stored_block, plan, name=name, chunks=((n_out,),) + tuple(out_chunks),
                                 dtype=np.dtype(out_dtype), meta=np.empty((0,) * (x.ndim + 1), out_dtype))
    # Otherwise a task assembles pieces of x's chunks, which Dask keeps until their last reader
    # ran (memory then grows with the tomogram's cross-section).
    in_bounds = [np.cumsum((0,) + c) for c in x.chunks]
    dsk: dict[Any, Any] = {}
    for block in product(*(range(len(c)) for c in out_chunks)):
        bounds = tuple((ob[i], ob[i + 1]) for ob, i in zip(out_bounds, block))
        r = _block_read(grids, tuple(x.shape), bounds)
        args = (r.local, r.ext_lo, grids, bounds, get_predictor, out_dtype, normalize)
        chunk_ranges = [
            range(int(np.searchsorted(ib, a, side="right") - 1), int(np.searchsorted(ib, b, side="left")))
            for ib, a, b in zip(in_bounds, r.lo, r.hi)
        ]
        pieces, offsets = [], []
        for cidx in product(*chunk_ranges):
            off = tuple(int(ib[i]) for ib, i in zip(in_bounds, cidx))
            # each input chunk is cut to the part this block needs before assembly
            cut = tuple(slice(max(a - o, 0), min(b - o, int(ib[i + 1] - ib[i])))
                        for a, b, o, ib, i in zip(r.lo, r.hi, off, in_bounds, cidx))
            pieces.append((_getitem, (x.name, *cidx), cut))
            offsets.append(tuple(max(a, o) for a, o in zip(r.lo, off)))
        dsk[(name, 0, *block)] = (_assemble_and_predict, pieces, offsets, r.lo,
                                  tuple(b - a for a, b in zip(r.lo, r.hi)), *args)
    layer = MaterializedLayer(dsk, annotations=annotations or None)
    graph = HighLevelGraph.from_collections(name, layer, dependencies=[x])
    return da.Array(graph, name, chunks=((n_out,),) + tuple(out_chunks), dtype=np.dtype(out_dtype))


def _getitem(a: np.ndarray, index: tuple[slice, ...]) -> np.ndarray:
    return a[index]
