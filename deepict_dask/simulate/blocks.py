"""Render any block of a scene: noise-free density, unresolved crowders and every truth volume.

Everything here is a function of the scene and absolute voxel positions only, so a large volume can
be rendered block by block (with halos) and the pieces agree exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import randomfield
from .filaments import filament_block
from .membranes import bilayer_density, membrane_half_width, surface_distance_on_block
from .placement import Scene
from .presets import COMPARTMENTS
from .render import particle_footprint, paste
from .shapes import CLASS_IDS

GOLD_CONTRAST = 6.0
CROWDER_SIGMA = 18.0  # Angstrom: unresolved ~50 A proteins
CROWDER_MASS = 0.35 * (2 * np.pi) ** 1.5 * CROWDER_SIGMA**3  # peak 0.35 after blurring
STREAM_CROWDERS, STREAM_NOISE = 11, 12


@dataclass
class Block:
    density: np.ndarray  # float32, relative to vacuum
    crowders: np.ndarray  # float32 point masses (to be blurred by CROWDER_SIGMA)
    labels: np.ndarray  # uint8 class ids
    instance: np.ndarray  # uint32 particle ids (table row + 1)
    membrane: np.ndarray  # uint8 0/1
    compartments: np.ndarray  # uint8 codes
    snr_mask: np.ndarray  # bool: in the ice and away from gold (where the SNR is measured)


def render_block(scene: Scene, lo, shape) -> Block:
    lo = np.asarray(lo, int)
    shape = tuple(int(s) for s in shape)
    vs = scene.voxel_size
    c = scene.content

    # Compartments and membranes.
    comp = np.full(shape, COMPARTMENTS["cytosol"], np.uint8)
    dens = np.zeros(shape, np.float32)
    membrane = np.zeros(shape, np.uint8)
    hw = membrane_half_width(vs)
    reach = hw + 60.0
    for s in scene.surfaces:
        got = surface_distance_on_block(s, lo, shape, vs, reach)
        if got is None:
            continue
        sl, d = got
        if s.kind != "organelle_inner":
            sub = comp[sl]
            sub[d < 0] = s.inner_compartment
        near = np.abs(d) <= reach
        dens[sl][near] += np.float32(c.membrane_contrast) * bilayer_density(d[near], vs)
        membrane[sl][np.abs(d) <= hw] = 1
    z = (lo[0] + np.arange(shape[0])) * vs
    in_ice = ((z >= scene.slab[0]) & (z <= scene.slab[1]))[:, None, None]
    comp[~np.broadcast_to(in_ice, shape)] = COMPARTMENTS["outside"]
    membrane *= in_ice
    dens *= in_ice
    background = np.zeros(len(COMPARTMENTS), np.float32)
    for name, code in COMPARTMENTS.items():
        background[code] = c.background.get(name, 0.0) + (c.ice_contrast if name != "outside" else 0.0)
    dens += background[comp]
    # The extracellular space is ice too; only the vacuum outside the slab is empty.
    dens += np.where(in_ice & (comp == COMPARTMENTS["outside"]), np.float32(c.ice_contrast), np.float32(0))

    # Filaments.
    labels = np.zeros(shape, np.uint8)
    f_dens, f_masks = filament_block(scene.filaments, lo, shape, vs)
    dens += f_dens
    for kind, m in f_masks.items():
        labels[m] = CLASS_IDS[kind]

    # Particles (each on its own box, so labels never depend on the blocking).
    instance = np.zeros(shape, np.uint32)
    df = scene.particles
    if len(df):
        pos = df[["x_A", "y_A", "z_A"]].to_numpy()
        from .render import mask_radius

        rad = np.array([mask_radius(k, vs) for k in df["class"]]) + 4 * vs
        pz = pos[:, ::-1] / vs
        hit = np.all((pz + rad[:, None] / vs >= lo) & (pz - rad[:, None] / vs <= lo + np.array(shape)), axis=1)
        for i in np.nonzero(hit)[0]:
            name = df["class"].iat[i]
            b_lo, d_box, m_box = particle_footprint(name, pos[i], scene.rotations[i], vs)
            sl = paste(dens, lo, d_box, b_lo)
            if sl is None:
                continue
            dst, src = sl
            dens[dst] += np.float32(c.particle_contrast) * d_box[src]
            m = m_box[src] & (labels[dst] == 0)
            labels[dst][m] = CLASS_IDS[name]
            instance[dst][m] = i + 1

    # Gold beads (not labelled: they are fiducials, listed in their own table).
    snr_mask = np.broadcast_to(in_ice, shape).copy()
    for p in scene.fiducials:
        r = c.fiducial_radius
        b_lo = np.floor((p[::-1] - r - 3 * vs) / vs).astype(int)
        b_hi = np.ceil((p[::-1] + r + 3 * vs) / vs).astype(int) + 1
        a0, a1 = np.maximum(b_lo, lo), np.minimum(b_hi, lo + np.array(shape))
        if np.any(a1 <= a0):
            continue
        gz, gy, gx = (np.arange(a0[i], a1[i]) * vs for i in range(3))
        dist = np.sqrt((gz[:, None, None] - p[2]) ** 2 + (gy[None, :, None] - p[1]) ** 2 + (gx[None, None, :] - p[0]) ** 2)
        sl = tuple(slice(int(a - o), int(b - o)) for a, b, o in zip(a0, a1, lo))
        dens[sl] += (0.5 * GOLD_CONTRAST * (1 - np.tanh((dist - r) / (0.5 * vs)))).astype(np.float32)
        snr_mask[sl][dist < r + 4 * vs] = False

    # Unresolved crowders: sparse point masses, denser in the organelle matrix; none inside labels.
    rate = np.zeros(len(COMPARTMENTS), np.float32)
    for name, code in COMPARTMENTS.items():
        rate[code] = c.crowders.get(name, 0.0) * vs**3 / 100.0**3
    rate[COMPARTMENTS["outside"]] *= 0
    rate_ice_out = c.crowders.get("outside", 0.0) * vs**3 / 100.0**3
    u = randomfield.uniform(scene.seed, STREAM_CROWDERS, lo, shape)
    r_vox = rate[comp]
    r_vox = np.where(in_ice & (comp == COMPARTMENTS["outside"]), np.float32(rate_ice_out), r_vox)
    crowders = np.where((u < r_vox) & (labels == 0) & (membrane == 0), np.float32(CROWDER_MASS / vs**3), np.float32(0))
    return Block(dens, crowders.astype(np.float32), labels, instance, membrane, comp, snr_mask)
