"""``deepict model-info``: what a model file contains (classes, architecture, cost, provenance)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "model-info",
        help="describe a model file",
        description="Print a model's dimensionality, classes, architecture, parameter count, FLOPs per "
        "voxel, voxel size and training provenance. MODEL is a .safetensors file or a demo model name "
        "(demo3d, demo2d).",
    )
    p.add_argument("model", metavar="MODEL", help="model file or demo model name")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from deepict_dask.models import describe, load_model, resolve_model_path

    module, info = load_model(resolve_model_path(args.model), probabilities=False)
    d = describe(info, module)
    if args.json:
        print(json.dumps(d, indent=2, default=str))
        return 0
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"{d['name']} ({args.model})", show_header=False)
    t.add_column("key", style="bold")
    t.add_column("value")
    arch = ", ".join(f"{k}={v}" for k, v in d["architecture"].items())
    rows = [
        ("dimensionality", d["dimensionality"]),
        ("classes", ", ".join(d["classes"])),
        ("activation", f"{d['activation']} ({d['output_channels']} output channels)"),
        ("architecture", arch),
        ("parameters", f"{d['parameters']:,}"),
        ("FLOPs per voxel", f"{d['flops_per_voxel']:,.0f}"),
        ("patch size", " x ".join(str(p) for p in d["patch_size"])),
        ("voxel size", f"{d['voxel_size_A']:g} Å (tolerance {100 * d['voxel_size_tolerance']:.0f}%)"),
        ("normalization", d["normalization"]),
        ("software", d["software_version"]),
    ]
    for cls, entry in d["picking"].items():
        rows.append((f"picking: {cls}", ", ".join(f"{k} {v}" for k, v in entry.items())))
    for k, v in d["trained"].items():
        rows.append((f"trained: {k}", json.dumps(v) if isinstance(v, (dict, list)) else str(v)))
    for k, v in rows:
        t.add_row(k, str(v))
    Console().print(t)
    return 0
