"""3D models: cubic windows on a grid tiled from voxel 0, blended by cropping or Gaussian weights."""

from __future__ import annotations

from collections.abc import Callable

import dask.array as da

from deepict_dask.inference.blockwise import Predictor, blockwise_predict
from deepict_dask.inference.windows import aligned_chunks, axis_grid

DEFAULT_MARGIN_3D = 12  # DeePiCt: 64^3 boxes with 12 voxels of overlap per side


def grids_3d(shape: tuple[int, ...], window: int, margin: int, blend: str) -> tuple:
    return tuple(axis_grid(n, window, margin, layout="tiled", blend=blend) for n in shape)


def predict3d(
    x: da.Array,
    get_predictor: Callable[[], Predictor],
    n_out: int,
    *,
    window: int,
    margin: int = DEFAULT_MARGIN_3D,
    blend: str = "crop",
    chunk: int = 256,
    out_dtype: str = "float32",
    gpu: bool = False,
    normalize: tuple[float, float] | None = None,
) -> da.Array:
    """Lazy ``(n_out, z, y, x)`` prediction of a normalized ZYX array (or of a raw one z-scored in
    the tasks with ``normalize=(mean, std)``).

    Output chunks are ``chunk`` rounded to whole window cores, so with ``crop`` no window is ever
    computed twice; any other chunking gives the same values.

    Parameters
    ----------
    x : dask.array.Array
        The ZYX tomogram.
    get_predictor : callable
        Returns the predictor (batch of windows -> probabilities); called in the tasks, so that each
        worker loads the model once.
    n_out : int
        Output channels of the network.
    window : int
        Window edge in voxels (all three axes).
    margin : int
        Voxels cropped per window side (``crop``) or weighted down (``gaussian``).
    blend : str
        ``"crop"`` or ``"gaussian"``: how overlapping windows are combined.
    chunk : int
        Wanted output chunk edge (rounded to whole window cores).
    out_dtype : str
        Output dtype: ``float32``, ``float16`` or ``uint8`` (probability * 255).
    gpu : bool
        Annotate the tasks with ``resources={"GPU": 1}``.
    normalize : (float, float), optional
        ``(mean, std)`` to z-score raw data inside the tasks; None: ``x`` is normalized already.

    Returns
    -------
    dask.array.Array
        Lazy probabilities, ``(n_out, z, y, x)``, of ``out_dtype``.
    """
    grids = grids_3d(x.shape, window, margin, blend)
    out_chunks = tuple(aligned_chunks(n, g, chunk) for n, g in zip(x.shape, grids))
    return blockwise_predict(x, grids, out_chunks, get_predictor, n_out, out_dtype=out_dtype, gpu=gpu,
                             normalize=normalize)
