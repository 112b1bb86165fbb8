"""``deepict predict``: probability maps for many tomograms with a trained 2D or 3D U-Net."""

from __future__ import annotations

import argparse
import os
import sys

from deepict_dask.cli.common import (
    InputFailures,
    add_cluster_args,
    add_deprecated_alias,
    add_overwrite_arg,
    add_progress_arg,
    progress_wanted,
    spec_from_args,
)
from deepict_dask.cli.options_flags import add_option_flags, options_from_args
from deepict_dask.inference.options import PredictOptions

FLAGS = {
    "window": "--patch", "margin": "--overlap", "blend": "--blend", "chunk": "--chunks",
    "batch_size": "--batch-size", "dtype": "--dtype", "tta": "--tta", "device": "--device",
    "precision": "--precision", "rescale": "--no-rescale", "threshold": "--threshold", "sigma_z": "--sigma-z",
    "channels_last": "--no-channels-last",
}
"""Option field -> the flag that sets it, so an error names both."""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "predict",
        help="apply a trained model to tomograms (probability maps into OME-Zarr)",
        description="Apply a trained 2D or 3D U-Net to tomograms, blockwise on Dask. Writes "
        "<out>/<tomo>.ome.zarr with a predictions/<model> image (one channel per class) and, for 2D "
        "models or with --threshold, a labels/<model> mask.",
    )
    p.add_argument("tomograms", nargs="+", metavar="TOMO", help="tomograms (MRC, Zarr or OME-Zarr)")
    p.add_argument("--model", required=True, help="model file (.safetensors) or a demo model name (demo3d, demo2d)")
    p.add_argument("-o", "--out", required=True, metavar="DIR", help="output directory")
    add_option_flags(p, PredictOptions, FLAGS, metavar={"chunk": "N"}, help={
        "chunk": "output block edge in voxels (rounded to whole window cores; default %(default)s)",
        "window": "window edge: 3D cube (default 160 on CPU, 128 on GPU) or 2D tile (default: the model's, 288)",
        "margin": "margin cropped from each window side (default 12 for 3D, 48 for 2D)",
        "blend": "crop window margins (DeePiCt, default) or Gaussian weighting (nnU-Net)",
        "batch_size": "windows per forward pass (default: 2 on CPU, from free memory on GPU)",
        "dtype": "stored probability type (uint8: value/255; default)",
        "tta": "test-time augmentation keeping the missing wedge: 180-degree rotations (4 passes) or all flips "
               "incl. mirror images (8); writes a variance map",
        "threshold": "also write a mask of voxels at or above this probability (2D default 0.75)",
        "sigma_z": "2D models: Gaussian smoothing along z in slices (default %(default)g; 0 = off)",
        "rescale": "refuse tomograms whose voxel size differs from the model's instead of rescaling",
        "device": "auto (GPU if present), cpu, cuda or cuda:N",
        "precision": "autocast precision (auto: fp16 on GPU, fp32 on CPU). On CPU, bf16 measured 1.1-1.9x faster "
                     "but changed the shipped demo3d model's probabilities by up to 0.07 (0.5%% of voxels crossed "
                     "0.5), so it is not the default",
        "channels_last": "3D on CPU: keep torch's default memory layout instead of channels_last_3d (which "
                         "measured 1.8-2.4x faster with the same probabilities to 1e-6)",
    })
    add_deprecated_alias(p, "--chunk", "--chunks", dest="chunks", type=int)
    p.add_argument("--voxel-size", type=float, metavar="A",
                   help="voxel size in Angstrom, replacing the files' (required for headers without one)")
    p.add_argument("--max-in-flight", type=int, default=2, help="tomograms processed at the same time (bounds memory; default 2)")
    add_overwrite_arg(p, "an existing prediction of this model")
    add_progress_arg(p)
    add_cluster_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from deepict_dask.cluster import dask_client
    from deepict_dask.errors import DeepictError, InputError
    from deepict_dask.inference.predict import make_ref, predict_many
    from deepict_dask.models import load_model, resolve_model_path

    options = options_from_args(PredictOptions, args, FLAGS)
    missing = [t for t in args.tomograms if not os.path.exists(t)]
    if missing:
        raise InputError("no such file or directory", missing[0])
    model_path = resolve_model_path(args.model)
    load_model(model_path, probabilities=False)  # a bad model is one error now, not one per tomogram later
    ref = make_ref(model_path, options)
    failures = InputFailures("predict", len(args.tomograms))
    columns = (TextColumn("predict"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with dask_client(spec_from_args(args)), \
            Progress(*columns, console=Console(stderr=True), disable=not progress_wanted(args),
                     redirect_stdout=sys.stdout.isatty()) as bar:
        task = bar.add_task("predict", total=len(args.tomograms))

        def done(tomo: str, path, exc) -> None:
            if exc is not None:
                failures.report(exc if getattr(exc, "path", None) else DeepictError(str(exc), tomo))
            else:
                print(f"{tomo} -> {path}", flush=True)
            bar.advance(task)

        predict_many(args.tomograms, ref, args.out, options, overwrite=args.overwrite,
                     max_in_flight=args.max_in_flight, on_done=done, voxel_size=args.voxel_size)
    return failures.exit_code()
