"""Measure the feature-mining targets (issue 20) on two simulated cell tomograms with known truth.

    python examples/evaluate_mine.py [--shape 96 192 192] [--seeds 301 302] [--out mine_eval]

Tomogram A trains, tomogram B is the held-out one, as in the paper's test on a second tomogram:

1. Both tomograms are simulated (``cell`` content, the demo's voxel size); patch centres are DoG
   peaks with the published settings (Gaussian sigma 2, DoG sigma 5, K 1.1, peaks 10 voxels apart),
   patches 32^3. The truth class of a patch is the class of the object at its centre (the most
   frequent particle/filament class id within ``--truth-radius`` voxels), else ``membrane`` when the
   membrane mask touches that ball, else ``background``.
2. The autoencoder is trained on A's patches only (``train_autoencoder``; time-capped on a CPU),
   both stacks are encoded (``--codes``: the autoencoder's codes, the published method, or the
   rotation-invariant descriptors of ``deepict mine encode --codes invariant``, z-scored with A's
   statistics); k-means (k = 100) is fitted on A's codes and B's codes are assigned to the nearest
   centre (the paper's filtering of a new tomogram, issue step 8). ``--more-held-out SEED...``
   scores the clusters on further simulated tomograms the same way.
3. Cluster quality on B: the fraction of patches whose cluster's majority truth class is their own
   (majority taken over B's patches of the cluster, and, stricter, over A's, as a user who labelled
   the clusters on A would), per class the patch-weighted purity of the clusters its patches land in,
   and the adjusted Rand index against the truth classes.
4. A simulated user selects, on A, every cluster whose purity for ``ribosome`` or ``membrane`` is
   >= ``--user-purity``; the autoencoder's reconstructions of those patches give weak labels (dark
   polarity; with either kind of codes);
   EDSS3D is trained on them with random crops, run over B through the inference engine
   (``predict_file``, what ``deepict predict`` runs), ribosomes are picked (``deepict_dask.pick``)
   and scored against the truth table (``evaluate_picks``, tolerance 6 voxels as the demo), the
   membrane channel (probability >= 0.5) is scored voxel-wise (``mask_metrics``); both also at the
   probability threshold that scores best on A (``--tune-thresholds``; B's truth chooses nothing).
5. Why membranes fall short, measured: every membrane figure is also split by the missing wedge
   (:func:`wedge_retained`: membranes the simulated tilt range never recorded are in the truth but not
   in the tomogram), and ``--true-label-reference`` trains EDSS3D on the same selected patches with
   their true masks: what the weak labels cost.

Everything goes to ``--out``: ``results.json`` (every figure, the settings and the times),
``report.md`` (the same as a short table) and the intermediate files (mining directories, models,
predictions), so a second run resumes from the simulated tomograms.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

USER_CLASSES = ("ribosome", "membrane")
PAPER = {"train_s_per_patch_epoch": 0.013, "encode_s_per_patch": 0.0012, "decode_s_per_patch": 0.0023}
TARGETS = {"majority_accuracy_B": 0.8, "purity_ribosome_B": 0.8, "purity_membrane_B": 0.8,
           "ribosome_pick_f1": 0.7, "membrane_voxel_f1": 0.6}


def simulate(data: Path, seed: int, shape: tuple[int, int, int], voxel_size: float) -> dict[str, Path]:
    """Simulate and write one cell tomogram unless it is already there; returns its file paths."""
    from deepict_dask.simulate import output_paths, simulate_tomogram, write_simulation

    name = f"sim_{seed:04d}"
    paths = output_paths(data, name)
    if not paths["meta"].exists():
        sim = simulate_tomogram(shape, voxel_size, seed=seed, preset="cell", name=name)
        write_simulation(sim, data, name=name)
    return paths


def prefiltered(tomo: Path, out_dir: Path, sigma: float) -> Path:
    """A Gaussian low-passed copy of ``tomo`` (same name, so tables still match), kept when there."""
    from scipy import ndimage

    from deepict_dask.io import open_volume, write_mrc
    from deepict_dask.io.volume import make_volume, voxel_size_of

    path = out_dir / tomo.name
    if not path.exists():
        vol = open_volume(tomo)
        data = ndimage.gaussian_filter(np.asarray(vol.data, np.float32), sigma)
        write_mrc(make_volume(data, voxel_size=voxel_size_of(vol)), path)
    return path


def truth_classes(patches: pd.DataFrame, paths: dict[str, Path], radius: int) -> np.ndarray:
    """Truth class name of every patch: the object at its centre, else membrane, else background."""
    from deepict_dask.io import open_volume

    meta = json.loads(paths["meta"].read_text())
    names = {int(v): k for k, v in meta["class_ids"].items()}
    classes = np.asarray(open_volume(paths["labels"]).data)
    membrane = np.asarray(open_volume(paths["membrane"]).data) > 0
    r = int(radius)
    off = np.stack(np.meshgrid(*[np.arange(-r, r + 1)] * 3, indexing="ij"), -1).reshape(-1, 3)
    off = off[(off**2).sum(1) <= r * r]
    out = []
    for zyx in np.rint(patches[["z", "y", "x"]].to_numpy(float)).astype(int):
        pts = np.clip(zyx + off, 0, np.asarray(classes.shape) - 1)
        ids = classes[tuple(pts.T)]
        ids = ids[ids > 0]
        if len(ids):
            out.append(names.get(int(Counter(ids.tolist()).most_common(1)[0][0]), "other"))
        elif membrane[tuple(pts.T)].any():
            out.append("membrane")
        else:
            out.append("background")
    return np.asarray(out, dtype=object)


HIDDEN_BELOW = 0.25  # a membrane keeping less of its local signal than this is "in the missing wedge"


def wedge_retained(paths: dict[str, Path]) -> np.ndarray:
    """Per voxel, the share of the membranes' local signal energy the simulated tilt range keeps.

    The simulation (``imaging_params``) measures no Fourier component inside its missing wedge, so a
    membrane whose normal points into the wedge (roughly along the beam) is not in the tomogram at all,
    although the truth mask has it. The membrane mask (lightly smoothed) is passed through the
    simulation's own wedge; the ratio of the local energies after and before (Gaussian window, sigma 2
    voxels) is near 1 for a membrane seen edge-on and near 0 for one lying across the beam. Only
    meaningful on membrane voxels. All ones when the simulation has no missing wedge.
    """
    from scipy import ndimage

    from deepict_dask.io import open_volume
    from deepict_dask.simulate.imaging import ImagingParams, wedge_mask

    meta = json.loads(paths["meta"].read_text())
    given = meta.get("params", {}).get("imaging_params", {})
    params = ImagingParams(**{k: v for k, v in given.items() if k in ImagingParams.__dataclass_fields__})
    mask = np.asarray(open_volume(paths["membrane"]).data) > 0
    if not params.missing_wedge or not mask.any():
        return np.ones(mask.shape, np.float32)
    m = ndimage.gaussian_filter(mask.astype(np.float32), 1.0)
    m -= m.mean()
    kept = np.fft.irfftn(np.fft.rfftn(m) * wedge_mask(m.shape, float(meta["voxel_size"]), params),
                         s=m.shape, axes=(0, 1, 2)).astype(np.float32)
    before = ndimage.gaussian_filter(m * m, 2.0)
    after = ndimage.gaussian_filter(kept * kept, 2.0)
    return (after / np.maximum(before, 1e-12)).astype(np.float32)


def hidden_membrane_patches(patches: pd.DataFrame, truth: np.ndarray, paths: dict[str, Path], radius: int,
                            retained: np.ndarray) -> np.ndarray:
    """Which ``membrane`` patches have their membrane in the missing wedge: the median retained signal
    (:func:`wedge_retained`) over the membrane voxels of the truth ball is below :data:`HIDDEN_BELOW`."""
    from deepict_dask.io import open_volume

    membrane = np.asarray(open_volume(paths["membrane"]).data) > 0
    r = int(radius)
    off = np.stack(np.meshgrid(*[np.arange(-r, r + 1)] * 3, indexing="ij"), -1).reshape(-1, 3)
    off = off[(off**2).sum(1) <= r * r]
    zyx = np.rint(patches[["z", "y", "x"]].to_numpy(float)).astype(int)
    hidden = np.zeros(len(truth), bool)
    for i in np.flatnonzero(truth == "membrane"):
        pts = tuple(np.clip(zyx[i] + off, 0, np.asarray(membrane.shape) - 1).T)
        on = membrane[pts]
        hidden[i] = bool(on.any()) and float(np.median(retained[pts][on])) < HIDDEN_BELOW
    return hidden


def membrane_wedge_purity(clusters: np.ndarray, truth: np.ndarray, hidden: np.ndarray, k: int) -> dict[str, Any]:
    """Membrane purity split by whether the patch's membrane is in the missing wedge: the image-based
    clusters can only find membranes the tomogram shows."""
    table = cluster_table(clusters, truth, k)
    share = (table["membrane"] / table["size"].clip(lower=1)).reindex(clusters).to_numpy() \
        if "membrane" in table else np.zeros(len(clusters))
    mem = truth == "membrane"

    def mean(sel: np.ndarray) -> float | None:
        return round(float(share[sel].mean()), 4) if sel.any() else None

    return {"membrane_patches": int(mem.sum()), "hidden": int(hidden.sum()),
            "hidden_share": round(float(hidden.sum() / max(1, mem.sum())), 4),
            "purity_visible": mean(mem & ~hidden), "purity_hidden": mean(hidden), "purity_all": mean(mem)}


def cluster_table(clusters: np.ndarray, truth: np.ndarray, k: int) -> pd.DataFrame:
    """One row per cluster: size, majority class, its purity, and the count of every class."""
    df = pd.crosstab(pd.Series(clusters, name="cluster"), pd.Series(truth, name="class"))
    df = df.reindex(range(k), fill_value=0)
    size = df.sum(axis=1)
    out = pd.DataFrame({"size": size, "majority": df.idxmax(axis=1).where(size > 0, ""),
                        "purity": (df.max(axis=1) / size.clip(lower=1)).round(4)})
    return pd.concat([out, df], axis=1)


def cluster_scores(clusters: np.ndarray, truth: np.ndarray, k: int, majority_of: pd.Series | None = None) -> dict[str, Any]:
    """Majority accuracy, per-class purity of the clusters each class lands in, ARI, class counts.

    ``majority_of``: the cluster -> majority class to use (default: the majority among these patches).
    """
    from sklearn.metrics import adjusted_rand_score

    table = cluster_table(clusters, truth, k)
    major = table["majority"] if majority_of is None else majority_of
    own = np.asarray(major.reindex(clusters).to_numpy(), dtype=object) == truth
    classes = sorted(set(truth.tolist()))
    frac = {c: (table[c] / table["size"].clip(lower=1)) for c in classes}
    purity = {c: round(float(frac[c].reindex(clusters[truth == c]).mean()), 4) for c in classes}
    return {"patches": int(len(truth)), "majority_accuracy": round(float(own.mean()), 4),
            "class_purity": purity, "class_counts": {c: int((truth == c).sum()) for c in classes},
            "adjusted_rand_index": round(float(adjusted_rand_score(truth, clusters)), 4),
            "clusters_used": int((table["size"] > 0).sum())}


def select_clusters(table: pd.DataFrame, min_purity: float) -> dict[str, list[int]]:
    """The simulated user: a cluster goes to a class when that class makes up >= ``min_purity`` of it
    (to the class with the larger share when two qualify, as a cluster can name one class only)."""
    present = [c for c in USER_CLASSES if c in table]
    if not present:
        return {}
    frac = table[present].div(table["size"].clip(lower=1), axis=0)
    best = frac.idxmax(axis=1)
    ok = (frac.max(axis=1) >= min_purity) & (table["size"] > 0)
    sel = {c: [int(i) for i in table.index[ok & (best == c)]] for c in present}
    return {c: ids for c, ids in sel.items() if ids}


def select_background(table: pd.DataFrame, min_purity: float, n: int) -> list[int]:
    """The simulated user's negative examples: up to ``n`` of the largest clusters that are at least
    ``min_purity`` background (``background`` in the selection: patches with every voxel background)."""
    if n <= 0 or "background" not in table:
        return []
    frac = table["background"] / table["size"].clip(lower=1)
    ok = table[(frac >= min_purity) & (table["size"] > 0)]
    return [int(i) for i in ok.sort_values("size", ascending=False).index[:n]]


def top_clusters(table: pd.DataFrame, n: int = 5) -> dict[str, list[dict[str, Any]]]:
    """Per user class, the ``n`` clusters with the largest share of it: why a selection is (not) made."""
    out = {}
    for c in USER_CLASSES:
        if c not in table:
            continue
        share = (table[c] / table["size"].clip(lower=1)).sort_values(ascending=False).head(n)
        out[c] = [{"cluster": int(i), "size": int(table.loc[i, "size"]), "share": round(float(v), 3),
                   "majority": str(table.loc[i, "majority"])} for i, v in share.items()]
    return out


def references(layouts: dict, truth: dict[str, np.ndarray], k: int, seed: int,
               other_codes: dict[str, np.ndarray] | None = None, other_name: str = "") -> dict[str, Any]:
    """What these patches allow, to read the cluster figures against (none of it is the method):

    - ``knn_codes``: a supervised k-nearest-neighbour classifier (10 neighbours) on the codes,
      *given A's truth*, scored on B: how separable the classes are in the code space at all;
    - ``knn_patches``: the same on a 32-component PCA of the (low-passed) patch voxels;
    - ``pca_kmeans``: the cluster scores on B when the codes are replaced by that PCA (k-means fitted
      on A, B assigned), an unsupervised linear baseline;
    - ``<other_name>_kmeans`` and ``knn_<other_name>``: the same with the other kind of codes (the
      autoencoder's when the run's codes are invariant, and the other way round), so one run compares both.
    """
    import zarr
    from sklearn.decomposition import PCA
    from sklearn.neighbors import KNeighborsClassifier

    from deepict_dask.mine.kmeans import assign, fit_kmeans
    from deepict_dask.mine.options import ClusterOptions

    def knn(a: np.ndarray, b: np.ndarray) -> float:
        clf = KNeighborsClassifier(min(10, len(a))).fit(a, truth["A"])
        return round(float((clf.predict(b) == truth["B"]).mean()), 4)

    def kmeans_scores(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
        km = fit_kmeans(a, ClusterOptions(k=k, seed=seed))
        return cluster_scores(assign(b, km.cluster_centers_), truth["B"], k)

    codes = {key: np.asarray(zarr.open_array(str(layouts[key].codes), mode="r")[:]) for key in "AB"}
    flat = {key: np.asarray(zarr.open_array(str(layouts[key].patches), mode="r")[:]).reshape(len(truth[key]), -1)
            for key in "AB"}
    pca = PCA(min(32, *flat["A"].shape), random_state=seed).fit(flat["A"])
    proj = {key: pca.transform(flat[key]).astype(np.float32) for key in "AB"}
    out = {"knn_codes": knn(codes["A"], codes["B"]), "knn_patches": knn(proj["A"], proj["B"]),
           "pca_kmeans": kmeans_scores(proj["A"], proj["B"])}
    if other_codes is not None:
        out[f"knn_{other_name}"] = knn(other_codes["A"], other_codes["B"])
        out[f"{other_name}_kmeans"] = kmeans_scores(other_codes["A"], other_codes["B"])
    out["background_share_B"] = round(float((truth["B"] == "background").mean()), 4)
    return out


def autoencoder_codes(model: Path, layouts: dict) -> dict[str, np.ndarray]:
    """The autoencoder's codes of A's and B's patches, in memory (when the run's own codes are invariant)."""
    import zarr

    from deepict_dask.mine import EncodeOptions
    from deepict_dask.mine.encode import encode_array, encoder_ref

    ref = encoder_ref(model, EncodeOptions(device="cpu"))
    return {key: encode_array(ref, np.asarray(zarr.open_array(str(layouts[key].patches), mode="r")[:]))
            for key in "AB"}


def invariant_codes(layouts: dict) -> dict[str, np.ndarray]:
    """Invariant codes of A's and B's patches (B scaled with A's statistics), as ``deepict mine encode
    --codes invariant`` writes them, read into memory (when the run's own codes are the autoencoder's)."""
    import tempfile

    import zarr

    from deepict_dask.mine import EncodeOptions
    from deepict_dask.mine.api import described_source
    from deepict_dask.mine.encode import invariant_scaling, write_invariant_codes

    sigma = EncodeOptions().invariant_lowpass  # unfiltered patches, as the command does by default
    with tempfile.TemporaryDirectory(prefix="invariant-") as tmp:
        out = {key: Path(tmp) / f"{key}.zarr" for key in "AB"}
        write_invariant_codes(described_source(layouts["A"], sigma), out["A"])
        write_invariant_codes(described_source(layouts["B"], sigma), out["B"], scaling=invariant_scaling(out["A"]))
        return {key: np.asarray(zarr.open_array(str(path), mode="r")[:]) for key, path in out.items()}


def supervised_cnn(layouts: dict, truth: dict[str, np.ndarray], epochs: int, seed: int, crop: int = 24,
                   threads: int | None = None) -> dict[str, Any]:
    """A supervised reference: a small 3D CNN classifier trained *with A's truth classes* on the centre
    ``crop`` of A's patches (random flips; 10 % of A held out chooses the epoch), scored on B. What a
    network told the answers reaches on these patches bounds what clusters found without them can.
    """
    import torch
    import zarr
    from torch import nn

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    classes = sorted(set(truth["A"].tolist()) | set(truth["B"].tolist()))
    index = {c: i for i, c in enumerate(classes)}
    edge = int(min(zarr.open_array(str(layouts["A"].patches), mode="r").shape[1:]))
    crop = min(crop, edge)
    a = (edge - crop) // 2
    x, y = {}, {}
    for key in "AB":
        stack = np.asarray(zarr.open_array(str(layouts[key].patches), mode="r")[:])
        x[key] = torch.from_numpy(np.ascontiguousarray(stack[:, None, a:a + crop, a:a + crop, a:a + crop]))
        y[key] = torch.tensor([index[c] for c in truth[key]])
    order = rng.permutation(len(y["A"]))
    held, train = order[: max(1, len(order) // 10)], order[max(1, len(order) // 10):]

    def block(i: int, o: int) -> nn.Module:
        return nn.Sequential(nn.Conv3d(i, o, 3, padding=1), nn.BatchNorm3d(o), nn.ReLU(),
                             nn.Conv3d(o, o, 3, padding=1), nn.BatchNorm3d(o), nn.ReLU(), nn.MaxPool3d(2))

    net = nn.Sequential(block(1, 16), block(16, 32), block(32, 64), nn.AdaptiveAvgPool3d(1), nn.Flatten(),
                        nn.Dropout(0.3), nn.Linear(64, len(classes)))
    opt = torch.optim.Adam(net.parameters(), 1e-3, weight_decay=1e-4)

    def predict(inputs: torch.Tensor) -> torch.Tensor:
        net.eval()
        with torch.no_grad():
            return torch.cat([net(inputs[i:i + 128]).argmax(1) for i in range(0, len(inputs), 128)])

    best = (-1.0, 0, None)
    for epoch in range(epochs):
        net.train()
        perm = rng.permutation(train)
        for i in range(0, len(perm), 32):
            idx = torch.from_numpy(perm[i:i + 32])
            xb = x["A"][idx]
            for dim in (2, 3, 4):
                if rng.random() < 0.5:
                    xb = xb.flip(dim)
            loss = nn.functional.cross_entropy(net(xb), y["A"][idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        acc = float((predict(x["A"][held]) == y["A"][held]).float().mean())
        if acc > best[0]:
            best = (acc, epoch + 1, predict(x["B"]))
    pred = best[2]
    recall = {c: round(float((pred[y["B"] == i] == i).float().mean()), 4) for c, i in index.items() if (y["B"] == i).any()}
    return {"accuracy_B": round(float((pred == y["B"]).float().mean()), 4), "held_out_accuracy_A": round(best[0], 4),
            "epoch": best[1], "epochs": epochs, "crop": crop, "recall_B": recall}


def weak_label_sweep(decode, patches: Any, cluster_labels: np.ndarray, selection: dict[str, list[int]],
                     truth: PatchTruth, thresholds: tuple[float, ...] = (0.3, 0.4, 0.5)) -> dict[str, Any]:
    """Voxel precision/recall/F1 of the weak labels of each selected class against the truth, at other
    thresholds of the decoded images than the published 0.5: whether any threshold gives labels worth
    learning."""
    import zarr

    from deepict_dask.mine.labels import weak_masks

    stack = zarr.open_array(str(patches), mode="r")
    out: dict[str, Any] = {}
    for c in USER_CLASSES:
        rows = np.flatnonzero(np.isin(cluster_labels, selection.get(c, [])))
        if not len(rows):
            continue
        dec = decode(np.asarray(stack.get_orthogonal_selection((rows,))))
        shape = np.asarray(dec.shape[1:])
        t = np.stack([truth.mask(c, src, shape) for src in rows])
        out[c] = {}
        for thr in thresholds:
            m = weak_masks(dec, thr, "dark")
            tp, fp, fn = int((m & t).sum()), int((m & ~t).sum()), int((~m & t).sum())
            out[c][str(thr)] = {"precision": round(tp / max(1, tp + fp), 4), "recall": round(tp / max(1, tp + fn), 4),
                                "voxel_f1": round(2 * tp / max(1, 2 * tp + fp + fn), 4)}
    return out


def decoder(model: Path):
    """Patches (n, Z, Y, X) -> the autoencoder's reconstructions (n, Z, Y, X), for the weak labels."""
    import torch

    from deepict_dask.mine.encode import load_autoencoder

    net, _ = load_autoencoder(str(model), "cpu")

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return net(torch.from_numpy(np.ascontiguousarray(batch[:, None], np.float32)))[:, 0].numpy()

    return run


class PatchTruth:
    """The true mask of a class inside a patch of tomogram A: the simulation's class-label volume (or,
    for ``membrane``, its membrane mask), read once and shared by both weak-label scores."""

    def __init__(self, paths: dict[str, Path], patch_table: pd.DataFrame):
        from deepict_dask.io import open_volume

        self.ids = json.loads(paths["meta"].read_text())["class_ids"]
        self.classes = np.asarray(open_volume(paths["labels"]).data)
        self.membrane = np.asarray(open_volume(paths["membrane"]).data) > 0
        self.table = patch_table

    def mask(self, cls: str, src: int, shape: np.ndarray) -> np.ndarray:
        zyx = np.rint(self.table.loc[src, ["z", "y", "x"]].to_numpy(float)).astype(int)
        sl = tuple(slice(int(a), int(a) + int(n)) for a, n in zip(zyx - shape // 2, shape))
        return self.membrane[sl] if cls == "membrane" else self.classes[sl] == self.ids[cls]


def weak_label_quality(weak_dir: Path, truth: PatchTruth, classes: list[str]) -> dict:
    """Voxel F1 of the weak labels against the true masks inside the labelled patches, per class."""
    import zarr

    meta = json.loads((weak_dir / "classes.json").read_text())
    labels = zarr.open_array(str(weak_dir / "labels.zarr"), mode="r")
    shape = np.asarray(labels.shape[1:])
    counts = {c: [0, 0, 0] for c in classes}
    for row, src in enumerate(meta["patch_index"]):
        lab = np.asarray(labels[row])
        for i, c in enumerate(classes):
            if not (lab == i + 1).any():
                continue
            t = truth.mask(c, src, shape)
            p = lab == i + 1
            counts[c][0] += int((p & t).sum())
            counts[c][1] += int((p & ~t).sum())
            counts[c][2] += int((~p & t).sum())
    return {c: {"voxel_f1": round(2 * tp / max(1, 2 * tp + fp + fn), 4), "precision": round(tp / max(1, tp + fp), 4),
                "recall": round(tp / max(1, tp + fn), 4)} for c, (tp, fp, fn) in counts.items()}


def ribosome_picking(store: Path, group: str, truth_table: Path, name: str, voxel_size: float,
                     radius_frac: float, threshold: float = 0.5) -> dict[str, Any]:
    """Pick ribosomes in the predicted map and score them against the truth (6 voxels tolerance)."""
    from deepict_dask.evaluate.picking import evaluate_picks
    from deepict_dask.io.coords import read_table
    from deepict_dask.pick import PickOptions, pick
    from deepict_dask.simulate.shapes import class_radius
    from deepict_dask.units import Length

    radius = class_radius("ribosome") * radius_frac
    options = PickOptions(threshold=threshold, radius=Length(round(radius, 1), "A"))
    res = pick(store, options, group=group, classes=["ribosome"], tomo=name)
    truth = read_table(truth_table)
    truth = truth[truth["class"] == "ribosome"]
    picks = res.table[res.table["class"] == "ribosome"]
    ev = evaluate_picks(picks, truth, 6 * voxel_size, unit="A", tomograms="truth", by_class=False)
    m = ev.metrics
    return {"threshold": threshold, "radius_A": round(radius, 1), "picked": int(len(picks)), "truth": int(len(truth)),
            **{k: (round(float(m[k]), 4) if isinstance(m.get(k), float) else m.get(k))
               for k in ("tp", "fp", "fn", "precision", "recall", "f1")}}


def membrane_voxels(store: Path, group: str, paths: dict[str, Path], threshold: float = 0.5,
                    retained: np.ndarray | None = None) -> dict[str, Any]:
    """Voxel F1 of the predicted membrane channel (probability >= ``threshold``) against the membrane mask.

    With ``retained`` (:func:`wedge_retained`), also ``by_wedge``: recall on the membrane voxels the
    missing wedge hides (retained signal < :data:`HIDDEN_BELOW`) and on the others, recall per band of
    retained signal, and the F1 with the hidden membranes (and 2 voxels around them) left out of the
    scoring, i.e. against the membranes the tomogram shows.
    """
    from scipy import ndimage

    from deepict_dask.evaluate.segmentation import mask_metrics
    from deepict_dask.io import open_volume
    from deepict_dask.pick.threshold import probability_scale

    prob = open_volume(store, group=group)
    scale = probability_scale(prob.dtype, prob.attrs)
    mask = (np.asarray(prob.sel(c="membrane").data, np.float32) / scale >= threshold).astype(np.uint8)
    truth = (np.asarray(open_volume(paths["membrane"]).data) > 0).astype(np.uint8)
    m = mask_metrics(mask, truth, labels=[1])
    res = {"threshold": threshold, **{k: round(float(m[k]), 4) for k in ("precision", "recall", "f1", "iou")}}
    if retained is not None:
        on, pred = truth > 0, mask > 0
        hidden = on & (retained < HIDDEN_BELOW)
        seen = on & ~hidden
        ignore = ndimage.binary_dilation(hidden, iterations=2) & ~seen
        tp, fn = int((pred & seen).sum()), int((~pred & seen).sum())
        fp = int((pred & ~on & ~ignore).sum())
        bands = [0.0, 0.1, 0.25, 0.5, 0.75, np.inf]
        recall = {f"{lo:g}-{hi:g}": {"share": round(float(s.sum() / on.sum()), 4), "recall": round(float(pred[s].mean()), 4)}
                  for lo, hi in zip(bands[:-1], bands[1:])
                  if (s := on & (retained >= lo) & (retained < hi)).any()}
        res["by_wedge"] = {"hidden_share": round(float(hidden.sum() / max(1, on.sum())), 4),
                           "recall_hidden": round(float(pred[hidden].mean()), 4) if hidden.any() else None,
                           "recall_visible": round(tp / max(1, tp + fn), 4),
                           "precision_visible": round(tp / max(1, tp + fp), 4),
                           "f1_visible": round(2 * tp / max(1, 2 * tp + fp + fn), 4),
                           "recall_by_retained_signal": recall}
    return res


def score_segmentation(args: argparse.Namespace, out: Path, paths: dict, source: dict, model: Path,
                       classes: list[str], retained_b: np.ndarray | None = None,
                       predict_dir: str = "predict") -> tuple[dict[str, Any], dict[str, float]]:
    """Predict A and B with EDSS3D (the ``deepict predict`` engine) into ``out/predict_dir``; score B at
    threshold 0.5 and at the thresholds that score best on A (the training tomogram: tuning on it never
    looks at B's truth). ``retained_b``: B's :func:`wedge_retained`, to split the membrane figures."""
    from deepict_dask.inference import PredictOptions, make_ref, predict_file

    opts = PredictOptions(device="cpu", window=args.window, threads=args.threads)
    ref = make_ref(model, opts)
    res: dict[str, Any] = {}
    times: dict[str, float] = {}
    where = {}
    for key in "AB":
        t = time.perf_counter()
        group = Path(str(predict_file(source[key], ref, out / predict_dir, opts, overwrite=True)))
        times[f"predict_{key}_s"] = time.perf_counter() - t
        where[key] = (group.parent.parent, f"predictions/{group.name}")
    vs = float(args.voxel_size)
    grid = [float(g) for g in args.tune_thresholds]
    if "ribosome" in classes:
        def rib(key: str, thr: float) -> dict[str, Any]:
            return ribosome_picking(*where[key], paths[key]["table"], f"sim_{args.seeds['AB'.index(key)]:04d}", vs,
                                    args.pick_radius, thr)

        sweep = {thr: rib("A", thr) for thr in grid}
        best = max(grid, key=lambda thr: sweep[thr]["f1"] or 0.0)
        res["ribosome_picking"] = rib("B", 0.5)
        res["ribosome_picking_tuned_on_A"] = {**rib("B", best), "sweep_A_f1": {str(k): v["f1"] for k, v in sweep.items()}}
    if "membrane" in classes:
        sweep = {thr: membrane_voxels(*where["A"], paths["A"], thr) for thr in grid}
        best = max(grid, key=lambda thr: sweep[thr]["f1"])
        res["membrane_voxels"] = membrane_voxels(*where["B"], paths["B"], 0.5, retained_b)
        res["membrane_voxels_tuned_on_A"] = {**membrane_voxels(*where["B"], paths["B"], best, retained_b),
                                             "sweep_A_f1": {str(k): v["f1"] for k, v in sweep.items()}}
    return res, times


def true_label_reference(args: argparse.Namespace, out: Path, paths: dict, source: dict, weak, truth_a: PatchTruth,
                         total: int, retained_b: np.ndarray) -> dict[str, Any]:
    """A reference for the weak-supervision figures (not the method): EDSS3D trained exactly as the
    method's, on the same selected patches, but with their *true* masks (every selected class in every
    patch) instead of the decoded-image weak labels, then scored on B the same way. What perfect labels of
    these patches give, so the gap to the method's figures is what the weak labels cost."""
    import zarr

    from deepict_dask.io.atomic import atomic_path
    from deepict_dask.train.patch_stack import train_edss3d

    meta = json.loads((weak.out / "classes.json").read_text())
    weak_labels = zarr.open_array(str(weak.labels), mode="r")
    shape = np.asarray(weak_labels.shape[1:])
    path = out / "true_labels.zarr"
    with atomic_path(path, overwrite=True) as tmp:
        lz = zarr.create_array(str(tmp), shape=weak_labels.shape, dtype="uint8", chunks=weak_labels.chunks)
        for row, src in enumerate(meta["patch_index"]):
            lab = np.zeros(tuple(shape), np.uint8)
            for i, c in enumerate(weak.classes):
                lab[truth_a.mask(c, src, shape)] = i + 1
            lz[row] = lab
    edss = train_edss3d(weak.patches, path, weak.classes, out / "edss_true_labels_run", edss_options(args, total))
    scores, _ = score_segmentation(args, out, paths, source, edss.model_path, weak.classes, retained_b,
                                   predict_dir="predict_true_labels")
    return {"steps": edss.steps, "time_budget_reached": edss.time_budget_reached, **scores}


def train_options(args: argparse.Namespace, voxel_size: float, **kw: Any):
    from deepict_dask.train.patch_stack import StackTrainOptions

    return StackTrainOptions(device="cpu", threads=args.threads, voxel_size=voxel_size, seed=args.seed, **kw)


def edss_options(args: argparse.Namespace, total: int):
    """EDSS3D's training options for ``total`` labelled patches (the batch no larger than the training split)."""
    return train_options(args, float(args.voxel_size), max_epochs=args.edss_epochs, patience=args.edss_patience,
                         max_minutes=args.edss_minutes, crop=[args.crop] * 3,
                         batch_size=min(args.edss_batch, max(2, total - max(1, round(0.1 * total)))))


def mine_tomogram(tomo: Path, layout, patch: int, max_peaks: int | None, lowpass: float) -> pd.DataFrame:
    """DoG centres of ``tomo`` (published settings) and the patch stack cut from it, low-passed per patch
    with sigma ``lowpass`` (the values of the low-passed copy ``prefiltered`` writes); kept when already there."""
    from deepict_dask.io.coords import read_table
    from deepict_dask.mine import CentreOptions, PatchOptions, extract_patches, find_centres

    if layout.patches_table.exists() and layout.patches.exists():
        return read_table(layout.patches_table)
    centres = find_centres([tomo], CentreOptions(max_peaks=max_peaks), out=layout.centres)
    return extract_patches([tomo], centres, layout, PatchOptions(patch_shape=(patch,) * 3, chunk=128,
                                                                 lowpass_sigma=lowpass))


def held_out_scores(args: argparse.Namespace, out: Path, seed: int, reference, centres: np.ndarray,
                    model: Path, enc) -> dict[str, Any]:
    """Cluster scores on one more simulated tomogram: its patches encoded like B's, assigned to A's centres."""
    from deepict_dask.mine import MineLayout, encode_patches
    from deepict_dask.mine.encode import invariant_scaling
    from deepict_dask.mine.kmeans import assign

    paths = simulate(out / "data", seed, tuple(args.shape), float(args.voxel_size))
    layout = MineLayout.at(out / f"mine_{seed}")
    table = mine_tomogram(paths["tomogram"], layout, args.patch, args.max_peaks, args.prefilter)
    scaling = invariant_scaling(reference.codes) if enc.codes == "invariant" else None
    codes = encode_patches(layout, model, enc, scaling)
    clusters = assign(codes, centres)
    truth = truth_classes(table, paths, args.truth_radius)
    hidden = hidden_membrane_patches(table, truth, paths, args.truth_radius, wedge_retained(paths))
    return {**cluster_scores(clusters, truth, args.k), "membrane_wedge": membrane_wedge_purity(clusters, truth, hidden, args.k)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    import zarr

    from deepict_dask.mine import ClusterOptions, EncodeOptions, MineLayout, cluster_codes, encode_patches
    from deepict_dask.mine.encode import decode_codes, invariant_scaling
    from deepict_dask.mine.kmeans import assign, read_centres
    from deepict_dask.mine.labels import write_weak_labels
    from deepict_dask.train.patch_stack import train_autoencoder, train_edss3d

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    vs = float(args.voxel_size)
    times: dict[str, float] = {}
    res: dict[str, Any] = {"settings": {k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in vars(args).items()},
                           "targets": TARGETS, "paper_s": PAPER}
    t = time.perf_counter()
    paths = {key: simulate(out / "data", seed, tuple(args.shape), vs) for key, seed in zip("AB", args.seeds)}
    source = {key: paths[key]["tomogram"] for key in "AB"}
    if args.prefilter > 0:
        source = {key: prefiltered(p, out / "prefiltered", args.prefilter) for key, p in source.items()}
    times["simulate_s"] = time.perf_counter() - t

    layouts = {key: MineLayout.at(out / f"mine_{key}") for key in "AB"}
    tables, truth = {}, {}
    t = time.perf_counter()
    for key in "AB":
        tables[key] = mine_tomogram(paths[key]["tomogram"], layouts[key], args.patch, args.max_peaks, args.prefilter)
        truth[key] = truth_classes(tables[key], paths[key], args.truth_radius)
    times["centres_patches_s"] = time.perf_counter() - t
    res["patches"] = {key: int(len(tables[key])) for key in "AB"}

    if args.autoencoder:  # an autoencoder trained by an earlier run on the same A
        ae_model = Path(args.autoencoder).resolve()
        res["autoencoder"] = {"model": str(ae_model), "reused": True, "train_s_per_patch_epoch": None}
    else:
        t = time.perf_counter()
        ae = train_autoencoder(layouts["A"].patches, out / "ae_run", train_options(
            args, vs, max_epochs=args.ae_epochs, patience=args.ae_patience, max_minutes=args.ae_minutes,
            centre_sigma=args.ae_centre_sigma, augment=args.ae_augment or None))
        times["train_ae_s"] = time.perf_counter() - t
        ae_model = ae.model_path
        n_train_a = len(tables["A"]) - max(1, round(0.1 * len(tables["A"])))
        epochs = ae.steps * 8 / max(1, n_train_a)
        res["autoencoder"] = {"model": str(ae.model_path), "steps": ae.steps, "epochs": round(epochs, 2),
                              "best": {k: v for k, v in ae.best.items() if isinstance(v, (int, float, str))},
                              "stopped_early": ae.stopped_early, "time_budget_reached": ae.time_budget_reached,
                              "train_s_per_patch_epoch": round(times["train_ae_s"] / max(1.0, epochs * n_train_a), 5)}

    enc = EncodeOptions(device="cpu", codes=args.codes)
    for key in "AB":
        t = time.perf_counter()
        encode_patches(layouts[key], ae_model, enc,
                       invariant_scaling(layouts["A"].codes) if args.codes == "invariant" and key == "B" else None)
        times[f"encode_{key}_s"] = time.perf_counter() - t
    codes_b = zarr.open_array(str(layouts["B"].codes), mode="r")
    t = time.perf_counter()
    other_name = "autoencoder" if args.codes == "invariant" else "invariant"
    other = autoencoder_codes(ae_model, layouts) if args.codes == "invariant" else invariant_codes(layouts)
    times[f"{other_name}_codes_s"] = time.perf_counter() - t
    ae_codes_b = other["B"] if args.codes == "invariant" else np.asarray(codes_b[:])
    t = time.perf_counter()
    labels_a = cluster_codes(layouts["A"], ClusterOptions(k=args.k, seed=args.seed))
    times["kmeans_s"] = time.perf_counter() - t
    centres = read_centres(layouts["A"].cluster_centres)
    labels_b = assign(codes_b, centres)
    t = time.perf_counter()
    decode_codes(ae_model, ae_codes_b, "cpu")
    times["decode_B_s"] = time.perf_counter() - t
    res["speed_s_per_patch"] = {"encode": round(times["encode_B_s"] / len(tables["B"]), 5),
                                "decode": round(times["decode_B_s"] / len(tables["B"]), 5),
                                "train_per_epoch": res["autoencoder"]["train_s_per_patch_epoch"]}

    table_a = cluster_table(labels_a, truth["A"], args.k)
    table_b = cluster_table(labels_b, truth["B"], args.k)
    table_a.to_csv(out / "clusters_A.csv", index_label="cluster")
    table_b.to_csv(out / "clusters_B.csv", index_label="cluster")
    res["clusters_A"] = cluster_scores(labels_a, truth["A"], args.k)
    res["clusters_B"] = cluster_scores(labels_b, truth["B"], args.k)
    retained_b = wedge_retained(paths["B"])
    hidden_b = hidden_membrane_patches(tables["B"], truth["B"], paths["B"], args.truth_radius, retained_b)
    res["membrane_wedge_B"] = membrane_wedge_purity(labels_b, truth["B"], hidden_b, args.k)
    res["clusters_B_majority_from_A"] = cluster_scores(labels_b, truth["B"], args.k,
                                                       table_a["majority"].where(table_a["size"] > 0, ""))
    res["references"] = references(layouts, truth, args.k, args.seed, other, other_name)
    res["clusters_more_held_out"] = {
        str(seed): held_out_scores(args, out, seed, layouts["A"], centres, ae_model, enc) for seed in args.more_held_out}
    if args.cnn_reference_epochs:
        t = time.perf_counter()
        res["references"]["supervised_cnn"] = supervised_cnn(layouts, truth, args.cnn_reference_epochs, args.seed,
                                                             threads=args.threads)
        times["cnn_reference_s"] = time.perf_counter() - t
    if not args.no_gallery:
        from deepict_dask.mine import write_gallery

        t = time.perf_counter()
        write_gallery(layouts["A"], [source["A"]], ae_model, device="cpu")
        times["gallery_s"] = time.perf_counter() - t

    res["top_clusters_A"] = top_clusters(table_a)
    selection = select_clusters(table_a, args.user_purity)
    negatives = select_background(table_a, args.user_purity, args.negatives) if selection else []
    if negatives:
        selection["background"] = negatives
    res["selection"] = {c: {"clusters": ids, "patches_A": int(table_a.loc[ids, "size"].sum())} for c, ids in selection.items()}
    res["weak"] = {}
    if selection:
        t = time.perf_counter()
        truth_a = PatchTruth(paths["A"], tables["A"])
        weak = write_weak_labels(layouts["A"].patches, decoder(ae_model), labels_a, selection, out / "weak",
                                 k=args.k, polarity="dark", voxel_size=vs, overwrite=True)
        res["weak"] = {"patches_per_class": weak.patches_per_class, "voxel_fraction": weak.voxel_fraction,
                       "against_truth": weak_label_quality(out / "weak", truth_a, weak.classes),
                       "threshold_sweep": weak_label_sweep(decoder(ae_model), layouts["A"].patches, labels_a,
                                                           selection, truth_a)}
        total = int(zarr.open_array(str(weak.patches), mode="r").shape[0])
        edss = train_edss3d(weak.patches, weak.labels, weak.classes, out / "edss_run", edss_options(args, total))
        times["train_edss3d_s"] = time.perf_counter() - t
        res["edss3d"] = {"model": str(edss.model_path), "steps": edss.steps, "stopped_early": edss.stopped_early,
                         "time_budget_reached": edss.time_budget_reached,
                         "best": {k: v for k, v in edss.best.items() if isinstance(v, (int, float, str))}}
        scores, seconds = score_segmentation(args, out, paths, source, edss.model_path, weak.classes, retained_b)
        res.update(scores)
        times.update(seconds)
        if args.true_label_reference:
            t = time.perf_counter()
            res["references"]["edss3d_true_labels"] = true_label_reference(
                args, out, paths, source, weak, truth_a, total, retained_b)
            times["true_label_reference_s"] = time.perf_counter() - t
    missing = [c for c in USER_CLASSES if c not in selection]
    if missing:
        res["not_selected"] = {c: f"no cluster of A has >= {args.user_purity} {c} patches" for c in missing}
    res["times_s"] = {k: round(v, 1) for k, v in times.items()}
    res["figures"] = figures(res)
    return res


def figures(res: dict[str, Any]) -> dict[str, float]:
    """The headline figures, every one in [0, 1], named as in :data:`TARGETS`."""
    b = res["clusters_B"]
    return {"majority_accuracy_B": b["majority_accuracy"],
            "majority_accuracy_B_from_A": res["clusters_B_majority_from_A"]["majority_accuracy"],
            "purity_ribosome_B": b["class_purity"].get("ribosome", 0.0),
            "purity_membrane_B": b["class_purity"].get("membrane", 0.0),
            "adjusted_rand_index_B": max(0.0, b["adjusted_rand_index"]),
            "ribosome_pick_f1": float((res.get("ribosome_picking") or {}).get("f1") or 0.0),
            "membrane_voxel_f1": float((res.get("membrane_voxels") or {}).get("f1") or 0.0),
            "ribosome_pick_f1_tuned_on_A": float((res.get("ribosome_picking_tuned_on_A") or {}).get("f1") or 0.0),
            "membrane_voxel_f1_tuned_on_A": float((res.get("membrane_voxels_tuned_on_A") or {}).get("f1") or 0.0),
            "purity_membrane_B_outside_wedge": float(res.get("membrane_wedge_B", {}).get("purity_visible") or 0.0),
            "membrane_voxel_f1_outside_wedge": float(((res.get("membrane_voxels") or {}).get("by_wedge") or {})
                                                     .get("f1_visible") or 0.0)}


def report(res: dict[str, Any]) -> str:
    """A short markdown summary of ``res`` (figures against the targets, speed against the paper)."""
    f, s = res["figures"], res["speed_s_per_patch"]
    lines = ["| figure | ours | target |", "|---|---|---|"]
    for k, v in f.items():
        target = TARGETS.get(k)
        lines.append(f"| {k} | {v:.3f} | {'>= ' + format(target, 'g') if target else '-'} |")
    lines += ["", "| seconds per patch | ours (CPU) | paper (2018 GPU) |", "|---|---|---|",
              f"| training, per epoch | {s['train_per_epoch'] or 0:.4f} | {PAPER['train_s_per_patch_epoch']} |",
              f"| encoding | {s['encode']:.4f} | {PAPER['encode_s_per_patch']} |",
              f"| decoding | {s['decode']:.4f} | {PAPER['decode_s_per_patch']} |", ""]
    lines.append(f"patches A/B: {res['patches']['A']}/{res['patches']['B']}; truth classes of B: "
                 f"{res['clusters_B']['class_counts']}")
    lines.append(f"selection (user purity >= {res['settings']['user_purity']}): "
                 + json.dumps({c: v['clusters'] for c, v in res['selection'].items()}))
    for c, rows in res.get("top_clusters_A", {}).items():
        lines.append(f"most {c}-rich clusters of A (cluster: share of size): "
                     + ", ".join(f"{r['cluster']}: {r['share']:.2f} of {r['size']}" for r in rows))
    wedge = res.get("membrane_wedge_B")
    if wedge:
        lines.append(f"membrane patches of B in the missing wedge: {wedge['hidden']} of {wedge['membrane_patches']} "
                     f"(their cluster purity {wedge['purity_hidden']}; the others' {wedge['purity_visible']})")
    true_ref = res.get("references", {}).get("edss3d_true_labels")
    if true_ref:
        lines.append("EDSS3D on the same patches with true labels (reference): ribosome pick F1 "
                     f"{(true_ref.get('ribosome_picking') or {}).get('f1')}, membrane voxel F1 "
                     f"{(true_ref.get('membrane_voxels') or {}).get('f1')}")
    lines.append(f"times (s): {json.dumps(res['times_s'])}")
    return "\n".join(lines) + "\n"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="mine_eval", help="work directory (default: %(default)s)")
    p.add_argument("--shape", type=int, nargs=3, default=(96, 192, 192), metavar=("Z", "Y", "X"))
    p.add_argument("--voxel-size", type=float, default=13.48, help="Angstrom (default: the demo's)")
    p.add_argument("--seeds", type=int, nargs=2, default=(301, 302), metavar=("A", "B"),
                   help="simulation seeds of the training and the held-out tomogram")
    p.add_argument("--patch", type=int, default=32, help="patch edge (voxels)")
    p.add_argument("--max-peaks", type=int, default=None, help="keep at most this many DoG peaks per tomogram")
    p.add_argument("--prefilter", type=float, default=0.0,
                   help="Gaussian sigma (voxels) of a low-pass of the patches (per patch, as `deepict mine patches "
                        "--lowpass`) and of the tomograms EDSS3D predicts on (0: none; the centres always come from "
                        "the raw tomogram, and invariant codes describe the unfiltered patches)")
    p.add_argument("--truth-radius", type=int, default=2, help="ball (voxels) around a centre that gives its class")
    p.add_argument("--k", type=int, default=100, help="k-means clusters")
    p.add_argument("--codes", choices=["autoencoder", "invariant"], default="autoencoder",
                   help="codes k-means clusters: the autoencoder's (published) or rotation-invariant descriptors")
    p.add_argument("--more-held-out", type=int, nargs="*", default=(), metavar="SEED",
                   help="also score the clusters on tomograms simulated with these seeds (cluster figures only)")
    p.add_argument("--autoencoder", metavar="MODEL", help="use this autoencoder (trained on the same A by an "
                   "earlier run) instead of training one")
    p.add_argument("--ae-epochs", type=int, default=200)
    p.add_argument("--ae-patience", type=int, default=20)
    p.add_argument("--ae-minutes", type=float, default=None, help="time cap of the autoencoder training")
    p.add_argument("--ae-centre-sigma", type=float, default=None,
                   help="centre-weighted reconstruction loss of the autoencoder (sigma, voxels; default: plain MSE)")
    p.add_argument("--ae-augment", action="store_true", help="rotate/jitter the autoencoder's training patches")
    p.add_argument("--cnn-reference-epochs", type=int, default=0,
                   help="also train a supervised 3D CNN classifier on A's patches with their truth for N epochs and "
                        "score it on B: a reference for the cluster figures (default 0: skip)")
    p.add_argument("--true-label-reference", action="store_true",
                   help="also train EDSS3D on the same selected patches with their true masks and score it on B: "
                        "a reference for the weak-supervision figures")
    p.add_argument("--user-purity", type=float, default=0.7, help="simulated user: purity to select a cluster")
    p.add_argument("--negatives", type=int, default=0,
                   help="simulated user: also select up to N mostly-background clusters as negative examples")
    p.add_argument("--crop", type=int, default=24, help="EDSS3D trains on random crops of this edge")
    p.add_argument("--edss-epochs", type=int, default=200)
    p.add_argument("--edss-patience", type=int, default=20)
    p.add_argument("--edss-batch", type=int, default=128, help="EDSS3D batch (the paper's: 128)")
    p.add_argument("--edss-minutes", type=float, default=None, help="time cap of the EDSS3D training")
    p.add_argument("--window", type=int, default=None, help="prediction window edge (default: the engine's)")
    p.add_argument("--pick-radius", type=float, default=0.6,
                   help="expected ribosome radius for picking, as a fraction of its bounding radius")
    p.add_argument("--tune-thresholds", type=float, nargs="+", default=(0.5, 0.6, 0.7, 0.8, 0.9, 0.95),
                   help="probability thresholds tried on tomogram A (picking and membrane voxels)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-gallery", action="store_true", help="skip the HTML gallery of A's clusters")
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parser().parse_args(argv)
    t0 = time.perf_counter()
    res = run(args)
    res["times_s"]["total_s"] = round(time.perf_counter() - t0, 1)
    out = Path(args.out).resolve()
    (out / "results.json").write_text(json.dumps(res, indent=2, default=float))
    (out / "report.md").write_text(report(res))
    print(report(res), end="")
    print(f"details: {out / 'results.json'}")
    return res


if __name__ == "__main__":
    main()
