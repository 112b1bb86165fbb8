"""The spectrum filter's settings: one model for the run config, ``deepict filter`` and the API.

Each bound is written once, here, from what the filter does (:mod:`.equalize`):

* ``lowpass_cutoff`` is a fraction of the input's Nyquist frequency, in ``(0, 1]``. The filter is a
  spherical band limit (zero beyond Nyquist), so a cutoff above 1 would change nothing but the
  sigmoid's tail; ``None`` (``--no-lowpass``) matches the spectrum up to Nyquist.
* ``lowpass_width`` is the sigmoid's 1/e scale, also a fraction of Nyquist, in ``[0, 1]``; 0 is a
  hard step (a sharp step needs a larger halo in blockwise mode).
* ``halo`` (blockwise: kernel half-width, voxels) ``>= 0`` or ``None`` to choose it from
  ``halo_energy`` in ``(0, 1]``, at most ``max_halo >= 1``; ``block_size >= 8`` voxels.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from deepict_dask.options import Options

LOWPASS_CUTOFF = 0.5
LOWPASS_WIDTH = 0.05
HALO_ENERGY = 0.99999
MAX_HALO = 48
BLOCK_SIZE = 128


class FilterOptions(Options):
    """DeePiCt's amplitude-spectrum equalization filter (``enabled: false``: only normalize).

    Parameters
    ----------
    enabled
        Equalize the spectrum; when false the tomogram is only normalized (mean 0, variance 1).
    target
        Target spectrum file (``.tsv`` from ``deepict spectrum``) or ``default`` (the shipped one).
    mode
        ``exact`` (one whole-volume FFT), ``blockwise`` (overlap-save, bounded memory) or ``auto``
        (exact when it fits the smallest worker's memory).
    lowpass_cutoff, lowpass_width
        Sigmoid low-pass, fractions of Nyquist (see the module docstring for the bounds).
    halo, halo_energy, max_halo, block_size, spectrum_method
        Blockwise mode: kernel half-width (default: from ``halo_energy``), largest automatic halo,
        block edge, and how the input spectrum is measured (``auto``: Welch, bounded memory).
    """

    enabled: bool = Field(True, description="equalize the spectrum (false: only normalize)")
    target: str = Field("default", description="target spectrum file (.tsv) or 'default' (shipped)")
    mode: Literal["auto", "exact", "blockwise"] = "auto"
    lowpass_cutoff: float | None = Field(LOWPASS_CUTOFF, gt=0, le=1, description="sigmoid low-pass cutoff, fraction of "
                                         "Nyquist (null: no low-pass)")
    lowpass_width: float = Field(LOWPASS_WIDTH, ge=0, le=1, description="sigmoid low-pass width, fraction of Nyquist "
                                 "(0: hard cutoff)")
    halo: int | None = Field(None, ge=0, description="blockwise: kernel half-width, voxels (default: from halo_energy)")
    halo_energy: float = Field(HALO_ENERGY, gt=0, le=1, description="blockwise: kernel energy the halo must hold")
    max_halo: int = Field(MAX_HALO, ge=1, description="blockwise: largest automatic halo, voxels")
    block_size: int = Field(BLOCK_SIZE, ge=8, description="blockwise: block edge, voxels")
    spectrum_method: Literal["auto", "exact", "welch"] = Field(
        "auto", description="blockwise: how the input spectrum is measured (auto: Welch)")

    @property
    def target_path(self) -> str | None:
        """The target file, or ``None`` for the shipped spectrum."""
        return None if self.target == "default" else self.target
