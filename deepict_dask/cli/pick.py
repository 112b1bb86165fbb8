"""``deepict pick``: probability map -> particle table (+ label image, summary)."""

from __future__ import annotations

import argparse
from typing import Any

from deepict_dask.cli.common import (
    add_cluster_args,
    add_deprecated_alias,
    add_overwrite_arg,
    add_progress_arg,
    progress_wanted,
    refuse_existing,
)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "pick",
        help="threshold a probability map, cluster it and write particle coordinates",
        description="Turn a probability map (a 'deepict predict' store, an MRC or a Zarr array) into a "
        "coordinate table: threshold, globally consistent clusters, size / context / duplicate filters.",
        conflict_handler="resolve",
    )
    p.add_argument("map", help="probability map: <tomo>.ome.zarr (predictions/<model>), .mrc or a Zarr array")
    p.add_argument("-o", "--out", required=True, metavar="TABLE",
                   help="output table: .csv, .star (RELION) or .json (copick)")
    p.add_argument("--group", help="group inside a Zarr store, e.g. predictions/unet (default: the only one)")
    p.add_argument("--class", dest="classes", action="append", metavar="NAME",
                   help="class (channel) to pick; repeat for several (default: all classes)")
    p.add_argument("--tomo", help="tomogram name written in the table (default: from the file name)")
    p.add_argument("--threshold", type=float,
                   help="probability threshold, voxels >= it are foreground (default: the value tuned for the "
                   "prediction's model, see 'deepict evaluate sweep --write-model', else 0.5)")
    p.add_argument("--min-size", type=int,
                   help="smallest cluster kept, in voxels, inclusive (default: the model's tuned value, else 1)")
    p.add_argument("--max-size", type=int, help="largest cluster kept, in voxels, inclusive (default: no limit)")
    p.add_argument("--radius", metavar="LEN",
                   help="expected particle radius (e.g. 120A, or voxels) giving min/max sizes 0.2x..2x its sphere volume")
    p.add_argument("--connectivity", type=int, choices=[6, 18, 26], default=26,
                   help="voxel neighbourhood for clusters: faces (6), +edges (18), +corners (26, default)")
    p.add_argument("--bandwidth", action="append", metavar="[CLASS=]LEN",
                   help="mean-shift bandwidth (e.g. 60A, or ribosome=60A per class)")
    p.add_argument("--min-distance", metavar="LEN",
                   help="watershed/peaks: seeds closer than this are one particle (e.g. 80A, or voxels; "
                   "default: --radius)")
    p.add_argument("--seeds", choices=["edt", "prob"],
                   help="watershed seeds: maxima of the mask's distance transform (edt, default) or of the "
                   "smoothed probability map (prob)")
    p.add_argument("--h-maxima", type=float, metavar="H",
                   help="watershed/peaks: ignore maxima less than H above their surroundings "
                   "(probability for prob seeds, voxels for edt)")
    p.add_argument("--smooth", type=float, metavar="SIGMA",
                   help="watershed/peaks: Gaussian sigma (voxels) of the seed map (default 1 for prob, 0 for edt)")
    p.add_argument("--coarsen", metavar="N",
                   help="watershed/peaks: find seeds and basins on an N-times coarser grid; sizes, centroids "
                   "and scores still come from every voxel (default auto: as coarse as keeps seeds 4 voxels "
                   "apart; 1: full resolution)")
    p.add_argument("--weighted", action="store_true", help="probability-weighted centroids")
    p.add_argument("--duplicate-radius", metavar="LEN",
                   help="drop the lower-scoring of two picks closer than this (e.g. 80A, or voxels)")
    p.add_argument("--context", metavar="MASK", help="binary region mask (MRC or Zarr, same grid as the map)")
    p.add_argument("--context-group", help="group inside the mask's Zarr store")
    p.add_argument("--context-mode", choices=["intersection", "contact", "colocalization"],
                   help="how the mask acts (default with --context: contact); see docs/pick_context_modes.md")
    p.add_argument("--exclude", action="store_true", help="inverse context: keep what the mode would drop")
    p.add_argument("--context-distance", metavar="LEN", help="colocalization distance (voxels, or e.g. 50A)")
    p.add_argument("--distance-reach", metavar="LEN",
                   help="distances up to this are exact (default max(context distance, 20 voxels))")
    p.add_argument("--chunks", type=int, metavar="N", help="Dask chunk edge when the input is not already chunked")
    add_deprecated_alias(p, "--chunk", "--chunks", dest="chunks", type=int)
    p.add_argument("--labels-out", metavar="STORE",
                   help="write the kept clusters' label image to STORE (OME-Zarr) as labels/<class>")
    p.add_argument("--centerline", action="store_true",
                   help="filaments/membranes: sample points along each cluster's skeleton instead of centroids")
    p.add_argument("--spacing", default="40A", metavar="LEN", help="centreline sampling step (default 40A)")
    p.add_argument("--summary", metavar="JSON", help="also write the per-class summary as JSON")
    add_overwrite_arg(p, "existing outputs (table, --summary, --labels-out groups)")
    add_progress_arg(p)
    add_cluster_args(p)
    # --cluster names the clustering method here; the Dask cluster kinds stay accepted too
    p.add_argument("--cluster", action=_ClusterChoice, dest="cluster", metavar="METHOD",
                   help="clustering method: cc (connected components, default), meanshift, watershed (split "
                   "touching particles) or peaks (local maxima); see docs/pick_methods.md "
                   "(also accepts a Dask cluster kind: local, slurm, pbs, sge; default: the method tuned for "
                   "the model, else cc)")
    p.set_defaults(func=run, cluster_method=None)


class _ClusterChoice(argparse.Action):
    """Route ``--cluster X`` to the clustering method, or to the Dask cluster kind for local/slurm/pbs/sge."""

    def __call__(self, parser, namespace, values, option_string=None):
        from deepict_dask.cluster import JOBQUEUE_KINDS
        from deepict_dask.pick.methods import available_methods

        if values in ("local", *JOBQUEUE_KINDS):
            namespace.cluster = values
        elif values in available_methods():
            namespace.cluster_method = values
        else:
            parser.error(f"--cluster: unknown method {values!r}; choose one of {', '.join(available_methods())}")


def _bandwidths(values: list[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for v in values or []:
        cls, _, length = v.rpartition("=")
        out[cls or "*"] = length
    return out


def _cluster_params(args: argparse.Namespace, method: str, min_distance: Any) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if args.bandwidth:
        params["bandwidth"] = _bandwidths(args.bandwidth)
    if method in ("watershed", "peaks"):
        params.update({k: v for k, v in (("min_distance", min_distance), ("seeds", args.seeds),
                                         ("h_maxima", args.h_maxima), ("sigma", args.smooth),
                                         ("coarsen", args.coarsen)) if v is not None})
    return params


def run(args: argparse.Namespace) -> int:
    from deepict_dask.cli.common import spec_from_args
    from deepict_dask.cluster import dask_client
    from deepict_dask.io import show_progress
    from deepict_dask.pick.api import (
        explicit_settings,
        map_classes,
        merge_results,
        open_map,
        pick,
        plan_picks,
        tuned_settings,
        write_outputs,
    )

    refuse_existing(args.out, args.summary, overwrite=args.overwrite)
    with dask_client(spec_from_args(args)), show_progress(progress_wanted(args)):
        vol = open_map(args.map, group=args.group, chunks=args.chunks)
        tuned, model = tuned_settings(vol)
        explicit = {"threshold": args.threshold, "min_size": args.min_size, "cluster": args.cluster_method,
                    "min_distance": args.min_distance,
                    "sizes_given": any(v is not None for v in (args.min_size, args.max_size, args.radius))}
        if tuned:  # per class: each may have its own tuned settings
            groups, notes = plan_picks(args.classes or map_classes(vol), tuned, explicit)
        else:
            groups, notes = [(args.classes, explicit_settings(explicit))], {}
        for cls, note in notes.items():
            print(f"{cls}: {', '.join(f'{k} {v}' for k, v in note.items())} (defaults tuned for the model {model})")
        results = [pick(
            vol, classes=classes, tomo=args.tomo, threshold=s["threshold"],
            min_size=s["min_size"], max_size=args.max_size, radius=args.radius, connectivity=args.connectivity,
            cluster=s["cluster"], cluster_params=_cluster_params(args, s["cluster"], s["min_distance"]),
            context=args.context, context_group=args.context_group,
            context_mode=args.context_mode, context_inverse=args.exclude, context_distance=args.context_distance,
            distance_reach=args.distance_reach, weighted=args.weighted, duplicate_radius=args.duplicate_radius,
            labels=bool(args.labels_out) or args.centerline,
            centerline=args.centerline, spacing=args.spacing,
        ) for classes, s in groups]
        result = merge_results(results)
        write_outputs(result, args.out, labels_out=args.labels_out, summary_out=args.summary,
                      overwrite=args.overwrite)
    table = result.table
    if table.empty:
        print(f"no cluster survived the filters; wrote an empty table to {args.out}")
    else:
        print(f"{len(table)} picks written to {args.out}")
    for cls, entry in result.summary.items():
        print(f"  {cls}: {entry['picked']} kept of {entry.get('clusters_before_filters', entry['picked'])} clusters"
              + (f", size {entry['size_min']}..{entry['size_max']} (median {entry['size_median']:g})" if entry["picked"] else ""))
    if args.summary:
        print(f"summary: {args.summary}")
    return 0

