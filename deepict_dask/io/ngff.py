"""OME-NGFF (OME-Zarr) metadata: build it for writing, parse it for reading.

Supports NGFF 0.4 (Zarr v2; attributes at the top level of ``.zattrs``) and 0.5 (Zarr v3;
attributes under an ``ome`` key of ``zarr.json``). Only the parts a tomogram needs are modelled:
``multiscales`` with space axes in Angstrom, an optional channel axis, ``image-label`` for label
images and the ``labels`` list of a ``labels`` group.
"""

from __future__ import annotations

import colorsys
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
LABELS_GROUP = "labels"  # the NGFF name of the group that holds an image's label images


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


def channel_colors(n: int) -> list[str]:
    """``n`` distinct hex colours: white for one channel, else hues evenly round the circle (red first)."""
    if n == 1:
        return ["FFFFFF"]
    rgb = (colorsys.hsv_to_rgb(i / n, 1.0, 1.0) for i in range(n))
    return ["".join(f"{round(c * 255):02X}" for c in col) for col in rgb]


def display_window(dtype: Any, value_range: Sequence[float] | None) -> dict[str, float]:
    """omero ``window``: ``min``/``max`` the dtype's range (0..1 for floats without a known range),
    ``start``/``end`` the contrast a viewer opens with (``value_range`` when known)."""
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        lo, hi = float(info.min), float(info.max)
    elif dtype.kind == "b":
        lo, hi = 0.0, 1.0
    else:
        lo, hi = (float(value_range[0]), float(value_range[1])) if value_range else (0.0, 1.0)
    start, end = (float(value_range[0]), float(value_range[1])) if value_range else (lo, hi)
    return {"min": min(lo, start), "max": max(hi, end), "start": start, "end": end}


def label_colors(names: Mapping[int, str] | None) -> dict[str, Any]:
    """``image-label`` colours (background transparent, named values in distinct colours) and properties."""
    named = dict(sorted((names or {}).items()))
    colors = [{"label-value": 0, "rgba": [0, 0, 0, 0]}]
    for value, hexcol in zip(named, channel_colors(max(len(named), 2))):
        colors.append({"label-value": int(value), "rgba": [int(hexcol[i:i + 2], 16) for i in (0, 2, 4)] + [255]})
    out: dict[str, Any] = {"colors": colors}
    if named:
        # ome-zarr-models wants the same values in colors and properties
        out["properties"] = [{"label-value": 0, "class": "background"}] + [
            {"label-value": int(v), "class": str(n)} for v, n in named.items()]
    return out


def image_attrs(
    name: str, n_levels: int, voxel_size: Sequence[float], origin: Sequence[float], *,
    label: bool, channels: Sequence[str] | None, version: str, extra: Mapping[str, Any],
    dtype: Any = np.float32, value_range: Sequence[float] | None = None,
    label_names: Mapping[int, str] | None = None,
) -> dict[str, Any]:
    """The group attributes of a multiscale image (or label image), ready for ``group.attrs``.

    Channels get a display window (``dtype`` / ``value_range``) and a distinct colour each, as
    ome-zarr-models requires and napari shows; label images get colours (``label_names``: value ->
    class name) and point to the image two levels up (``labels/<name>`` of an image).

    Parameters
    ----------
    name : str
        The image's name in the metadata.
    n_levels : int
        Pyramid levels (level k is downsampled 2**k times).
    voxel_size, origin : sequence of float
        Level 0's voxel size and origin (z, y, x, Angstrom).
    label : bool
        A label image (strided pyramid, ``image-label`` block) rather than an intensity image.
    channels : sequence of str, optional
        Channel names of a CZYX image; None for ZYX.
    version : str
        The NGFF version written, ``"0.4"`` or ``"0.5"``.
    extra : mapping
        The project's own metadata, stored as ``deepict`` (made JSON-safe).
    dtype : dtype
        The stored dtype (sets the channels' display range).
    value_range : (float, float), optional
        The data's range, when known: the contrast a viewer opens with.
    label_names : mapping of int to str, optional
        Label value -> class name (label images).

    Returns
    -------
    dict
        The attributes, already checked to serialize as JSON.
    """
    if version not in VERSIONS:
        raise ValueError(f"NGFF version must be one of {VERSIONS}, got {version!r}")
    ome: dict[str, Any] = {
        "multiscales": [multiscales(name, n_levels, voxel_size, origin, label=label,
                                    channel=channels is not None, version=version)]
    }
    if label:
        ome["image-label"] = {"source": {"image": "../../"}, **label_colors(label_names)}
        if version == "0.4":
            ome["image-label"] = {"version": "0.4", **ome["image-label"]}
    elif channels is not None:
        window = display_window(dtype, value_range)
        ome["omero"] = {
            "name": name,
            "channels": [{"label": str(c), "active": True, "color": col, "window": dict(window)}
                         for c, col in zip(channels, channel_colors(len(channels)))],
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
