"""``deepict train``: train a 2D or 3D U-Net from a YAML config."""

from __future__ import annotations

import argparse

from deepict_dask.cli.common import add_progress_arg, progress_wanted


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a U-Net from tomograms and labels",
        description="Train a 2D (compartments) or 3D (particles, membranes) U-Net as described by CONFIG "
        "(YAML; see --print-example). Patches are read lazily from MRC/Zarr; checkpoints, log.csv and the "
        "final self-describing model file go to output.dir.",
    )
    p.add_argument("config", nargs="?", metavar="CONFIG", help="training configuration (YAML)")
    p.add_argument("--print-example", action="store_true", help="print a commented example config and exit")
    p.add_argument("--resume", action="store_true", help="continue from output.dir/checkpoint_last.pt")
    p.add_argument("--steps", type=int, metavar="N", help="override training.steps")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="override training.device")
    p.add_argument("--max-minutes", type=float, metavar="M",
                   help="time budget (override training.max_minutes): stop cleanly after M minutes, keeping the "
                   "best checkpoint; --resume continues")
    add_progress_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import shlex

    from deepict_dask.errors import ConfigError
    from deepict_dask.train import EXAMPLE, load_config, train

    if args.print_example:
        print(EXAMPLE, end="")
        return 0
    if not args.config:
        raise ConfigError("give a CONFIG.yaml (or --print-example to see one)")
    cfg = load_config(args.config)
    if args.steps:
        cfg.training.steps, cfg.training.epochs = args.steps, None
    if args.device:
        cfg.training.device = args.device
    if args.max_minutes is not None:
        if args.max_minutes <= 0:
            raise ConfigError(f"--max-minutes must be positive, got {args.max_minutes:g}")
        cfg.training.max_minutes = args.max_minutes
    command = " ".join(["deepict", "train", shlex.quote(str(args.config))]
                       + (["--resume"] if args.resume else []) + ([f"--steps {args.steps}"] if args.steps else [])
                       + ([f"--max-minutes {args.max_minutes:g}"] if args.max_minutes else []))
    result = train(cfg, resume=args.resume, progress=progress_wanted(args), command=command)
    best = result.best or {}
    budget = " (time budget reached; --resume continues)" if result.time_budget_reached else ""
    print(f"trained {result.steps} steps{budget}; model: {result.model_path}")
    if best:
        f1 = ", ".join(f"{k} {v:.3f}" for k, v in best.get("val_voxel_f1", {}).items())
        print(f"best validation (step {best.get('step')}): loss {best.get('val_loss')}, voxel F1 {f1}")
    print(f"throughput: steady state {result.steady_voxels_per_second:,.0f} voxels/s ({result.seconds_per_step:.3g} s/step); "
          f"including start-up {result.voxels_per_second:,.0f} voxels/s; data wait {100 * result.data_wait_fraction:.1f}% "
          "of the time")
    return 0
