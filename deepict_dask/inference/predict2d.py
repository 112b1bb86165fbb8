"""2D models (DeePiCt compartments): per-slice tiles, restacked and smoothed along z.

Each z-slice is covered by an evenly spaced grid of tiles (288 x 288 by default) over the
reflect-padded slice (48 px); each tile keeps its centre (48 px cropped per side) and overlapping
centres are averaged. The stack of slices is then smoothed by a 1D Gaussian along z; the Dask
overlap along z supplies the neighbouring slices, so blocks agree with the whole-volume result.
"""

from __future__ import annotations

from collections.abc import Callable

import dask.array as da
import numpy as np
from scipy.ndimage import gaussian_filter1d

from deepict_dask.inference.blockwise import Predictor, blockwise_predict
from deepict_dask.inference.windows import axis_grid

DEFAULT_MARGIN_2D = 48
DEFAULT_SIGMA_Z = 5.0
DEFAULT_THRESHOLD_2D = 0.75
TRUNCATE = 4.0


def grids_2d(shape: tuple[int, ...], tile: int, margin: int, blend: str = "crop") -> tuple:
    nz, ny, nx = shape
    return (
        axis_grid(nz, 1, 0, layout="slices"),
        axis_grid(ny, tile, margin, layout="even", blend=blend),
        axis_grid(nx, tile, margin, layout="even", blend=blend),
    )


def _smooth_z(block: np.ndarray, sigma: float) -> np.ndarray:
    return gaussian_filter1d(block, sigma, axis=1, mode="reflect", truncate=TRUNCATE)


def predict2d(
    x: da.Array,
    get_predictor: Callable[[], Predictor],
    n_out: int,
    *,
    tile: int = 288,
    margin: int = DEFAULT_MARGIN_2D,
    blend: str = "crop",
    sigma_z: float = DEFAULT_SIGMA_Z,
    z_chunk: int = 16,
    yx_chunk: int = 1024,
    gpu: bool = False,
    normalize: tuple[float, float] | None = None,
) -> da.Array:
    """Lazy float32 ``(n_out, z, y, x)`` prediction of a normalized ZYX array (or of a raw one
    z-scored in the tasks with ``normalize=(mean, std)``), smoothed along z.

    Parameters
    ----------
    x : dask.array.Array
        The ZYX tomogram.
    get_predictor : callable
        Returns the predictor (batch of tiles -> probabilities); called in the tasks, so that each
        worker loads the model once.
    n_out : int
        Output channels of the network.
    tile : int
        Tile edge in pixels (y and x).
    margin : int
        Pixels cropped per tile side (``crop``) or weighted down (``gaussian``).
    blend : str
        ``"crop"`` or ``"gaussian"``: how overlapping tiles are combined.
    sigma_z : float
        Sigma (slices) of the Gaussian smoothing along z; 0 smooths nothing.
    z_chunk, yx_chunk : int
        Output chunk edges along z and along y/x.
    gpu : bool
        Annotate the tasks with ``resources={"GPU": 1}``.
    normalize : (float, float), optional
        ``(mean, std)`` to z-score raw data inside the tasks; None: ``x`` is normalized already.

    Returns
    -------
    dask.array.Array
        Lazy float32 probabilities, ``(n_out, z, y, x)``.
    """
    shape = x.shape
    grids = grids_2d(shape, tile, margin, blend)
    out_chunks = tuple(
        tuple(min(c, n - i) for i in range(0, n, c)) for n, c in zip(shape, (z_chunk, yx_chunk, yx_chunk))
    )
    p = blockwise_predict(x, grids, out_chunks, get_predictor, n_out, out_dtype="float32", gpu=gpu,
                          normalize=normalize)
    if sigma_z <= 0:
        return p
    radius = int(TRUNCATE * sigma_z + 0.5)
    depth = {0: 0, 1: min(radius, max(shape[0] - 1, 0)), 2: 0, 3: 0}
    return da.map_overlap(_smooth_z, p, depth=depth, boundary="none", dtype=np.float32, sigma=sigma_z)
