"""``deepict pick``: probability map -> particle table (+ label image, summary)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from deepict_dask.cli.common import (
    add_cluster_args,
    add_deprecated_alias,
    add_overwrite_arg,
    add_progress_arg,
    progress_wanted,
    refuse_existing,
)
from deepict_dask.cli.options_flags import add_option_flags, option_values
from deepict_dask.errors import ConfigError
from deepict_dask.options import build
from deepict_dask.pick.options import ContextRule, PickOptions


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
    add_option_flags(p, PickOptions, FIELD_FLAGS, unset=tuple(FIELD_FLAGS), metavar={
        "radius": "LEN", "duplicate_radius": "LEN", "spacing": "LEN"}, help=HELP)
    p.add_argument("--method", metavar="NAME",
                   help="clustering method: cc (connected components, default), meanshift, watershed (split "
                   "touching particles) or peaks (local maxima); see docs/pick_methods.md (default: the method "
                   "tuned for the model, else cc)")
    p.add_argument("--param", action="append", metavar="KEY=VALUE",
                   help="a parameter of the method, e.g. min_distance=80A (any method's; repeat for several)")
    _add_method_flags(p)
    add_option_flags(p, ContextRule, CONTEXT_FLAGS, unset=tuple(CONTEXT_FLAGS), metavar={
        "target": "MASK", "distance": "LEN", "reach": "LEN"}, help=CONTEXT_HELP)
    p.add_argument("--chunks", type=int, metavar="N", help="Dask chunk edge when the input is not already chunked")
    add_deprecated_alias(p, "--chunk", "--chunks", dest="chunks", type=int)
    p.add_argument("--labels-out", metavar="STORE",
                   help="write the kept clusters' label image to STORE (OME-Zarr) as labels/<class>")
    p.add_argument("--summary", metavar="JSON", help="also write the per-class summary as JSON")
    add_overwrite_arg(p, "existing outputs (table, --summary, --labels-out groups)")
    add_progress_arg(p)
    add_cluster_args(p)
    # --cluster is the Dask cluster kind; a method name there is the old spelling of --method
    p.add_argument("--cluster", action=_ClusterChoice, dest="cluster", metavar="KIND",
                   help="Dask cluster to start: local, slurm, pbs, sge (default: an embedded LocalCluster)")
    p.set_defaults(func=run, method=None)


class _ClusterChoice(argparse.Action):
    """``--cluster KIND``; ``--cluster METHOD`` still chooses the clustering method, with a warning."""

    def __call__(self, parser, namespace, values, option_string=None):
        from deepict_dask.cluster import JOBQUEUE_KINDS
        from deepict_dask.pick.methods import available_methods

        if values in ("local", *JOBQUEUE_KINDS):
            namespace.cluster = values
        elif values in available_methods():
            print(f"{parser.prog}: warning: --cluster {values} is deprecated, use --method {values} "
                  "(--cluster is the Dask cluster)", file=sys.stderr)
            namespace.method = values
        else:
            parser.error(f"--cluster: unknown cluster kind {values!r}; choose one of local, "
                         f"{', '.join(JOBQUEUE_KINDS)} (the clustering method is --method)")


# flags of the pick options themselves: field -> flag (help where the command words it its own way),
# and the lengths whose bare numbers are voxels
FIELD_FLAGS = {"threshold": "--threshold", "min_size": "--min-size", "max_size": "--max-size", "radius": "--radius",
               "connectivity": "--connectivity", "weighted": "--weighted", "duplicate_radius": "--duplicate-radius",
               "centerline": "--centerline", "spacing": "--spacing"}
FLAGS = {**FIELD_FLAGS, "method": "--method", "context": "--context"}
HELP = {
    "threshold": "probability threshold, voxels >= it are foreground (default: the value tuned for the "
                 "prediction's model, see 'deepict evaluate sweep --write-model', else 0.5)",
    "min_size": "smallest cluster kept, in voxels, inclusive (default: the model's tuned value, else 1)",
    "max_size": "largest cluster kept, in voxels, inclusive (default: no limit)",
    "radius": "expected particle radius (e.g. 120A, or voxels) giving min/max sizes 0.2x..2x its sphere volume",
    "connectivity": "voxel neighbourhood for clusters: faces (6), +edges (18), +corners (26, default)",
    "duplicate_radius": "drop the lower-scoring of two picks closer than this (e.g. 80A, or voxels)",
    "centerline": "filaments/membranes: sample points along each cluster's skeleton instead of centroids",
    "spacing": "centreline sampling step (default 40A; bare numbers: A)",
}
CONTEXT_FLAGS = {"target": "--context", "group": "--context-group", "mode": "--context-mode",
                 "distance": "--context-distance", "reach": "--distance-reach", "invert": "--exclude"}
CONTEXT_HELP = {
    "target": "binary region mask (MRC or Zarr, same grid as the map)",
    "group": "group inside the mask's Zarr store",
    "mode": "how the mask acts (default with --context: contact); see docs/pick_context_modes.md",
    "invert": "inverse context: keep what the mode would drop",
    "distance": "colocalization distance (voxels, or e.g. 50A)",
}
VOXEL_LENGTHS = ("radius", "duplicate_radius")


def _method_fields() -> dict[str, list[tuple[str, Any]]]:
    """Parameter name -> [(method, its pydantic field)] over the registered methods."""
    from deepict_dask.pick.methods import METHODS

    out: dict[str, list[tuple[str, Any]]] = {}
    for name, method in sorted(METHODS.items()):
        for key, info in method.params.model_fields.items():
            if key != "name":
                out.setdefault(key, []).append((name, info))
    return out


def _add_method_flags(p: argparse.ArgumentParser) -> None:
    """One flag per parameter of the registered methods (``min_distance`` -> ``--min-distance``)."""
    g = p.add_argument_group("method parameters (each applies to the methods named)")
    for key, uses in _method_fields().items():
        info = next((i for _, i in uses if i.description), uses[0][1])
        if f"--{key.replace('_', '-')}" in p._option_string_actions:
            continue  # a pick option's flag wins; the parameter stays reachable through --param
        g.add_argument(f"--{key.replace('_', '-')}", dest=f"param_{key}", action="append", metavar="VALUE",
                       help=f"{'/'.join(m for m, _ in uses)}: {info.description or key}"
                       + (" (e.g. 80A, or voxels)" if _is_length(info) else ""))
    add_deprecated_alias(p, "--smooth", "--sigma", dest="param_sigma")


def _is_length(info: Any) -> bool:
    return "Length" in str(info.annotation)


def _voxels(value: str) -> str:
    """On the command line a bare number is a length in voxels (as it always was here); ``CLASS=`` kept."""
    key, eq, length = str(value).rpartition("=")
    try:
        float(length)
    except ValueError:
        return value
    return f"{key}{eq}{length}vx"


def _method_values(args: argparse.Namespace) -> dict[str, Any] | None:
    """The method's name and parameters from ``--method``, the parameter flags and ``--param``."""
    fields = _method_fields()
    given: dict[str, Any] = {}
    for key, uses in fields.items():
        value = getattr(args, f"param_{key}", None)
        if value is not None:
            values = [value] if isinstance(value, str) else list(value)
            if any(_is_length(i) for _, i in uses):
                values = [_voxels(v) for v in values]
            given[key] = values[0] if len(values) == 1 else values
    for item in args.param or []:
        key, eq, value = item.partition("=")
        if not eq:
            raise ConfigError(f"--param: write KEY=VALUE, got {item!r}")
        given[key.strip().replace("-", "_")] = value
    if args.method is None and not given:
        return None
    return {"name": args.method, **given} if args.method is not None else given


def options_from_args(args: argparse.Namespace) -> tuple[Any, dict[str, Any] | None]:
    """The :class:`PickOptions` the flags ask for (unset flags stay unset: tuned values may fill them),
    and the method parameters given without ``--method`` (applied to whichever method each class gets)."""
    values = option_values(args, FIELD_FLAGS)
    for key in VOXEL_LENGTHS:
        if key in values:
            values[key] = _voxels(values[key])
    context = option_values(args, CONTEXT_FLAGS)
    if context and "target" not in context:
        raise ConfigError(f"{', '.join(CONTEXT_FLAGS[k] for k in context)}: needs a context mask (--context)")
    if context:
        values["context"] = {k: _voxels(v) if k in ("distance", "reach") else v for k, v in context.items()}
    method = _method_values(args)
    loose = None
    if method is not None and "name" in method:
        values["method"] = method
    elif method:
        loose = method
    return build(PickOptions, values, flags=_flags()), loose


def _flags() -> dict[str, str]:
    """Option field (dotted for nested ones) -> the flag that sets it, for error messages."""
    return {**FLAGS, **{f"context.{k}": f for k, f in CONTEXT_FLAGS.items()},
            **{f"method.{k}": f"--{k.replace('_', '-')}" for k in _method_fields()}}


def _with_loose(options: Any, loose: dict[str, Any] | None) -> Any:
    """``options`` with parameters given without ``--method`` set on its method, where they apply."""
    if not loose:
        return options
    fields = options.method.model_fields
    extra = {k: v for k, v in loose.items() if k in fields}
    if not extra:
        return options
    method = options.method.model_dump(exclude_unset=True) | {"name": options.method.name} | extra
    return build(PickOptions, options.model_dump(exclude_unset=True) | {"method": method}, flags=_flags())


def run(args: argparse.Namespace) -> int:
    from deepict_dask.cli.common import spec_from_args
    from deepict_dask.cluster import dask_client
    from deepict_dask.io import show_progress
    from deepict_dask.pick.api import (
        map_classes,
        merge_results,
        open_map,
        pick,
        plan_picks,
        tuned_settings,
        write_outputs,
    )

    refuse_existing(args.out, args.summary, overwrite=args.overwrite)
    options, loose = options_from_args(args)
    with dask_client(spec_from_args(args)), show_progress(progress_wanted(args)):
        vol = open_map(args.map, group=args.group, chunks=args.chunks)
        tuned, model = tuned_settings(vol)
        groups, notes = plan_picks(args.classes or map_classes(vol), tuned, options) if tuned else \
            ([(args.classes, options)], {})
        groups = [(classes, _with_loose(o, loose)) for classes, o in groups]
        if loose and not any(set(loose) <= set(o.method.model_fields) for _, o in groups):
            raise ConfigError(f"{', '.join('--' + k.replace('_', '-') for k in loose)}: no parameter of method "
                              f"{', '.join(sorted({o.method.name for _, o in groups}))} (choose one with --method)")
        for cls, note in notes.items():
            print(f"{cls}: {', '.join(f'{k} {v}' for k, v in note.items())} (defaults tuned for the model {model})")
        result = merge_results([pick(vol, o, classes=classes, tomo=args.tomo,
                                     labels=bool(args.labels_out) or args.centerline) for classes, o in groups])
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

