"""Content presets (what is in the cell) and the validation of user overrides.

Concentrations are particles per (1000 Angstrom)^3, i.e. per 0.001 cubic micrometre, in the named
compartment; counts follow from the compartment's volume in the ice slab, so a larger tomogram holds
proportionally more. Explicit ``counts`` or the ``crowded`` ribosome volume fraction replace them.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields

from deepict_dask.errors import ConfigError

from .imaging import IMAGING_PRESETS, ImagingParams
from .shapes import CLASS_IDS, FILAMENT_CLASSES, PARTICLE_CLASSES

#: Compartment codes of the ``compartments`` volume.
COMPARTMENTS = {"outside": 0, "cytosol": 1, "organelle": 2, "vesicle": 3}


@dataclass
class ContentParams:
    """What a simulated tomogram contains. Lengths in Angstrom."""

    classes: tuple[str, ...] = PARTICLE_CLASSES
    #: per (1000 A)^3 of cytosol
    concentration: dict[str, float] = field(
        default_factory=lambda: {"ribosome": 8.0, "fas": 1.0, "proteasome": 4.0, "globular": 25.0}
    )
    #: per (1000 A)^3 of organelle lumen (a different, protein-rich matrix)
    lumen_concentration: dict[str, float] = field(default_factory=lambda: {"globular": 60.0, "proteasome": 2.0})
    #: exact per-class counts; replaces the concentrations of those classes (an error if they cannot fit)
    counts: dict[str, int] | None = None
    #: ribosome volume fraction of the cytosol (e.g. 0.1), for touching particles (an error if they cannot fit)
    crowded: float | None = None
    #: fraction of ribosomes docked on the cytosolic face of membranes (flagged ``membrane_bound``)
    membrane_bound_fraction: float = 0.15
    organelles: bool = True
    double_envelope: bool = True
    plasma_membrane: bool = True
    #: vesicles per (1000 A)^2 of slab area (x*y); None: none
    vesicle_density: float = 0.25
    vesicle_radius: tuple[float, float] = (200.0, 550.0)
    #: filaments per (10000 A)^2 of slab area
    microtubule_density: float = 8.0
    actin_density: float = 25.0
    #: gold beads per square micrometre on each ice surface; radius 50 A (10 nm gold)
    fiducial_density: float = 20.0
    fiducial_radius: float = 50.0
    #: multipliers of the particles' and the membranes' contrast over their surroundings (1: the
    #: shapes' own amplitudes); vary them to train on weaker or stronger staining-free contrast
    particle_contrast: float = 1.0
    membrane_contrast: float = 1.0
    #: ice slab thickness as a fraction of the z extent (centred); vacuum outside
    ice_fraction: float = 0.8
    #: density of ice over vacuum, and of each compartment's background over ice
    ice_contrast: float = 1.0
    background: dict[str, float] = field(
        default_factory=lambda: {"cytosol": 0.04, "organelle": 0.10, "vesicle": 0.0, "outside": 0.0}
    )
    #: unresolved small proteins (texture), per (100 A)^3, per compartment
    crowders: dict[str, float] = field(
        default_factory=lambda: {"cytosol": 1.0, "organelle": 2.0, "vesicle": 0.1, "outside": 0.1}
    )

    @classmethod
    def names(cls) -> set[str]:
        return {f.name for f in fields(cls)}


CONTENT_PRESETS: dict[str, dict] = {
    # A cell-like lamella: organelle with a double envelope, vesicles, plasma membrane, filaments,
    # four particle classes, gold.
    "cell": {},
    # The same, with ribosomes packed to ~10 % of the cytosol volume (touching particles).
    "crowded": {"crowded": 0.10, "vesicle_density": 0.1, "microtubule_density": 1.0, "actin_density": 4.0},
    # Particles only, in plain ice: no membranes, filaments or gold (simple detection tests).
    "particles": {
        "organelles": False, "plasma_membrane": False, "vesicle_density": 0.0, "microtubule_density": 0.0,
        "actin_density": 0.0, "fiducial_density": 0.0, "membrane_bound_fraction": 0.0,
    },
}


def resolve(preset: str, imaging: str, overrides: dict) -> tuple[ContentParams, ImagingParams]:
    """Apply a content preset, an imaging preset and user overrides; reject unknown names and values."""
    if preset not in CONTENT_PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(CONTENT_PRESETS)}")
    if imaging not in IMAGING_PRESETS:
        raise ConfigError(f"unknown imaging preset {imaging!r}; choose one of {', '.join(IMAGING_PRESETS)}")
    content_keys, imaging_keys = ContentParams.names(), ImagingParams.names()
    unknown = sorted(set(overrides) - content_keys - imaging_keys)
    if unknown:
        raise ConfigError(
            f"unknown simulation option(s) {', '.join(unknown)}; known: {', '.join(sorted(content_keys | imaging_keys))}"
        )
    c_kw = copy.deepcopy(CONTENT_PRESETS[preset])
    i_kw = dict(IMAGING_PRESETS[imaging])
    for k, v in overrides.items():
        if v is None and k not in ("counts", "crowded"):
            continue
        (c_kw if k in content_keys else i_kw)[k] = v
    content = ContentParams(**c_kw)
    img = ImagingParams(**i_kw)
    _validate(content, img)
    return content, img


def _check_classes(names, what: str, allowed=PARTICLE_CLASSES) -> None:
    bad = [n for n in names if n not in allowed]
    if bad:
        kind = "particle class" if allowed == PARTICLE_CLASSES else "class"
        raise ConfigError(f"unknown {kind}(es) {', '.join(map(repr, bad))} in {what}; known: {', '.join(allowed)}")


def _validate(c: ContentParams, p: ImagingParams) -> None:
    c.classes = tuple(c.classes)
    _check_classes(c.classes, "classes", tuple(CLASS_IDS))
    for k in c.classes:
        if k in FILAMENT_CLASSES:
            raise ConfigError(f"{k!r} is a filament; set {k}_density instead of listing it in classes")
    _check_classes(c.concentration, "concentration")
    _check_classes(c.lumen_concentration, "lumen_concentration")
    if c.counts is not None:
        _check_classes(c.counts, "counts")
        for k, n in c.counts.items():
            if int(n) < 0:
                raise ConfigError(f"count of {k} must be >= 0, got {n}")
    if c.crowded is not None and not (0 < c.crowded < 0.3):
        raise ConfigError(f"crowded (ribosome volume fraction) must be in (0, 0.3), got {c.crowded}")
    if not (0 < c.ice_fraction <= 1):
        raise ConfigError(f"ice_fraction must be in (0, 1], got {c.ice_fraction}")
    if not (0 <= c.membrane_bound_fraction <= 1):
        raise ConfigError(f"membrane_bound_fraction must be in [0, 1], got {c.membrane_bound_fraction}")
    for name in ("particle_contrast", "membrane_contrast"):
        if not (getattr(c, name) > 0):
            raise ConfigError(f"{name} must be > 0, got {getattr(c, name)}")
    for name in ("vesicle_density", "microtubule_density", "actin_density", "fiducial_density"):
        if getattr(c, name) < 0:
            raise ConfigError(f"{name} must be >= 0, got {getattr(c, name)}")
    if not (p.snr > 0):
        raise ConfigError(f"snr must be > 0, got {p.snr}")
    if p.defocus_um < 0:
        raise ConfigError(f"defocus_um must be >= 0 (underfocus), got {p.defocus_um}")
    if not (-90 < p.tilt_min < p.tilt_max < 90):
        raise ConfigError(f"tilt range must satisfy -90 < min < max < 90, got {p.tilt_min}..{p.tilt_max}")
    if not (0 <= p.amplitude_contrast < 1):
        raise ConfigError(f"amplitude_contrast must be in [0, 1), got {p.amplitude_contrast}")
    if p.voltage_kv <= 0:
        raise ConfigError(f"voltage_kv must be > 0, got {p.voltage_kv}")
