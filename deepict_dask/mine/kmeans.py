"""k-means on autoencoder codes, in bounded memory, plus helpers to choose k and assign new codes.

:func:`fit_kmeans` feeds scikit-learn's ``MiniBatchKMeans`` slice by slice from the codes array
(Zarr or NumPy) with ``partial_fit``, in an order shuffled by the seed, starting from k-means++
centres of a sample drawn from all slices, so a million codes of 32
numbers never need to be in memory at once and the result is reproducible. :func:`choose_k` reports
the Calinski-Harabasz index and the gap statistic for several k; they often disagree on cluster-rich
data such as tomograms, and neither decides k alone: look at the galleries of a few candidate k.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from deepict_dask.errors import ConfigError
from deepict_dask.io.atomic import atomic_path
from deepict_dask.mine.options import ChooseKOptions, ClusterOptions


def _slices(n: int, step: int) -> list[slice]:
    return [slice(i, min(n, i + step)) for i in range(0, n, step)]


def _read(codes: Any, sl: slice) -> np.ndarray:
    return np.asarray(codes[sl], dtype=np.float64)


def fit_kmeans(codes: Any, opts: ClusterOptions) -> Any:
    """A fitted ``MiniBatchKMeans`` of ``codes`` (N x d, any sliceable array), reproducible with ``opts.seed``.

    Raises :class:`ConfigError` when k exceeds the number of codes.
    """
    from sklearn.cluster import MiniBatchKMeans

    n = int(codes.shape[0])
    if opts.k > n:
        raise ConfigError(f"k = {opts.k} clusters is more than the {n} patches; choose k <= {n}")
    step = max(opts.batch_size, 3 * opts.k)  # partial_fit initialises from its first slice: it needs >= k codes
    parts = _slices(n, step)
    if len(parts) > 1 and parts[-1].stop - parts[-1].start < opts.k:
        parts[-2:] = [slice(parts[-2].start, parts[-1].stop)]  # no short last slice
    rng = np.random.default_rng(opts.seed)
    init = _initial_centres(codes, parts, opts.k, max(10 * opts.k, step), rng)
    km = MiniBatchKMeans(n_clusters=opts.k, random_state=opts.seed, batch_size=min(step, n), init=init, n_init=1,
                         reassignment_ratio=0.0)  # no re-seeding from one (possibly one-tomogram) slice
    for _ in range(opts.epochs):
        for i in rng.permutation(len(parts)):
            km.partial_fit(_read(codes, parts[i]))
    return km


def _initial_centres(codes: Any, parts: list[slice], k: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ centres of a random sample drawn from every slice (one pass, ``size`` codes kept).

    Stacks are ordered by tomogram and position, so the first slice alone is no fair sample.
    """
    from sklearn.cluster import kmeans_plusplus

    n = int(codes.shape[0])
    p = min(1.0, size / n)
    sample = []
    for sl in parts:
        x = _read(codes, sl)
        sample.append(x[rng.random(len(x)) < p])
    pool = np.concatenate(sample)
    if len(pool) < k:  # a sparse draw: fall back to the first codes, enough of them
        pool = _read(codes, slice(0, min(n, 3 * k)))
    centres, _ = kmeans_plusplus(pool, k, random_state=int(rng.integers(2**31)))
    return centres


def assign(codes: Any, centres: np.ndarray, step: int = 65536) -> np.ndarray:
    """Index of the nearest centre (Euclidean) of every code, slice by slice (int32)."""
    c = np.asarray(centres, dtype=np.float64)
    if c.ndim != 2 or int(codes.shape[1]) != c.shape[1]:
        raise ConfigError(f"codes have {codes.shape[1]} dimensions but the cluster centres {c.shape[-1]}")
    cc = (c**2).sum(1)
    out = np.empty(int(codes.shape[0]), np.int32)
    for sl in _slices(int(codes.shape[0]), step):
        x = _read(codes, sl)
        out[sl] = np.argmin(cc[None, :] - 2.0 * x @ c.T, axis=1)
    return out


def nearest_members(codes: Any, centres: np.ndarray, labels: np.ndarray, step: int = 65536) -> np.ndarray:
    """Per cluster, the index of its member closest to its centre (its most typical patch); -1 when empty."""
    c = np.asarray(centres, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    best = np.full(len(c), np.inf)
    index = np.full(len(c), -1, np.int64)
    for sl in _slices(int(codes.shape[0]), step):
        x = _read(codes, sl)
        lab = labels[sl]
        dist = ((x - c[lab]) ** 2).sum(1)
        order = np.lexsort((dist, lab))  # by cluster, then distance: the first of each cluster is its closest here
        first = order[np.r_[True, lab[order][1:] != lab[order][:-1]]]
        better = dist[first] < best[lab[first]]
        best[lab[first[better]]] = dist[first[better]]
        index[lab[first[better]]] = sl.start + first[better]
    return index


def write_clusters(codes: Any, opts: ClusterOptions, labels_path: str | os.PathLike,
                   centres_path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Cluster ``codes``; write the labels (a 1D Zarr array) and the centres/sizes (JSON), atomically.

    Returns ``(labels, centres)``.
    """
    import zarr

    km = fit_kmeans(codes, opts)
    centres = np.asarray(km.cluster_centers_, dtype=np.float64)
    labels = assign(codes, centres)
    sizes = np.bincount(labels, minlength=opts.k)
    with atomic_path(labels_path) as tmp:
        arr = zarr.create_array(str(tmp), shape=labels.shape, chunks=(min(len(labels), 1 << 20),), dtype="int32",
                                fill_value=-1, zarr_format=3)
        arr[:] = labels
    record = {"k": opts.k, "seed": opts.seed, "epochs": opts.epochs, "batch_size": opts.batch_size,
              "n_codes": int(len(labels)), "sizes": sizes.tolist(), "centres": centres.tolist()}
    with atomic_path(centres_path) as tmp:
        tmp.write_text(json.dumps(record))
    return labels, centres


def read_centres(path: str | os.PathLike) -> np.ndarray:
    """Cluster centres from a JSON file written by :func:`write_clusters`."""
    from deepict_dask.errors import InputError

    try:
        return np.asarray(json.loads(Path(path).read_text())["centres"], dtype=np.float64)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"not a cluster centres file ({exc})", path) from exc


def _within_dispersion(x: np.ndarray, labels: np.ndarray, centres: np.ndarray) -> float:
    return float(((x - centres[labels]) ** 2).sum())


def choose_k(codes: Any, opts: ChooseKOptions = ChooseKOptions()) -> pd.DataFrame:
    """Calinski-Harabasz index and gap statistic (Tibshirani et al. 2001) for each k in ``opts.ks``.

    Computed on a random sample of ``opts.sample`` codes. The gap compares log within-cluster
    dispersion with that of ``opts.references`` uniform sets in the codes' bounding box; its rule
    picks the smallest k with ``gap(k) >= gap(k') - sd(k')`` for the next k'. The two indices measure
    different things and often disagree on tomograms: neither decides k alone; compare the galleries.

    Returns
    -------
    A table with columns ``k, calinski_harabasz, gap, gap_sd, dispersion``.
    """
    from sklearn.cluster import MiniBatchKMeans
    from sklearn.metrics import calinski_harabasz_score

    n = int(codes.shape[0])
    rng = np.random.default_rng(opts.seed)
    idx = np.sort(rng.choice(n, size=min(n, opts.sample), replace=False))
    x = np.asarray(codes[idx] if isinstance(codes, np.ndarray) else codes.get_orthogonal_selection((idx,)),
                   dtype=np.float64)
    too_big = [k for k in opts.ks if k >= len(x)]
    if too_big:
        raise ConfigError(f"k = {too_big[0]} is not below the {len(x)} sampled codes; choose smaller k")
    lo, hi = x.min(0), x.max(0)
    refs = [rng.uniform(lo, hi, size=x.shape) for _ in range(opts.references)]
    rows = []
    for k in sorted(set(opts.ks)):
        km = MiniBatchKMeans(n_clusters=k, random_state=opts.seed, n_init=3).fit(x)
        w = _within_dispersion(x, km.labels_, km.cluster_centers_)
        ref_logs = []
        for r in refs:
            kr = MiniBatchKMeans(n_clusters=k, random_state=opts.seed, n_init=1).fit(r)
            ref_logs.append(np.log(_within_dispersion(r, kr.labels_, kr.cluster_centers_)))
        ref_logs = np.asarray(ref_logs)
        rows.append({"k": k, "calinski_harabasz": float(calinski_harabasz_score(x, km.labels_)),
                     "gap": float(ref_logs.mean() - np.log(w)),
                     "gap_sd": float(ref_logs.std() * np.sqrt(1 + 1 / len(refs))), "dispersion": w})
    return pd.DataFrame(rows)


def choose_k_png(scores: pd.DataFrame) -> bytes:
    """Both indices against k, side by side (PNG bytes)."""
    from matplotlib.figure import Figure

    from deepict_dask.evaluate.plots import figure_png as _png

    fig = Figure(figsize=(9, 3.4))
    a, b = fig.subplots(1, 2)
    a.plot(scores["k"], scores["calinski_harabasz"], "o-")
    a.set_xlabel("k")
    a.set_title("Calinski-Harabasz (higher: denser, better separated)")
    b.errorbar(scores["k"], scores["gap"], yerr=scores["gap_sd"], fmt="o-")
    b.set_xlabel("k")
    b.set_title("gap statistic")
    for ax in (a, b):
        ax.grid(alpha=0.3)
    return _png(fig)


def write_choose_k(codes: Any, opts: ChooseKOptions, table: str | os.PathLike, png: str | os.PathLike | None) -> pd.DataFrame:
    """:func:`choose_k`, its table written as CSV and its plot as PNG (both atomically)."""
    scores = choose_k(codes, opts)
    with atomic_path(table) as tmp:
        scores.to_csv(tmp, index=False)
    if png is not None:
        data = choose_k_png(scores)
        with atomic_path(png) as tmp:
            tmp.write_bytes(data)
    return scores


def cluster_sizes(labels: Sequence[int] | np.ndarray, k: int) -> np.ndarray:
    return np.bincount(np.asarray(labels, dtype=np.int64), minlength=k)
