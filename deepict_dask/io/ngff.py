"""OME-NGFF (OME-Zarr) metadata: build it for writing, parse it for reading.

Supports NGFF 0.4 (Zarr v2; attributes at the top level of ``.zattrs``) and 0.5 (Zarr v3;
attributes under an ``ome`` key of ``zarr.json``). Only the parts a tomogram needs are modelled:
``multiscales`` with space axes in Angstrom, an optional channel axis, ``image-label`` for label
images and the ``labels`` list of a ``labels`` group.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

SPACE = ("z", "y", "x")
# Conversion of NGFF (UDUNITS-2) space units to Angstrom.
UNIT_TO_ANGSTROM = {
    "angstrom": 1.0,
    "nanometer": 10.0,
    "micrometer": 1e4,
    "millimeter": 1e7,
    "meter": 1e10,
    "picometer": 0.01,
}
VERSIONS = ("0.4", "0.5")


def jsonable(value: Any) -> Any:
    """Convert tuples, numpy scalars and arrays (recursively) to JSON types; anything else to str."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def level_transforms(
    level: int, voxel_size: Sequence[float], origin: Sequence[float], *, label: bool, channel: bool
) -> list[dict[str, Any]]:
    """Scale and translation of pyramid level ``level`` (2x per level).

    A mean-downsampled voxel is centred between the voxels it averages, so its translation moves by
    ``(2**level - 1) / 2`` fine voxels; a strided (label) voxel sits on a fine voxel centre.
    """
    factor = 2**level
    shift = 0.0 if label else (factor - 1) / 2
    scale = [float(v) * factor for v in voxel_size]
    trans = [float(o) + shift * float(v) for o, v in zip(origin, voxel_size)]
    if channel:
        scale, trans = [1.0] + scale, [0.0] + trans
    return [{"type": "scale", "scale": scale}, {"type": "translation", "translation": trans}]


def multiscales(
    name: str, n_levels: int, voxel_size: Sequence[float], origin: Sequence[float], *,
    label: bool, channel: bool, version: str,
) -> dict[str, Any]:
    axes = ([{"name": "c", "type": "channel"}] if channel else []) + [
        {"name": d, "type": "space", "unit": "angstrom"} for d in SPACE
    ]
    entry: dict[str, Any] = {
        "name": name,
        "axes": axes,
        "datasets": [
            {"path": str(k), "coordinateTransformations": level_transforms(k, voxel_size, origin, label=label,
                                                                          channel=channel)}
            for k in range(n_levels)
        ],
        "type": "nearest" if label else "mean",
        "metadata": {
            "description": "2x downsampling per level: " + (
                "every other voxel (label values kept)" if label else "mean of 2x2x2 voxels"
            ),
        },
    }
    if version == "0.4":
        entry = {"version": "0.4", **entry}
    return entry


def image_attrs(
    name: str, n_levels: int, voxel_size: Sequence[float], origin: Sequence[float], *,
    label: bool, channels: Sequence[str] | None, version: str, extra: Mapping[str, Any],
) -> dict[str, Any]:
    """The group attributes of a multiscale image (or label image), ready for ``group.attrs``."""
    if version not in VERSIONS:
        raise ValueError(f"NGFF version must be one of {VERSIONS}, got {version!r}")
    ome: dict[str, Any] = {
        "multiscales": [multiscales(name, n_levels, voxel_size, origin, label=label,
                                    channel=channels is not None, version=version)]
    }
    if label:
        ome["image-label"] = {"source": {"image": "../../"}}
        if version == "0.4":
            ome["image-label"] = {"version": "0.4", **ome["image-label"]}
    elif channels is not None:
        ome["omero"] = {
            "name": name,
            "channels": [{"label": str(c), "active": True, "color": "FFFFFF"} for c in channels],
        }
        if version == "0.4":
            ome["omero"]["version"] = "0.4"
    attrs = {"ome": {"version": "0.5", **ome}} if version == "0.5" else dict(ome)
    attrs["deepict"] = jsonable(extra)
    json.dumps(attrs)  # fail here, not half way through a write
    return attrs


def ome_block(attrs: Mapping[str, Any]) -> tuple[dict[str, Any], str | None]:
    """The NGFF part of a group's attributes and its version (None when there is none)."""
    if isinstance(attrs.get("ome"), Mapping):
        ome = dict(attrs["ome"])
        return ome, str(ome.get("version", "0.5"))
    if "multiscales" in attrs or "labels" in attrs:
        ms = attrs.get("multiscales") or [{}]
        return dict(attrs), str(ms[0].get("version", "0.4"))
    return {}, None


def labels_attrs(names: Sequence[str], version: str) -> dict[str, Any]:
    """Attributes of the ``labels`` group listing its label images."""
    if version == "0.5":
        return {"ome": {"version": "0.5", "labels": list(names)}}
    return {"labels": list(names)}


def parse_axes(axes: Sequence[Any]) -> list[tuple[str, str | None, str | None]]:
    """(name, type, unit) per axis; NGFF 0.3 listed axes as bare names."""
    out = []
    for ax in axes:
        if isinstance(ax, str):
            out.append((ax, "space" if ax in SPACE else ("channel" if ax == "c" else None), None))
        else:
            out.append((str(ax["name"]), ax.get("type"), ax.get("unit")))
    return out


def combined_transform(
    dataset: Mapping[str, Any], multiscale: Mapping[str, Any], ndim: int
) -> tuple[np.ndarray, np.ndarray]:
    """Scale and translation of one dataset, composing the dataset's and the multiscale's transforms."""
    scale = np.ones(ndim)
    trans = np.zeros(ndim)
    for transforms in (dataset.get("coordinateTransformations", []),
                       multiscale.get("coordinateTransformations", [])):
        for t in transforms:
            if t.get("type") == "scale" and "scale" in t:
                s = np.asarray(t["scale"], dtype=float)
                scale, trans = scale * s, trans * s
            elif t.get("type") == "translation" and "translation" in t:
                trans = trans + np.asarray(t["translation"], dtype=float)
    return scale, trans
