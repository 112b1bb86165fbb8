"""deepict_dask: find molecules and cellular structures in cryo-electron tomograms at cluster scale."""

import os

__version__ = "0.1.0"

# PyTorch's CPU allocator backs large tensors with transparent huge pages when this is set. Every
# forward pass of a 3D U-Net allocates (and the kernel zeroes) gigabytes of activations; with 4 KiB
# pages that cost 4.5 million page faults per 8 windows of 160^3 and made CPU inference 14-38 %
# slower (benchmarks/bench_predict.py, ``thp_speedup``). torch reads the variable once, at its first
# allocation, so it is set here, before any of our modules import torch; Dask worker processes
# inherit it. Set THP_MEM_ALLOC_ENABLE=0 to opt out.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
