"""deepict_dask: find molecules and cellular structures in cryo-electron tomograms at cluster scale."""

__version__ = "0.1.0"
