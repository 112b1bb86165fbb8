"""Training data: lazily read patches from (tomogram, labels) pairs, sampled around objects or at random.

Nothing loads a whole tomogram: patches are sliced from the chunked store (MRC memmap, Zarr,
OME-Zarr), the normalisation statistics come from a strided subsample, and the object positions
used for object-centred sampling come from one streaming pass over the label volumes (slab by slab,
keeping a bounded random subset of foreground voxels per class).

Batch ``k`` is drawn from a random generator seeded with ``(seed, k)``, so the sequence of batches
is reproducible whatever the number of loader threads and whatever step training resumes at.
"""

from __future__ import annotations

import json
import math
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import xarray as xr

from deepict_dask.errors import ConfigError, InputError
from deepict_dask.io.volume import spatial_shape, voxel_size_of
from deepict_dask.train.augment import augment
from deepict_dask.train.config import AugmentConfig, LabelSource, TomogramEntry, TrainConfig

CLASS_IDS_KEY = "class_ids"


# ------------------------------------------------------------------------------------------ volumes


def open_array(path: str | Path, group: str | None = None) -> xr.DataArray:
    """Open a tomogram or label volume lazily (MRC, Zarr, OME-Zarr; ``group``: an OME-Zarr sub-image)."""
    from deepict_dask.io import open_volume

    return open_volume(path, group=group)


def read_block(vol: xr.DataArray, slices: tuple[slice, ...]) -> np.ndarray:
    """One region of a lazily opened volume as a numpy array (computed in the calling thread)."""
    return np.asarray(vol.data[slices].compute(scheduler="synchronous"))


def class_ids_of(path: str | Path, vol: xr.DataArray) -> dict[str, int]:
    """The ``class -> label value`` mapping stored with a label volume (attrs or sidecar JSON)."""
    ids = vol.attrs.get(CLASS_IDS_KEY)
    nested = vol.attrs.get("deepict")
    if ids is None and isinstance(nested, dict):
        ids = nested.get(CLASS_IDS_KEY)
    if ids is None:
        for side in (Path(str(path) + ".json"), Path(path).with_suffix(".json")):
            if side.is_file():
                try:
                    ids = json.loads(side.read_text()).get(CLASS_IDS_KEY)
                except (json.JSONDecodeError, AttributeError) as exc:
                    raise InputError(f"cannot read class ids: {exc}", side) from exc
                break
    if not isinstance(ids, dict):
        raise InputError("label volume has no class ids; give labels per class as {class: {path, values}}", path)
    return {str(k): int(v) for k, v in ids.items()}


# ------------------------------------------------------------------------------------------ tomograms


@dataclass
class Tomogram:
    """One (tomogram, per-class masks) pair ready for patch reads."""

    name: str
    image: xr.DataArray
    labels: dict[str, tuple[xr.DataArray, list[int] | None]]
    classes: list[str]
    mean: float = 0.0
    std: float = 1.0
    x_range: tuple[int, int] = (0, 0)
    objects: dict[str, np.ndarray] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int]:
        return spatial_shape(self.image)

    def read(self, origin: Sequence[int], size: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Normalised image (Z, Y, X) float32 and targets (C, Z, Y, X) uint8 at ``origin``."""
        sl = tuple(slice(int(o), int(o) + int(s)) for o, s in zip(origin, size))
        img = (read_block(self.image, sl).astype(np.float32) - self.mean) / self.std
        tgt = np.zeros((len(self.classes),) + tuple(int(s) for s in size), np.uint8)
        cache: dict[int, np.ndarray] = {}
        for c, name in enumerate(self.classes):
            vol, values = self.labels[name]
            key = id(vol)
            if key not in cache:
                cache[key] = read_block(vol, sl)
            lab = cache[key]
            tgt[c] = (lab != 0) if values is None else np.isin(lab, values)
        return img, tgt


def _labels_for(entry: TomogramEntry, classes: Sequence[str]) -> dict[str, tuple[xr.DataArray, list[int] | None]]:
    opened: dict[tuple[str, str | None], xr.DataArray] = {}

    def get(path: str, group: str | None = None) -> xr.DataArray:
        if (path, group) not in opened:
            opened[(path, group)] = open_array(path, group)
        return opened[(path, group)]

    out: dict[str, tuple[xr.DataArray, list[int] | None]] = {}
    if isinstance(entry.labels, str):
        vol = get(entry.labels)
        ids = class_ids_of(entry.labels, vol)
        missing = [c for c in classes if c not in ids]
        if missing:
            raise ConfigError(f"classes {missing} are not in the label volume's class ids {sorted(ids)}", entry.labels)
        return {c: (vol, [ids[c]]) for c in classes}
    missing = [c for c in classes if c not in entry.labels]
    if missing:
        raise ConfigError(f"labels for classes {missing} missing for tomogram {entry.tomogram}")
    for c in classes:
        src: LabelSource = entry.labels[c]  # type: ignore[assignment]
        out[c] = (get(src.path, src.group), src.values)
    return out


def _stats(image: xr.DataArray, path: str) -> tuple[float, float]:
    """Mean and std from a strided subsample (at most ~2 M voxels), computed chunk-wise by dask."""
    shape = spatial_shape(image)
    step = max(1, math.ceil((math.prod(shape) / 2e6) ** (1 / 3)))
    sub = image.data[::step, ::step, ::step].astype(np.float64)
    mean, std, finite = dask.compute(sub.mean(), sub.std(), da.isfinite(sub).all(), scheduler="threads")
    if not finite:
        raise InputError("tomogram contains NaN or infinite values", path)
    if not std > 0:
        raise InputError("tomogram is constant (zero variance): nothing to learn from", path)
    return float(mean), float(std)


def _scan_objects(tomo: Tomogram, limit: int, seed: int, slab: int = 16) -> None:
    """Stream the label volumes slab by slab; keep <= ``limit`` random foreground positions per class."""
    rng = np.random.default_rng([seed, 7])
    nz, ny, nx = tomo.shape
    x0, x1 = tomo.x_range
    per_class: dict[str, list[np.ndarray]] = {c: [] for c in tomo.classes}
    counts = dict.fromkeys(tomo.classes, 0)
    n_slabs = math.ceil(nz / slab)
    keep = max(1, math.ceil(2 * limit / n_slabs))
    for z0 in range(0, nz, slab):
        sl = (slice(z0, min(nz, z0 + slab)), slice(0, ny), slice(x0, x1))
        cache: dict[int, np.ndarray] = {}
        for c in tomo.classes:
            vol, values = tomo.labels[c]
            if id(vol) not in cache:
                cache[id(vol)] = read_block(vol, sl)
            lab = cache[id(vol)]
            mask = (lab != 0) if values is None else np.isin(lab, values)
            idx = np.flatnonzero(mask)
            counts[c] += int(idx.size)
            if idx.size:
                pick = rng.choice(idx, size=min(keep, idx.size), replace=False)
                zyx = np.stack(np.unravel_index(pick, mask.shape), axis=1)
                zyx[:, 0] += z0
                zyx[:, 2] += x0
                per_class[c].append(zyx)
    for c in tomo.classes:
        pts = np.concatenate(per_class[c]) if per_class[c] else np.zeros((0, 3), np.int64)
        if len(pts) > limit:
            pts = pts[rng.choice(len(pts), size=limit, replace=False)]
        tomo.objects[c] = pts
    tomo.counts = counts


def open_tomogram(entry: TomogramEntry, classes: Sequence[str], *, x_fraction: tuple[float, float] = (0.0, 1.0),
                  max_objects: int = 20000, seed: int = 0) -> Tomogram:
    """Open one pair, check shapes, compute normalisation and object positions (streaming)."""
    image = open_array(entry.tomogram)
    if image.ndim != 3:
        raise InputError(f"expected a 3D tomogram, got {image.ndim} dimensions", entry.tomogram)
    labels = _labels_for(entry, classes)
    shape = spatial_shape(image)
    for c, (vol, _) in labels.items():
        if vol.ndim != 3 or spatial_shape(vol) != shape:
            src = vol.attrs.get("source", c)
            raise InputError(f"label volume for class '{c}' has shape {tuple(vol.shape)}, the tomogram "
                             f"{entry.tomogram} has {shape}", src)
    mean, std = _stats(image, entry.tomogram)
    nx = shape[2]
    xr_ = (int(round(x_fraction[0] * nx)), int(round(x_fraction[1] * nx)))
    tomo = Tomogram(entry.name or Path(entry.tomogram).stem, image, labels, list(classes), mean, std, xr_)
    _scan_objects(tomo, max_objects, seed)
    if sum(tomo.counts.values()) == 0:
        raise InputError("label volume(s) are empty in the sampled region: no class has a single voxel",
                         entry.tomogram)
    return tomo


# ------------------------------------------------------------------------------------------ sampling


def _patch3d(size: Sequence[int], dim: int) -> tuple[int, int, int]:
    return (1, int(size[0]), int(size[1])) if dim == 2 else tuple(int(s) for s in size)  # type: ignore[return-value]


class PatchSampler:
    """Draws patch origins: object-centred (with jitter) or uniformly random, within each x range."""

    def __init__(self, tomos: Sequence[Tomogram], patch_size: Sequence[int], dim: int, object_fraction: float,
                 jitter: float = 0.25):
        self.tomos = list(tomos)
        self.size = _patch3d(patch_size, dim)
        self.dim = dim
        self.object_fraction = object_fraction
        self.jitter = jitter
        for t in self.tomos:
            for ax, (n, s) in enumerate(zip(t.shape, self.size)):
                extent = (t.x_range[1] - t.x_range[0]) if ax == 2 else n
                if s > extent:
                    raise ConfigError(f"data.patch_size {list(patch_size)} is larger than tomogram {t.name} "
                                      f"(shape {t.shape}, usable x range {extent})")

    def origin(self, rng: np.random.Generator) -> tuple[int, tuple[int, int, int]]:
        ti = int(rng.integers(len(self.tomos)))
        t = self.tomos[ti]
        lo = np.array([0, 0, t.x_range[0]])
        hi = np.array([t.shape[0], t.shape[1], t.x_range[1]]) - np.array(self.size)
        size = np.array(self.size)
        with_objects = [c for c in t.classes if len(t.objects.get(c, ()))]
        if with_objects and rng.random() < self.object_fraction:
            c = with_objects[int(rng.integers(len(with_objects)))]
            pts = t.objects[c]
            centre = pts[int(rng.integers(len(pts)))]
            shift = np.round(rng.uniform(-self.jitter, self.jitter, 3) * size).astype(int)
            o = centre - size // 2 + shift
        else:
            o = np.array([rng.integers(a, b + 1) for a, b in zip(lo, hi)])
        o = np.clip(o, lo, hi)
        return ti, tuple(int(v) for v in o)  # type: ignore[return-value]

    def batch(self, rng: np.random.Generator, n: int, aug: AugmentConfig | None) -> tuple[np.ndarray, np.ndarray]:
        imgs, tgts = [], []
        for _ in range(n):
            ti, o = self.origin(rng)
            img, tgt = self.tomos[ti].read(o, self.size)
            if self.dim == 2:
                img, tgt = img[0], tgt[:, 0]
            if aug is not None:
                img, tgt = augment(img, tgt, rng, aug, self.dim)
            imgs.append(img[None])
            tgts.append(tgt)
        return np.ascontiguousarray(np.stack(imgs)), np.ascontiguousarray(np.stack(tgts))


class BatchLoader:
    """Prepares batches ``start, start+1, ...`` in a thread pool, ``prefetch`` ahead, in order.

    ``wait_time`` accumulates how long the consumer blocked on ``next()`` (the model waiting for data).
    """

    def __init__(self, sampler: PatchSampler, batch_size: int, seed: int, aug: AugmentConfig | None,
                 workers: int = 2, prefetch: int = 4, start: int = 0):
        self.sampler, self.batch_size, self.seed, self.aug = sampler, batch_size, seed, aug
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="deepict-loader")
        self.pending: queue.Queue[Future] = queue.Queue()
        self.next_index = start
        self.prefetch = prefetch
        self.wait_time = 0.0
        self._lock = threading.Lock()
        for _ in range(prefetch):
            self._submit()

    def _make(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, k])
        return self.sampler.batch(rng, self.batch_size, self.aug)

    def _submit(self) -> None:
        with self._lock:
            self.pending.put(self.pool.submit(self._make, self.next_index))
            self.next_index += 1

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        return self

    def __next__(self) -> tuple[np.ndarray, np.ndarray]:
        fut = self.pending.get()
        t0 = time.perf_counter()
        out = fut.result()
        self.wait_time += time.perf_counter() - t0
        self._submit()
        return out

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def fixed_patches(sampler: PatchSampler, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A reproducible validation set of ``n`` patches (no augmentation)."""
    return sampler.batch(np.random.default_rng([seed, 10**9]), n, None)


@dataclass
class Dataset:
    train: list[Tomogram]
    validation: list[Tomogram]

    def summary(self) -> dict[str, Any]:
        def one(t: Tomogram) -> dict[str, Any]:
            return {"name": t.name, "shape": list(t.shape), "x_range": list(t.x_range),
                    "source": str(t.image.attrs.get("source", "")), "foreground_voxels": t.counts}

        return {"train": [one(t) for t in self.train], "validation": [one(t) for t in self.validation]}


def build_dataset(cfg: TrainConfig) -> Dataset:
    """Open all tomograms of ``cfg`` and split train / validation by tomogram.

    Without an explicit validation list, ``validation_fraction`` of the tomograms are held out
    (at least one); with a single tomogram the last ``validation_fraction`` of its x range is.
    """
    d = cfg.data
    classes = cfg.classes
    kw = {"max_objects": d.max_objects_per_class, "seed": cfg.training.seed}
    if d.validation:
        train = [open_tomogram(e, classes, **kw) for e in d.train]
        val = [open_tomogram(e, classes, **kw) for e in d.validation]
    elif len(d.train) == 1 or d.validation_fraction == 0:
        f = 1.0 - d.validation_fraction
        train = [open_tomogram(e, classes, x_fraction=(0.0, f) if len(d.train) == 1 else (0.0, 1.0), **kw)
                 for e in d.train]
        val = [open_tomogram(d.train[0], classes, x_fraction=(f, 1.0), **kw)] if d.validation_fraction > 0 else []
    else:
        n_val = max(1, int(round(d.validation_fraction * len(d.train))))
        train = [open_tomogram(e, classes, **kw) for e in d.train[:-n_val]]
        val = [open_tomogram(e, classes, **kw) for e in d.train[-n_val:]]
    totals = {c: sum(t.counts[c] for t in train) for c in classes}
    absent = [c for c, n in totals.items() if n == 0]
    if absent:
        raise ConfigError(f"classes {absent} have no labelled voxel in any training tomogram (check 'classes' "
                          "and the label values)")
    vs = {round(voxel_size_of(t.image)[2], 3) for t in train + val}
    if d.voxel_size is None and len(vs) > 1:
        raise InputError(f"training tomograms have different voxel sizes {sorted(vs)}; rescale them first")
    return Dataset(train, val)
