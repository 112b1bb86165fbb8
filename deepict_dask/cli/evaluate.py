"""``deepict evaluate picks|masks|sweep``: how good are picks, segmentations and thresholds."""

from __future__ import annotations

import argparse
from typing import Any

from deepict_dask.cli.common import add_overwrite_arg, refuse_existing
from deepict_dask.cli.options_flags import add_option_flags
from deepict_dask.pick.options import PickOptions


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="compare picks or segmentations with ground truth",
        description="Precision, recall and F1 of particle picks (per class, tomogram and pooled), of "
        "segmentations and probability maps (voxel metrics, AUPRC), and threshold / minimum-size sweeps.",
    )
    s = p.add_subparsers(dest="what", metavar="WHAT", required=True)

    pk = s.add_parser(
        "picks",
        help="particle tables against true positions",
        description="One-to-one matching of predicted to true positions within --tolerance, per (tomogram, "
        "class); prints precision, recall, F1, miss rate and SHREC counts (RR, TP, FP, FN, MH, AD).",
    )
    pk.add_argument("--pred", required=True, nargs="+", metavar="TABLE", help="predicted tables (.csv, .star, .json, .ndjson, .tbl, copick project)")
    pk.add_argument("--truth", required=True, nargs="+", metavar="TABLE", help="true positions (same formats)")
    pk.add_argument("--tolerance", required=True, type=float, help="matching radius, in --unit")
    pk.add_argument("--unit", default="vox", help="unit of --tolerance: vox (voxels, default) or A (Angstrom)")
    pk.add_argument(
        "--protocol",
        choices=["optimal", "deepict"],
        default="optimal",
        help="optimal: one-to-one optimal assignment, unmatched predictions are FPs (default); deepict: "
        "DeePiCt's greedy score-ordered matching, redundant hits neither TP nor FP, with max-F1 and AUPRC",
    )
    pk.add_argument(
        "--tomograms",
        choices=["truth", "common", "strict"],
        default="truth",
        help="truth: evaluate every truth tomogram (default); common: only tomograms in both tables; "
        "strict: the names must be the same",
    )
    pk.add_argument("--pred-class", help="evaluate only this predicted class (compared with --truth-class whatever its name)")
    pk.add_argument("--truth-class", help="evaluate only this true class")
    pk.add_argument("--no-per-class", action="store_true", help="match regardless of class names")
    pk.add_argument("--voxel-size", type=float, metavar="A",
                    help="voxel size in Angstrom for tables that do not record it (not needed with a voxel "
                    "--tolerance); tables whose x and x_A columns disagree with it are refused")
    pk.add_argument("--json", metavar="OUT", help="write the metrics as JSON")
    pk.add_argument("--matches", metavar="OUT.csv", help="write the predictions with their status (TP/FP), matched truth row and distance")
    add_overwrite_arg(pk, "existing --json / --matches files")
    pk.set_defaults(func=run_picks)

    mk = s.add_parser(
        "masks",
        help="segmentation or probability map against a mask",
        description="Voxel precision, recall, F1 (Dice) and IoU per label, computed chunk by chunk. For a "
        "probability map also the exact AUPRC and PR curve of the quantized map and the best threshold.",
    )
    mk.add_argument("--pred", required=True, help="predicted label mask or probability map (MRC, Zarr, OME-Zarr)")
    mk.add_argument("--truth", required=True, help="true mask / label volume")
    mk.add_argument("--pred-group", help="image group inside an OME-Zarr prediction, e.g. predictions/ribosome")
    mk.add_argument("--truth-group", help="image group inside an OME-Zarr truth, e.g. labels/ribosome")
    mk.add_argument("--class", dest="channel", help="channel (class name or index) of a multi-class probability map")
    mk.add_argument("--truth-label", type=int, help="label value of the class in the truth (default: any non-zero)")
    mk.add_argument(
        "--kind",
        choices=["auto", "probability", "labels"],
        default="auto",
        help="auto: float maps and maps with a probability_scale attribute are probabilities, integers are labels",
    )
    mk.add_argument("--threshold", type=float, default=0.5, help="probability threshold for the voxel metrics (default 0.5)")
    mk.add_argument("--levels", type=int, help="quantization levels of float maps (default 1001: steps of 0.001)")
    mk.add_argument("--json", metavar="OUT", help="write the metrics as JSON")
    add_overwrite_arg(mk, "an existing --json file")
    mk.set_defaults(func=run_masks)

    sw = s.add_parser(
        "sweep",
        help="F1 over probability thresholds and minimum cluster sizes",
        description="Cluster each probability map once per threshold, filter the clusters by every minimum "
        "size, match the centroids to the truth and report F1 per setting and the best one.",
    )
    sw.add_argument("--pred", required=True, nargs="+", metavar="[TOMO=]MAP", help="probability maps; TOMO names the tomogram (default: file stem)")
    sw.add_argument("--truth", required=True, nargs="+", metavar="TABLE", help="true positions")
    sw.add_argument("--pred-group", help="image group inside OME-Zarr maps, e.g. predictions/ribosome")
    sw.add_argument("--class", dest="channel", help="channel of a multi-class map, and the truth class to compare with")
    sw.add_argument("--tolerance", required=True, type=float, help="matching radius, in --unit")
    sw.add_argument("--unit", default="vox", help="unit of --tolerance: vox (default) or A")
    sw.add_argument("--thresholds", default="0.1:0.9:0.1", help="list 0.3,0.5,0.7 or range START:STOP:STEP (default 0.1:0.9:0.1)")
    sw.add_argument("--min-sizes", default="1,10,25,50,100,200", help="minimum cluster sizes in voxels (list or range)")
    sw.add_argument("--max-size", type=int, help="drop clusters larger than this (voxels)")
    add_option_flags(sw, PickOptions, {"connectivity": "--connectivity"},
                     help={"connectivity": "voxel connectivity (default %(default)s)"})
    sw.add_argument("--voxel-size", type=float, metavar="A",
                    help="voxel size in Angstrom for truth tables that record only voxel coordinates (not needed "
                    "with a voxel --tolerance)")
    sw.add_argument("--write-model", metavar="MODEL",
                    help="tune: the maps are this model's predictions (deepict predict stores) of validation "
                    "tomograms; record the best setting of each class (--class, default all the model's) in the "
                    "model file, where deepict pick and deepict run take their defaults from")
    sw.add_argument("--method", choices=["cc", "watershed", "peaks"], default="cc",
                    help="with --write-model: the clustering method tuned for (default cc)")
    sw.add_argument("--min-distances", metavar="A",
                    help="with --method watershed/peaks: seed distances in Angstrom to sweep (list or range)")
    sw.add_argument("--json", metavar="OUT", help="write the grid and best setting as JSON")
    add_overwrite_arg(sw, "an existing --json file")
    sw.set_defaults(func=run_sweep)


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def print_pick_metrics(m: dict[str, Any]) -> None:
    """Pooled, per-class and per-tomogram metrics as rich tables."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=140)
    cols = ["rr", "tp", "fp", "fn", "mh", "ad", "precision", "recall", "f1", "miss_rate"]
    if m.get("protocol") == "deepict":
        cols += ["redundant", "max_f1", "auprc"]
    title = f"picks: {m['protocol']} matching, tolerance {m['tolerance']:g} {m['unit']}"
    t = Table(title=title)
    t.add_column("class")
    for c in cols:
        t.add_column(c.upper() if len(c) <= 3 else c, justify="right")
    for name, row in m["per_class"].items():
        t.add_row(name, *[_fmt(row.get(c)) for c in cols])
    t.add_row("[b]pooled[/b]", *[_fmt(m.get(c)) for c in cols])
    console.print(t)
    if len(m["per_tomogram"]) > 1:
        t = Table(title="per tomogram")
        t.add_column("tomogram")
        for c in cols:
            t.add_column(c.upper() if len(c) <= 3 else c, justify="right")
        for name, row in m["per_tomogram"].items():
            t.add_row(name, *[_fmt(row.get(c)) for c in cols])
        console.print(t)
    if "confusion" in m:
        conf = m["confusion"]
        t = Table(title="class confusion (rows: truth, columns: predicted)")
        t.add_column("")
        for c in conf["pred_classes"]:
            t.add_column(c, justify="right")
        for name, row in zip(conf["truth_classes"], conf["matrix"]):
            t.add_row(name, *[str(v) for v in row])
        console.print(t)
    for note in m.get("notes", []):
        console.print(f"note: {note}")


def run_picks(args: argparse.Namespace) -> int:
    from deepict_dask.evaluate.files import check_same_units, load_tables, write_json
    from deepict_dask.evaluate.picking import check_unit, evaluate_picks
    from deepict_dask.io.atomic import atomic_path

    refuse_existing(args.json, args.matches, overwrite=args.overwrite)

    unit = check_unit(args.unit)
    pred = load_tables(args.pred, args.voxel_size, unit)
    truth = load_tables(args.truth, args.voxel_size, unit)
    check_same_units(pred, truth, args.pred, args.truth)
    ev = evaluate_picks(
        pred,
        truth,
        args.tolerance,
        unit=args.unit,
        protocol=args.protocol,
        tomograms=args.tomograms,
        by_class=False if args.no_per_class else None,
        pred_class=args.pred_class,
        truth_class=args.truth_class,
        pred_path=args.pred[0] if len(args.pred) == 1 else None,
        truth_path=args.truth[0] if len(args.truth) == 1 else None,
    )
    ev.metrics["pred"] = [str(p) for p in args.pred]
    ev.metrics["truth"] = [str(p) for p in args.truth]
    print_pick_metrics(ev.metrics)
    if args.json:
        write_json(ev.metrics, args.json)
    if args.matches:
        with atomic_path(args.matches) as tmp:
            ev.pred.to_csv(tmp, index=False)
    return 0


def run_masks(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from deepict_dask.evaluate.files import load_volume, open_prediction, write_json
    from deepict_dask.evaluate.segmentation import map_kind, mask_metrics, probability_metrics

    refuse_existing(args.json, overwrite=args.overwrite)

    pred = open_prediction(args.pred, args.pred_group)
    truth = load_volume(args.truth, group=args.truth_group)
    kind = map_kind(pred, args.kind)
    if kind == "probability":
        m = probability_metrics(
            pred,
            truth,
            threshold=args.threshold,
            channel=args.channel,
            truth_label=args.truth_label,
            levels=args.levels,
            pred_path=args.pred,
            truth_path=args.truth,
        )
    else:
        m = mask_metrics(pred, truth, pred_path=args.pred, truth_path=args.truth)
    m["kind"] = kind
    m["pred"], m["truth"] = args.pred, args.truth
    console = Console(width=140)
    t = Table(title=f"voxel metrics ({kind})")
    cols = ["tp", "fp", "fn", "precision", "recall", "f1", "iou"]
    t.add_column("class")
    for c in cols:
        t.add_column(c, justify="right")
    for name, row in m["per_class"].items():
        t.add_row(name, *[_fmt(row[c]) for c in cols])
    console.print(t)
    if kind == "probability":
        console.print(
            f"AUPRC {_fmt(m['auprc'])}; best F1 {m['best_f1']:.3f} at threshold {_fmt(m['best_threshold'])}; "
            f"at threshold {args.threshold:g}: F1 {m['f1']:.3f}"
        )
    if args.json:
        write_json(m, args.json)
    return 0


def run_sweep(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from deepict_dask.evaluate.files import load_tables, write_json
    from deepict_dask.evaluate.picking import check_unit
    from deepict_dask.evaluate.sweep import open_sweep_maps, parse_values, sweep

    refuse_existing(args.json, overwrite=args.overwrite)

    truth = load_tables(args.truth, args.voxel_size, check_unit(args.unit))
    if args.write_model:
        return run_tune(args, truth)
    if args.method != "cc" or args.min_distances:
        from deepict_dask.errors import ConfigError

        raise ConfigError("--method and --min-distances tune a model: give --write-model MODEL")
    maps = open_sweep_maps(args.pred, truth, group=args.pred_group, channel=args.channel)
    cls = args.channel if args.channel is not None and args.channel in set(truth["class"].astype(str)) else None
    res = sweep(
        maps,
        truth,
        args.tolerance,
        thresholds=parse_values(args.thresholds, float),
        min_sizes=parse_values(args.min_sizes, int),
        max_size=args.max_size,
        unit=args.unit,
        class_name=cls,
        connectivity=args.connectivity,
    )
    console = Console(width=140)
    sizes = sorted({r["min_size"] for r in res["grid"]})
    t = Table(title=f"F1 by threshold (rows) and minimum size (columns), tolerance {args.tolerance:g} {args.unit}")
    t.add_column("threshold")
    for s in sizes:
        t.add_column(str(s), justify="right")
    by = {(r["threshold"], r["min_size"]): r["f1"] for r in res["grid"]}
    for thr in sorted({r["threshold"] for r in res["grid"]}):
        t.add_row(f"{thr:g}", *[f"{by[(thr, s)]:.3f}" for s in sizes])
    console.print(t)
    console.print(
        f"best: threshold {res['best_threshold']:g}, min size {res['best_min_size']}: F1 {res['f1']:.3f} "
        f"(precision {res['precision']:.3f}, recall {res['recall']:.3f})"
    )
    for note in res["edges"]:
        console.print(f"warning: {note}")
    if args.json:
        write_json(res, args.json)
    return 0


def run_tune(args: argparse.Namespace, truth) -> int:
    """``evaluate sweep --write-model``: tune each class on the predictions and record the best settings."""
    from deepict_dask.evaluate.files import open_prediction, write_json
    from deepict_dask.evaluate.sweep import named_maps, parse_values
    from deepict_dask.evaluate.tune import tune
    from deepict_dask.models.spec import resolve_model_path

    maps = {name: open_prediction(path, args.pred_group) for name, path in named_maps(args.pred, truth).items()}
    model = resolve_model_path(args.write_model)
    res = tune(model, maps, truth, args.tolerance, classes=[args.channel] if args.channel else None,
               unit=args.unit, thresholds=parse_values(args.thresholds, float),
               min_sizes=parse_values(args.min_sizes, int), method=args.method,
               min_distances=parse_values(args.min_distances, float) if args.min_distances else None,
               connectivity=args.connectivity, max_size=args.max_size)
    for cls, r in res.items():
        e = r["entry"]
        extra = f", min distance {e['min_distance_A']:g} A" if "min_distance_A" in e else ""
        print(f"{cls}: threshold {e['threshold']:g}, min size {e['min_size']}{extra} ({e['method']}): F1 {e['f1']:.3f} "
              f"(precision {e['precision']:.3f}, recall {e['recall']:.3f}) on {len(e['validated_on'])} tomogram(s)")
        for note in r["edges"]:
            print(f"warning: {cls}: {note}")
    print(f"recorded in {model}: deepict pick and deepict run use these settings by default for this model")
    if args.json:
        write_json(res, args.json)
    return 0
