"""Model files: safetensors weights plus one JSON metadata entry that validates as ModelInfo.

Loading never executes code from the file (no pickles). A file that is missing, truncated, not
safetensors, lacks the metadata, has unknown metadata keys or weights that do not fit the declared
architecture is an :class:`InputError` naming the file.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from deepict_dask import __version__
from deepict_dask.errors import DeepictError, InputError
from deepict_dask.io.atomic import atomic_path
from deepict_dask.models.autoencoder import Autoencoder3D
from deepict_dask.models.spec import (  # noqa: F401  (re-exported)
    DEMO_MODELS,
    META_KEY,
    ModelInfo,
    demo_model_path,
    read_model_info,
    resolve_model_path,
)
from deepict_dask.models.unet import KINDS as UNET_KINDS
from deepict_dask.models.unet import ProbabilityHead, architecture_from

KINDS: dict[str, type[nn.Module]] = {**UNET_KINDS, "Autoencoder3D": Autoencoder3D}


def build_network(info: ModelInfo) -> nn.Module:
    """The (untrained) logits network that ``info.architecture`` describes."""
    arch = architecture_from(info.architecture)
    kind = arch.pop("kind", None)
    if kind not in KINDS:
        raise InputError(f"unknown architecture kind {kind!r} (known: {', '.join(KINDS)})")
    expected_dim = 2 if kind == "UNet2D" else 3
    if expected_dim != info.dim:
        raise InputError(f"architecture {kind} does not match dim={info.dim}")
    try:
        return KINDS[kind](in_channels=info.in_channels, out_channels=info.out_channels, **arch)
    except TypeError as exc:
        raise InputError(f"bad architecture arguments for {kind}: {exc}") from exc


def _unwrap(module: nn.Module) -> nn.Module:
    return module.net if isinstance(module, ProbabilityHead) else module


def save_model(path: str | os.PathLike, module: nn.Module, info: ModelInfo, *, half: bool = False) -> Path:
    """Write weights and ``info`` atomically to ``path`` (.safetensors).

    ``half=True`` stores floating weights as float16 (halves the file; they are cast back to
    float32 on load).

    Parameters
    ----------
    path : path
        The model file to write.
    module : torch.nn.Module
        The network (a :class:`ProbabilityHead` is unwrapped: the bare network is stored).
    info : ModelInfo
        The metadata stored with the weights.
    half : bool
        Store floating weights as float16.

    Returns
    -------
    Path
        ``path``.
    """
    from safetensors.torch import save_file

    net = _unwrap(module)
    if not info.software_version:
        info = info.model_copy(update={"software_version": __version__})
    tensors = {}
    for k, v in net.state_dict().items():
        t = v.detach().cpu().contiguous()
        if half and t.is_floating_point():
            t = t.half()
        tensors[k] = t
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={META_KEY: info.model_dump_json()})
        tmp.chmod(0o644)  # a model file is meant to be shared (safetensors creates it owner-only)
    return path


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu", *,
               probabilities: bool = True) -> tuple[nn.Module, ModelInfo]:
    """Load a model file; returns ``(module, info)`` with the module in eval mode on ``device``.

    With ``probabilities=True`` (default) ``module(x)`` returns probabilities (sigmoid per class,
    or softmax whose channel 0 is background); ``probabilities=False`` returns the bare logits
    network (for fine-tuning). Input is ``(N, in_channels, Z, Y, X)`` (3D) or ``(N, C, Y, X)`` (2D),
    normalised as ``info.normalization`` says.

    Parameters
    ----------
    path : path
        The model file (.safetensors; weights only, no code is executed).
    device : str or torch.device
        Where to put the module.
    probabilities : bool
        Wrap the network so that it returns probabilities.

    Returns
    -------
    (torch.nn.Module, ModelInfo)
        The module in eval mode and the model's metadata.
    """
    from safetensors import safe_open

    path = Path(path)
    info = read_model_info(path)
    net = build_network(info)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:
        raise InputError(f"cannot read weights, file is corrupt or truncated ({exc})", path) from exc
    own = net.state_dict()
    for k, v in state.items():
        if k in own and v.is_floating_point():
            state[k] = v.to(own[k].dtype)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0:2]
        raise InputError(f"weights do not match the declared architecture: {' '.join(first)}", path) from exc
    wrap = probabilities and info.task == "segmentation"  # an autoencoder's output is an image, not logits
    module: nn.Module = ProbabilityHead(net, info.activation) if wrap else net
    return module.to(device).eval(), info


def check_voxel_size(info: ModelInfo, voxel_size: float | Sequence[float], rescale: bool = False) -> tuple[float, ...]:
    """Compare a tomogram's voxel size (Å, scalar or z,y,x) with the model's.

    Returns the zoom factors (per axis) that bring the tomogram to the model's voxel size: all 1.0
    when within ``info.voxel_size_tolerance`` (relative). Beyond it, raises a DeepictError unless
    ``rescale`` is True.
    """
    vs = (float(voxel_size),) * 3 if isinstance(voxel_size, (int, float)) else tuple(float(v) for v in voxel_size)
    if any(not v > 0 for v in vs):
        raise DeepictError(f"voxel size must be positive, got {vs}")
    rel = [abs(v - info.voxel_size) / info.voxel_size for v in vs]
    if max(rel) <= info.voxel_size_tolerance:
        return tuple(1.0 for _ in vs)
    if not rescale:
        raise DeepictError(
            f"model '{info.name}' was trained at {info.voxel_size:g} Å/voxel but the tomogram has "
            f"{'x'.join(f'{v:g}' for v in vs)} Å/voxel ({100 * max(rel):.0f}% off, tolerance "
            f"{100 * info.voxel_size_tolerance:.0f}%): rescale the tomogram (rescale; deepict predict without --no-rescale) or use a matching model"
        )
    return tuple(v / info.voxel_size for v in vs)


def describe(info: ModelInfo, module: nn.Module | None = None) -> dict[str, Any]:
    """Human-facing summary: dimensionality, classes, architecture, size, cost, provenance."""
    from deepict_dask.models.flops import flops_per_voxel, parameter_count

    net = _unwrap(module) if module is not None else build_network(info)
    probe = [min(p, 64) for p in info.patch_size]
    training = info.training
    return {
        "name": info.name,
        "dimensionality": f"{info.dim}D",
        "classes": list(info.classes),
        "activation": info.activation,
        "output_channels": info.out_channels,
        "architecture": architecture_from(info.architecture),
        "parameters": parameter_count(net),
        "flops_per_voxel": flops_per_voxel(net, info.in_channels, probe),
        "patch_size": list(info.patch_size),
        "voxel_size_A": info.voxel_size,
        "voxel_size_tolerance": info.voxel_size_tolerance,
        "normalization": info.normalization,
        "preprocessing": info.preprocessing,
        "software_version": info.software_version,
        "picking": info.picking,
        "trained": {k: training[k] for k in ("date", "steps", "scores", "seed", "command") if k in training}
        | ({"data": _data_summary(training["data"])} if isinstance(training.get("data"), dict) else {}),
    }


def _data_summary(data: dict[str, Any]) -> dict[str, Any]:
    """Tomogram names per split (the full per-tomogram record stays in the file)."""
    return {split: [t.get("name", "?") for t in items] for split, items in data.items() if isinstance(items, list)}


def update_model_info(path: str | os.PathLike, **changes: Any) -> ModelInfo:
    """Replace fields of a model file's metadata in place, atomically; the weight bytes are copied as they are.

    Only the safetensors JSON header is rewritten (padded to 8 bytes like safetensors does), so the
    network is provably the same one; the new metadata is validated before anything is written.
    """
    path = Path(path)
    info = read_model_info(path)  # a clear InputError for anything that is not a model file
    try:
        new = ModelInfo.model_validate({**info.model_dump(), **changes})
    except Exception as exc:
        raise InputError(f"the new model metadata is invalid: {str(exc).splitlines()[0]}", path) from exc
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(n))
        weights = fh.read()
    header["__metadata__"][META_KEY] = new.model_dump_json()
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    mode = path.stat().st_mode & 0o777
    with atomic_path(path) as tmp:
        tmp.write_bytes(struct.pack("<Q", len(raw)) + raw + weights)
        tmp.chmod(mode)
    return new


def set_picking(path: str | os.PathLike, entries: dict[str, dict[str, Any]]) -> ModelInfo:
    """Record tuned picking settings per class in a model file (other classes' entries are kept)."""
    info = read_model_info(path)
    unknown = [c for c in entries if c not in info.classes]
    if unknown:
        raise InputError(f"model '{info.name}' has no class {', '.join(map(repr, unknown))} "
                         f"(it has {', '.join(info.classes)})", path)
    plain = json.loads(json.dumps(entries))  # plain JSON only: numbers, strings, lists
    return update_model_info(path, picking={**info.picking, **plain})


def info_json(info: ModelInfo) -> str:
    return json.dumps(info.model_dump(), indent=2)
