"""Synthetic cryo-ET tomograms with ground truth (``deepict simulate``).

Public API::

    sim = simulate_tomogram(shape=(128, 256, 256), voxel_size=13.48, seed=0, preset="cell",
                            imaging="defocus", **overrides)
    write_simulation(sim, out_dir, name=None, fmt="mrc")   # layout: see writer.py / output_paths
    write_preview(sim, "preview.png")

See :class:`SimulatedTomogram` for what a simulation holds, :data:`CLASS_IDS` for the label values.
"""

from .imaging import IMAGING_PRESETS, ImagingParams, ctf_1d, ctf_zeros
from .presets import COMPARTMENTS, CONTENT_PRESETS, ContentParams
from .preview import write_preview
from .shapes import CLASS_IDS, FILAMENT_CLASSES, PARTICLE_CLASSES
from .tomogram import SimulatedTomogram, simulate_tomogram
from .writer import output_paths, write_simulation

__all__ = [
    "CLASS_IDS", "COMPARTMENTS", "CONTENT_PRESETS", "FILAMENT_CLASSES", "IMAGING_PRESETS", "PARTICLE_CLASSES",
    "ContentParams", "ImagingParams", "SimulatedTomogram", "ctf_1d", "ctf_zeros", "output_paths",
    "simulate_tomogram", "write_preview", "write_simulation",
]
