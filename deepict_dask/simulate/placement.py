"""Laying out a cell: ice slab, membranes, filaments, gold, and particles without overlap.

Particles are placed by random sequential addition: uniform candidates in batches, kept when their
bounding sphere (which holds the particle's label in any orientation) clears every membrane, filament,
gold bead and already placed particle. Membrane-bound ribosomes are docked first, their large
subunit facing the membrane, on the cytosolic side of the organelle envelope and plasma membrane.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from deepict_dask.errors import InputError

from .filaments import Filament, grow_filament
from .geometry import align_z_to, random_rotations
from .membranes import Ellipsoid, Sheet, Surface, membrane_half_width
from .presets import COMPARTMENTS, ContentParams
from .render import mask_radius
from .shapes import FILAMENT_PROFILES, template

UNIT = 1e9  # (1000 A)^3


@dataclass
class Scene:
    """Everything needed to render any block of the volume (all positions x, y, z in Angstrom)."""

    shape: tuple[int, int, int]
    voxel_size: float
    seed: int
    content: ContentParams
    slab: tuple[float, float]
    surfaces: list[Surface] = field(default_factory=list)
    filaments: list[Filament] = field(default_factory=list)
    fiducials: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    particles: pd.DataFrame = field(default_factory=pd.DataFrame)
    rotations: np.ndarray = field(default_factory=lambda: np.zeros((0, 3, 3)))

    @property
    def extent(self) -> np.ndarray:
        """x, y, z extent in Angstrom (voxel centres run from 0 to (n-1) * voxel size)."""
        return (np.array(self.shape[::-1]) - 1) * self.voxel_size

    def compartment_at(self, pts: np.ndarray) -> np.ndarray:
        """Compartment code at points (n, 3)."""
        pts = np.asarray(pts, float).reshape(-1, 3)
        code = np.full(len(pts), COMPARTMENTS["cytosol"], np.uint8)
        for s in self.surfaces:
            if s.kind == "organelle_inner":
                continue
            inside = s.distance_at(pts) < 0
            code[inside] = s.inner_compartment
        out = (pts[:, 2] < self.slab[0]) | (pts[:, 2] > self.slab[1])
        code[out] = COMPARTMENTS["outside"]
        return code

    def membrane_clearance(self, pts: np.ndarray, skip: Surface | None = None) -> np.ndarray:
        """Distance (n,) from points to the nearest membrane's outer leaflet edge (inf if none)."""
        pts = np.asarray(pts, float).reshape(-1, 3)
        hw = membrane_half_width(self.voxel_size)
        best = np.full(len(pts), np.inf)
        for s in self.surfaces:
            if s is skip:
                continue
            best = np.minimum(best, np.abs(s.distance_at(pts)) - hw)
        return best


def _area(scene: Scene) -> float:
    e = scene.extent
    return float(e[0] * e[1])


def _poisson_count(rng, expected: float) -> int:
    return int(rng.poisson(expected)) if expected > 0 else 0


def build_scene(shape, voxel_size: float, seed: int, content: ContentParams) -> Scene:
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5C3E]))
    shape = tuple(int(s) for s in shape)
    zext = (shape[0] - 1) * voxel_size
    half = 0.5 * content.ice_fraction * zext
    slab = (0.5 * zext - half, 0.5 * zext + half)
    scene = Scene(shape, float(voxel_size), int(seed), content, slab)
    _add_membranes(scene, rng)
    _add_fiducials(scene, rng)
    _add_filaments(scene, rng)
    _add_particles(scene, rng)
    return scene


# --------------------------------------------------------------------------- membranes
def _add_membranes(scene: Scene, rng) -> None:
    c = scene.content
    ex, ey, ez = scene.extent
    zc = 0.5 * (scene.slab[0] + scene.slab[1])
    thick = scene.slab[1] - scene.slab[0]
    x_start = 0.0
    if c.plasma_membrane:
        x0 = 0.1 * ex
        sheet = Sheet("plasma", COMPARTMENTS["outside"], x0=x0, amp=(0.03 * ex, 0.02 * ex),
                      wavelength=(max(ey, 1.0) * rng.uniform(0.8, 1.5), max(ez, 1.0) * rng.uniform(2, 4)),
                      phase=tuple(rng.uniform(0, 2 * np.pi, 2)))
        scene.surfaces.append(sheet)
        x_start = x0 + 0.06 * ex
    if c.organelles:
        n_org = max(1, int(round(_area(scene) / 12000.0**2)))
        placed: list[Ellipsoid] = []
        for _ in range(n_org * 30):
            if len(placed) >= n_org:
                break
            rxy = min(0.3 * min(ex - x_start, ey), 2500.0) * rng.uniform(0.8, 1.1)
            radii = np.array([rxy * rng.uniform(1.0, 1.4), rxy, max(0.5 * thick, 0.7 * rxy)])
            if radii.min() < 450:
                break  # the volume is too small for an organelle
            ang = rng.uniform(0, 2 * np.pi)
            rot = np.array([[np.cos(ang), -np.sin(ang), 0], [np.sin(ang), np.cos(ang), 0], [0, 0, 1]])
            ext_xy = np.sqrt(np.sum((rot * radii) ** 2, axis=1))
            lo = np.array([x_start + ext_xy[0] + 150, 0.3 * ext_xy[1]])
            hi = np.array([ex - 0.3 * ext_xy[0], ey - 0.3 * ext_xy[1]])
            if np.any(hi <= lo):
                continue
            center = np.r_[rng.uniform(lo, hi), zc + rng.uniform(-0.1, 0.1) * thick]
            org = Ellipsoid("organelle_outer", COMPARTMENTS["organelle"], center=center, radii=radii, rot=rot)
            if any(np.linalg.norm(center[:2] - o.center[:2]) < (radii[:2].max() + o.radii[:2].max() + 300)
                   for o in placed):
                continue
            placed.append(org)
        for org in placed:
            scene.surfaces.append(org)
            if c.double_envelope:
                scene.surfaces.append(Ellipsoid("organelle_inner", COMPARTMENTS["organelle"], center=org.center,
                                                radii=org.radii - 150.0, rot=org.rot))
    n_ves = _poisson_count(rng, c.vesicle_density * _area(scene) / 1000.0**2)
    r_lo, r_hi = c.vesicle_radius
    tries = 0
    added = 0
    while added < n_ves and tries < 50 * n_ves + 50:
        tries += 1
        r = rng.uniform(r_lo, r_hi)
        p = np.array([rng.uniform(x_start, ex), rng.uniform(0, ey), zc + rng.uniform(-0.5, 0.5) * thick])
        if scene.compartment_at(p)[0] != COMPARTMENTS["cytosol"]:
            continue
        if scene.membrane_clearance(p)[0] < r + 2 * membrane_half_width(scene.voxel_size):
            continue
        scene.surfaces.append(Ellipsoid("vesicle", COMPARTMENTS["vesicle"], center=p, radii=np.full(3, r)))
        added += 1


# --------------------------------------------------------------------------- gold
def _add_fiducials(scene: Scene, rng) -> None:
    c = scene.content
    r = c.fiducial_radius
    n = _poisson_count(rng, 2 * c.fiducial_density * _area(scene) / 1e8)
    ex, ey, _ = scene.extent
    pts = []
    for _ in range(20 * n):
        if len(pts) >= n:
            break
        side = rng.integers(2)
        z = scene.slab[0] + r if side == 0 else scene.slab[1] - r
        p = np.array([rng.uniform(0, ex), rng.uniform(0, ey), z])
        if all(np.linalg.norm(p - q) > 2 * r + 20 for q in pts):
            pts.append(p)
    scene.fiducials = np.array(pts).reshape(-1, 3)


# --------------------------------------------------------------------------- filaments
def _add_filaments(scene: Scene, rng) -> None:
    c = scene.content
    ex, ey, _ = scene.extent
    area = _area(scene) / 1e8
    for kind, dens in (("microtubule", c.microtubule_density), ("actin", c.actin_density)):
        n = _poisson_count(rng, dens * area)
        radius = FILAMENT_PROFILES[kind][0]
        for _ in range(n):
            existing = [f for f in scene.filaments]
            tree = cKDTree(np.concatenate([f.points for f in existing])) if existing else None
            r_other = max((f.radius for f in existing), default=0.0)
            fid = scene.fiducials

            def allowed(q, radius=radius, tree=tree, r_other=r_other, fid=fid):
                if not (0 <= q[0] <= ex and 0 <= q[1] <= ey):
                    return False
                if not (scene.slab[0] + radius <= q[2] <= scene.slab[1] - radius):
                    return False
                if scene.compartment_at(q)[0] != COMPARTMENTS["cytosol"]:
                    return False
                if scene.membrane_clearance(q)[0] < radius + 10:
                    return False
                if tree is not None and tree.query(q, distance_upper_bound=radius + r_other + 20)[0] < np.inf:
                    return False
                if len(fid) and np.min(np.linalg.norm(fid - q, axis=1)) < radius + scene.content.fiducial_radius + 20:
                    return False
                return True

            for _try in range(100):
                start = np.array([rng.uniform(0, ex), rng.uniform(0, ey), rng.uniform(*scene.slab)])
                if allowed(start):
                    break
            else:
                continue
            d = rng.normal(size=3)
            d[2] *= 0.15  # filaments run roughly in the plane of the lamella
            fil = grow_filament(kind, start, d, rng, allowed, max_length=float(np.hypot(ex, ey)))
            if fil.length >= min(10 * radius + 500, 0.25 * float(np.hypot(ex, ey))):
                scene.filaments.append(fil)


# --------------------------------------------------------------------------- particles
class _Occupancy:
    """Placed spheres (centres, radii) with a KD-tree rebuilt per batch."""

    def __init__(self) -> None:
        self.centers = np.zeros((0, 3))
        self.radii = np.zeros(0)
        self._tree: cKDTree | None = None

    def add(self, c: np.ndarray, r: np.ndarray) -> None:
        self.centers = np.concatenate([self.centers, c.reshape(-1, 3)])
        self.radii = np.concatenate([self.radii, np.broadcast_to(r, (len(c.reshape(-1, 3)),))])
        self._tree = None

    def clear(self, c: np.ndarray, r: np.ndarray) -> np.ndarray:
        """Which candidates (n, 3) with radii (n,) overlap no placed sphere."""
        if len(self.centers) == 0 or len(c) == 0:
            return np.ones(len(c), bool)
        if self._tree is None:
            self._tree = cKDTree(self.centers)
        rmax = self.radii.max()
        ok = np.ones(len(c), bool)
        hits = self._tree.query_ball_point(c, r + rmax)
        for i, h in enumerate(hits):
            if h and np.any(np.linalg.norm(self.centers[h] - c[i], axis=1) < r[i] + self.radii[h]):
                ok[i] = False
        return ok


def _targets(scene: Scene, rng) -> dict[tuple[str, int], int]:
    """How many particles of each class go in each compartment."""
    c = scene.content
    ex, ey, _ = scene.extent
    probe = np.stack([rng.uniform(0, ex, 20000), rng.uniform(0, ey, 20000), rng.uniform(*scene.slab, 20000)], 1)
    comp = scene.compartment_at(probe)
    vol = ex * ey * (scene.slab[1] - scene.slab[0])
    v_cyt = vol * np.mean(comp == COMPARTMENTS["cytosol"])
    v_org = vol * np.mean(comp == COMPARTMENTS["organelle"])
    out: dict[tuple[str, int], int] = {}
    for k in c.classes:
        out[(k, COMPARTMENTS["cytosol"])] = _poisson_count(rng, c.concentration.get(k, 0.0) * v_cyt / UNIT)
        out[(k, COMPARTMENTS["organelle"])] = _poisson_count(rng, c.lumen_concentration.get(k, 0.0) * v_org / UNIT)
    if c.crowded is not None and "ribosome" in c.classes:
        v_ribo = _label_volume("ribosome", scene.voxel_size)
        out[("ribosome", COMPARTMENTS["cytosol"])] = int(round(c.crowded * v_cyt / v_ribo))
    if c.counts is not None:
        for k, n in c.counts.items():
            if k not in c.classes:
                continue
            # Exact counts: split between cytosol and lumen in proportion to the defaults.
            a, b = out[(k, COMPARTMENTS["cytosol"])], out[(k, COMPARTMENTS["organelle"])]
            n_org = int(round(n * b / (a + b))) if (a + b) > 0 else 0
            out[(k, COMPARTMENTS["cytosol"])] = int(n) - n_org
            out[(k, COMPARTMENTS["organelle"])] = n_org
    return out


def _label_volume(name: str, voxel_size: float) -> float:
    from .render import particle_footprint

    _, _, mask = particle_footprint(name, np.zeros(3), np.eye(3), voxel_size)
    return float(mask.sum()) * voxel_size**3


def _dock_on_membranes(scene: Scene, rng, n: int, occ: _Occupancy, rows: list, rots: list) -> int:
    """Dock ``n`` ribosomes on the cytosolic face of the organelle envelope / plasma membrane."""
    docks = [s for s in scene.surfaces if s.kind in ("organelle_outer", "plasma")]
    if n == 0 or not docks:
        return 0
    t = template("ribosome")
    reach = t.extent_along(np.array([0.0, 0.0, -1.0]))  # from the centre to the LSU face (+z side)
    hw_leaflet = 0.5 * 40.0 + 8.0
    r = mask_radius("ribosome", scene.voxel_size)
    ex, ey, _ = scene.extent
    placed = 0
    for _ in range(60):
        if placed >= n:
            break
        surf = docks[rng.integers(len(docks))]
        m = 4 * (n - placed) + 16
        if isinstance(surf, Sheet):
            pts, normals = surf.sample_yz(rng, m, (0, ey), scene.slab)
        else:
            pts, normals = surf.sample(rng, m)
        centers = pts + normals * (hw_leaflet + reach)
        rot, eul = align_z_to(-normals, rng.uniform(0, 2 * np.pi, m))
        ok = _inside(scene, centers, r)
        ok &= scene.compartment_at(centers) == COMPARTMENTS["cytosol"]
        ok &= scene.membrane_clearance(centers, skip=surf) > r
        ok &= _clear_of_filaments_and_gold(scene, centers, np.full(m, r))
        ok &= occ.clear(centers, np.full(m, r))
        for i in np.nonzero(ok)[0]:
            if placed >= n:
                break
            if not occ.clear(centers[i : i + 1], np.array([r]))[0]:
                continue
            occ.add(centers[i], np.array([r]))
            rows.append(("ribosome", *centers[i], *eul[i], True, COMPARTMENTS["cytosol"]))
            rots.append(rot[i])
            placed += 1
    return placed


def _inside(scene: Scene, centers: np.ndarray, r: float) -> np.ndarray:
    """Centre in the volume (at least r/2 from its x, y faces) and the whole sphere in the ice."""
    ex, ey, _ = scene.extent
    m = 0.5 * r
    return (
        (centers[:, 2] >= scene.slab[0] + r) & (centers[:, 2] <= scene.slab[1] - r)
        & (centers[:, 0] >= m) & (centers[:, 0] <= ex - m) & (centers[:, 1] >= m) & (centers[:, 1] <= ey - m)
    )


def _clear_of_filaments_and_gold(scene: Scene, centers: np.ndarray, r: np.ndarray) -> np.ndarray:
    ok = np.ones(len(centers), bool)
    for f in scene.filaments:
        tree = cKDTree(f.points)
        d, _ = tree.query(centers)
        ok &= d > r + f.radius
    if len(scene.fiducials):
        d = np.linalg.norm(centers[:, None, :] - scene.fiducials[None], axis=2).min(1)
        ok &= d > r + scene.content.fiducial_radius
    return ok


def _add_particles(scene: Scene, rng) -> None:
    c = scene.content
    targets = _targets(scene, rng)
    occ = _Occupancy()
    rows: list = []
    rots: list = []
    ex, ey, _ = scene.extent
    explicit = set(c.counts or {}) | ({"ribosome"} if c.crowded is not None else set())
    dense = {"ribosome"} if c.crowded is not None else set()
    order = sorted(c.classes, key=lambda k: -mask_radius(k, scene.voxel_size))
    for k in order:
        r = mask_radius(k, scene.voxel_size)
        for comp in (COMPARTMENTS["cytosol"], COMPARTMENTS["organelle"]):
            n = targets.get((k, comp), 0)
            if n == 0:
                continue
            placed = 0
            if k == "ribosome" and comp == COMPARTMENTS["cytosol"]:
                placed = _dock_on_membranes(scene, rng, int(round(n * c.membrane_bound_fraction)), occ, rows, rots)
            if k in dense and comp == COMPARTMENTS["cytosol"]:
                placed = _pack_by_mask(scene, rng, k, n, placed, occ, rows, rots)
            misses = 0
            while placed < n and misses < 6:
                m = int(min(8192, max(1024, 8 * (n - placed))))
                cand = np.stack([rng.uniform(0, ex, m), rng.uniform(0, ey, m), rng.uniform(*scene.slab, m)], 1)
                ok = _inside(scene, cand, r)
                ok[ok] &= scene.compartment_at(cand[ok]) == comp
                ok[ok] &= scene.membrane_clearance(cand[ok]) > r
                ok[ok] &= _clear_of_filaments_and_gold(scene, cand[ok], np.full(ok.sum(), r))
                ok[ok] &= occ.clear(cand[ok], np.full(ok.sum(), r))
                cand = cand[ok]
                got = 0
                rot, eul = random_rotations(rng, len(cand))
                for i in range(len(cand)):
                    if placed >= n:
                        break
                    if got and np.any(np.linalg.norm(cand[i] - occ.centers[-got:], axis=1) < r + r):
                        continue
                    occ.add(cand[i], np.array([r]))
                    rows.append((k, *cand[i], *eul[i], False, comp))
                    rots.append(rot[i])
                    placed += 1
                    got += 1
                misses = misses + 1 if got == 0 else 0
            if placed < n and k in explicit:  # preset concentrations: as many as fit
                where = "organelle lumen" if comp == COMPARTMENTS["organelle"] else "cytosol"
                raise InputError(
                    f"a {'x'.join(map(str, scene.shape))} volume at {scene.voxel_size:g} A/voxel cannot hold {n} "
                    f"{k} particles in its {where}: only {placed} fit without overlap "
                    f"(use a larger shape, fewer particles or a lower crowding)"
                )
    cols = ["class", "x_A", "y_A", "z_A", "phi", "theta", "psi", "membrane_bound", "compartment"]
    df = pd.DataFrame(rows, columns=cols)
    df["membrane_bound"] = df["membrane_bound"].astype(bool)
    df["compartment"] = df["compartment"].astype(np.uint8)
    scene.particles = df
    scene.rotations = np.array(rots).reshape(-1, 3, 3)


def _pack_by_mask(scene: Scene, rng, k: str, n: int, placed: int, occ: _Occupancy, rows: list, rots: list) -> int:
    """Dense packing: neighbours whose bounding spheres overlap are accepted when their labels do not.

    Used for the ``crowded`` ribosomes, where bounding spheres alone cannot reach ~10 % volume
    fraction. Label footprints are compared voxel by voxel (and kept one voxel apart).
    """
    from scipy import ndimage

    from .render import particle_footprint, paste

    vs = scene.voxel_size
    r = mask_radius(k, vs)
    ex, ey, _ = scene.extent
    cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def footprint(j: int):
        if j not in cache:
            row = rows[j]
            lo, _, m = particle_footprint(row[0], np.array(row[1:4]), rots[j], vs)
            cache[j] = (lo, m)
        return cache[j]

    misses = 0
    while placed < n and misses < 6:
        m = 2048
        cand = np.stack([rng.uniform(0, ex, m), rng.uniform(0, ey, m), rng.uniform(*scene.slab, m)], 1)
        ok = _inside(scene, cand, r)
        ok[ok] &= scene.compartment_at(cand[ok]) == COMPARTMENTS["cytosol"]
        ok[ok] &= scene.membrane_clearance(cand[ok]) > r
        ok[ok] &= _clear_of_filaments_and_gold(scene, cand[ok], np.full(ok.sum(), r))
        cand = cand[ok]
        rot, eul = random_rotations(rng, len(cand))
        got = 0
        for i in range(len(cand)):
            if placed >= n:
                break
            d = np.linalg.norm(occ.centers - cand[i], axis=1) if len(occ.centers) else np.zeros(0)
            near = np.nonzero(d < r + occ.radii)[0]
            if np.any(d[near] < 1.1 * r):  # certainly overlapping (the particle is ~0.6 r thick): skip
                continue
            if len(near) == 0:  # bounding spheres clear: no voxel test needed
                occ.add(cand[i], np.array([r]))
                rows.append((k, *cand[i], *eul[i], False, COMPARTMENTS["cytosol"]))
                rots.append(rot[i])
                placed += 1
                got += 1
                continue
            lo, _, mask = particle_footprint(k, cand[i], rot[i], vs)
            grown = ndimage.binary_dilation(mask)
            clash = False
            for j in near:
                lo_j, m_j = footprint(int(j))
                sl = paste(grown, lo, m_j, lo_j)
                if sl is not None and np.any(grown[sl[0]] & m_j[sl[1]]):
                    clash = True
                    break
            if clash:
                continue
            cache[len(rows)] = (lo, mask)
            occ.add(cand[i], np.array([r]))
            rows.append((k, *cand[i], *eul[i], False, COMPARTMENTS["cytosol"]))
            rots.append(rot[i])
            placed += 1
            got += 1
        misses = misses + 1 if got == 0 else 0
    return placed
