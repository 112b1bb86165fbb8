"""The commented example configuration written by ``deepict init-config``.

It doubles as documentation of every section; a test checks that it validates.
"""

from __future__ import annotations

EXAMPLE = """\
# deepict run configuration. Validate and run with:  deepict run {config_name}
# Relative paths are taken from the directory holding this file.
schema_version: 2                 # 1: predict keys on models, picking keys on targets (still read, with a warning)

inputs:
  # Tomograms: files or glob patterns (.mrc .rec .mrcs .st .ali, Zarr or OME-Zarr directories).
  paths:
    - "{inputs}"
  # manifest: tomograms.txt        # or a file with one path per line (or a CSV with a 'path' column)
  voxel_size: {voxel_size}              # expected voxel size in A; null = the first file's
  voxel_size_tolerance: 0.02      # relative; files outside it are listed and the run refuses to start
  # truth: "truth/{{name}}.csv"    # ground-truth particles per tomogram ({{name}} = tomogram name);
                                  # when given, the run is evaluated (picking precision/recall/F1)

output:
  dir: {out}                # run directory: tomograms/, tables/, manifest/, summary, report
  table_formats: [csv, star]      # per-tomogram tables: csv, star (RELION), json (copick)
  chunks: 128                     # OME-Zarr chunk edge in voxels
  levels: 3                       # pyramid levels of each converted tomogram
  report: true                    # HTML report of the run (report.html)
  # tilt_series_pixel_size: 3.37  # A, for RELION's rlnTomoTiltSeriesPixelSize (default: assume the voxel size)

preprocess:
  normalize: true                 # zero mean, unit variance (whole-tomogram statistics)
  filter:                         # DeePiCt's amplitude-spectrum equalization
    enabled: true
    target: default               # target spectrum .tsv (deepict spectrum REF -o target.tsv) or default
    lowpass_cutoff: 0.5           # sigmoid low-pass cutoff, fraction of Nyquist
    lowpass_width: 0.05
    mode: auto                    # exact (one FFT per tomogram) | blockwise (overlap-save) | auto

models:                           # networks run on every tomogram (predictions/<name> in the OME-Zarr)
  - name: cyto2d
    path: demo2d                  # a .safetensors model file, or a shipped model: demo2d, demo3d
  - name: particles3d
    path: demo3d
    predict:                      # how to run it (the same settings as deepict predict)
      dtype: uint8                # stored probability precision: uint8 | float16 | float32
      # batch_size: 4             # windows per forward pass (default: adapted to the device)
      # window: 96                # window edge in voxels (default: 160 on CPU, 128 on GPU; 2D: the model's)
      # margin: 12                # voxels cropped per window side (deepict predict --overlap)
      # blend: crop               # crop (DeePiCt) | gaussian (nnU-Net)
      # device: auto              # auto | cpu | cuda | cuda:N

targets:                          # what to find: a class of a model -> particles or a segmentation
  - name: cytosol                 # a segmentation (binary mask in labels/cytosol) used as context
    model: cyto2d
    kind: segmentation
    pick:
      threshold: 0.5
  - name: ribosome
    model: particles3d            # 'class:' defaults to the target's name
    pick:                         # unset keys: the values tuned for the model and class, else built in
      threshold: 0.5              # probability threshold
      min_size: 20                # cluster size limits in voxels (inclusive)
      max_size: 20000
      connectivity: 26
      method: cc                  # cc (connected components) | watershed | peaks | meanshift, by name or
                                  # with parameters: {{name: watershed, min_distance: 80A, coarsen: auto}}
      context:                    # DeePiCt's context rule with a segmentation target
        target: cytosol
        mode: intersection        # intersection | contact (default) | colocalization (with distance: 50A)
  - name: fas
    model: particles3d
    pick:
      threshold: 0.5
      min_size: 20
  - name: membrane
    model: particles3d
    kind: segmentation
    pick:
      threshold: 0.5

evaluation:
  tolerance: 60                   # match radius for picks vs truth
  unit: A                         # A | vox

execution:
  # max_in_flight: 8              # tomograms submitted at once (default: 2 per worker)
  retries: 1                      # extra attempts of a failing task (dead workers are always retried)
  gpu: auto                       # GPU=1 resource on predictions: auto (if a worker has one) | yes | no

cluster:
  kind: local                     # local | scheduler | slurm | pbs | sge  (see deploy/README.md)
  # scheduler: tcp://host:8786    # or a scheduler file (kind: scheduler)
  # workers: 2                    # local workers (default: one per core)
  # threads_per_worker: 1
  # memory_limit: 8GiB
  # jobs: 4                       # jobqueue jobs
  # jobqueue: {{}}                  # extra dask-jobqueue arguments (profile in ~/.config/dask/jobqueue.yaml)
  # worker_wait: 300              # seconds the first jobqueue worker may take to join, then an error
  # dashboard: 127.0.0.1:8787     # this host only (no login on it; SSH tunnel); ':8787' opens it to all
"""


def example_config(
    inputs: str = "tomograms/*.mrc", out: str = "deepict_out", voxel_size: float | None = None,
    config_name: str = "run.yaml",
) -> str:
    """The commented example, with the given input pattern, run directory and voxel size."""
    vs = "null" if voxel_size is None else f"{voxel_size:g}"
    return EXAMPLE.format(inputs=inputs, out=out, voxel_size=vs, config_name=config_name)
