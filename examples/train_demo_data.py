"""Simulate the training / validation tomograms of the shipped demo models.

    python examples/train_demo_data.py [--out demo_out/train_data] [--shape 128 256 256]

Writes the simulator's documented layout (tomograms/, labels/, tables/, meta/) for seeds 101-103
(training) and 104 (validation); ``examples/train_demo3d.yaml`` and ``train_demo2d.yaml`` read them.
Seeds >= 200 are never used for training: use them to evaluate.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from deepict_dask.simulate import simulate_tomogram, write_simulation

SEEDS = (101, 102, 103, 104)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="demo_out/train_data", help="output directory (default: %(default)s)")
    p.add_argument("--shape", type=int, nargs=3, default=(128, 256, 256), metavar=("Z", "Y", "X"))
    p.add_argument("--voxel-size", type=float, default=13.48)
    args = p.parse_args()
    for seed in SEEDS:
        sim = simulate_tomogram(tuple(args.shape), args.voxel_size, seed=seed, preset="cell")
        paths = write_simulation(sim, Path(args.out))
        print(seed, paths["tomogram"], dict(sim.table["class"].value_counts()))


if __name__ == "__main__":
    main()
