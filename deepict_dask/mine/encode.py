"""Encoding patch stacks into codes (an Autoencoder3D model file, or rotation-invariant descriptors),
and decoding autoencoder codes back to images.

Encoding runs as one Dask task per chunk of the patch stack on the inference engine's machinery:
every task carries a small :class:`~deepict_dask.inference.worker_cache.PredictorRef` (model path,
device, batch size, precision) and gets the process's cached network from it, so each worker loads
the model once; the device is chosen like ``deepict predict`` does (``auto``: the GPU when one is
visible, else the CPU), batches shrink on out-of-memory errors. Codes go to a Zarr array
(N x code_dim, float32) written under a temporary name and renamed when complete; its attributes
say what the codes are (``kind``: ``autoencoder`` or ``invariant``), and for invariant descriptors
the z-scoring they got, so patches of new tomograms are scaled the same way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask
import numpy as np

from deepict_dask.errors import InputError
from deepict_dask.io.atomic import atomic_path
from deepict_dask.mine.options import EncodeOptions
from deepict_dask.mine.patches import open_patch_stack, stack_cut


def autoencoder_info_of(path: str | os.PathLike) -> Any:
    """The ModelInfo of an autoencoder model file (metadata only); any other model is an InputError."""
    from deepict_dask.models import read_model_info

    info = read_model_info(path)
    if info.task != "autoencoder":
        raise InputError(f"model '{info.name}' is a {info.task} model, not an autoencoder "
                         "(train one with the mining workflow)", path)
    return info


def load_autoencoder(path: str, device: str = "cpu") -> tuple[Any, Any]:
    """``(network, ModelInfo)`` of an autoencoder model file; any other model is an InputError."""
    from deepict_dask.models import load_model

    autoencoder_info_of(path)
    return load_model(path, device=device, probabilities=False)


def encoder_ref(model: str | os.PathLike, opts: EncodeOptions):
    """The picklable reference every encoding task carries (the device resolved once, here)."""
    from deepict_dask.inference.devices import choose_device
    from deepict_dask.inference.worker_cache import PredictorRef
    from deepict_dask.models.spec import network_sha256

    autoencoder_info_of(model)  # one clear error before any task runs
    return PredictorRef(str(Path(model).resolve()), sha256=network_sha256(model), device=choose_device(opts.device),
                        batch_size=opts.batch_size, precision=opts.precision, fold_bn=False, loader=load_autoencoder)


def encode_array(ref, patches: np.ndarray) -> np.ndarray:
    """Codes ``(N, code_dim)`` float32 of patches ``(N, D, H, W)`` with the worker's cached network."""
    import torch

    from deepict_dask.inference.devices import autocast, inference_mode, set_torch_threads, worker_threads

    pred = ref()
    net = getattr(pred.module, "_orig_mod", pred.module)
    set_torch_threads(worker_threads(pred.threads))
    runner = pred.runner(tuple(patches.shape[1:]))

    def run(batch) -> list[np.ndarray]:
        x = torch.from_numpy(np.ascontiguousarray(np.stack(batch)[:, None], dtype=np.float32)).to(pred.device)
        if pred.channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        with inference_mode(), autocast(pred.device, pred.precision):
            z = net.encode(x)
        return list(z.float().cpu().numpy())

    with pred.lock:
        codes = runner.run(run, list(patches))
    return np.asarray(codes, dtype=np.float32).reshape(len(patches), -1)


@dataclass(frozen=True)
class StackRows:
    """Rows ``i0:i1`` of a patch stack, read like a :class:`~deepict_dask.mine.patches.PatchReader` part."""

    path: str
    i0: int
    i1: int

    def read(self) -> np.ndarray:
        import zarr

        return np.asarray(zarr.open_array(self.path, mode="r")[self.i0 : self.i1], dtype=np.float32)


def _encode_chunk(ref, stack_path: str, codes_path: str, i0: int, i1: int) -> int:
    import zarr

    zarr.open_array(codes_path, mode="r+")[i0:i1] = encode_array(ref, StackRows(stack_path, i0, i1).read())
    return i1 - i0


def _autoencoder_encoder(model: str | os.PathLike, opts: EncodeOptions, patch_shape: Any,
                         source: Any) -> tuple[Any, int, dict[str, Any]]:
    """``(encoder ref, code length, codes attrs)`` of ``model`` for patches of ``patch_shape``; one clear error
    (naming ``source``) when the model is not an autoencoder or was trained on another patch shape."""
    info = autoencoder_info_of(model)
    ref = encoder_ref(model, opts)
    if [int(s) for s in patch_shape] != list(info.patch_size):
        raise InputError(f"patches of {[int(s) for s in patch_shape]} voxels do not fit the autoencoder "
                         f"'{info.name}', trained on {list(info.patch_size)}", source)
    attrs = {"model": info.name, "model_sha256": ref.sha256, "deepict": "codes", "kind": "autoencoder"}
    return ref, int(info.architecture.get("code_dim", 32)), attrs


def _invariant_attrs(patch_shape: Any, mean: np.ndarray, std: np.ndarray, normalization: str,
                     lowpass_sigma: float) -> dict[str, Any]:
    """The attrs of invariant codes: their kind, patch shape, the scaling new patches must reuse, and how the
    described patches were cut (``described_patches``: new patches are cut the same way)."""
    return {"deepict": "codes", "kind": "invariant", "patch_shape": [int(s) for s in patch_shape],
            "feature_mean": np.asarray(mean).tolist(), "feature_std": np.asarray(std).tolist(),
            "described_patches": {"normalization": str(normalization), "lowpass_sigma": float(lowpass_sigma)}}


def _create_codes(path: Path, n: int, dim: int, step: int) -> Any:
    """An empty ``(n, dim)`` float32 codes array, ``step`` rows a chunk (one task's rows)."""
    import zarr

    from deepict_dask.io.zarr_store import compressor_codec

    return zarr.create_array(str(path), shape=(n, dim), chunks=(step, dim), dtype="float32", fill_value=0,
                             compressors=compressor_codec("zstd", 3), zarr_format=3)


def write_codes(stack: str | os.PathLike, model: str | os.PathLike, out: str | os.PathLike,
                opts: EncodeOptions = EncodeOptions()) -> Path:
    """Encode the patch stack ``stack`` with the autoencoder ``model`` into the codes array ``out``.

    Parameters
    ----------
    stack
        Patch stack written by :func:`deepict_dask.mine.patches.write_patch_stack`.
    model
        Autoencoder model file (``task = "autoencoder"``) whose patch shape matches the stack's.
    out
        Codes Zarr array (N x code_dim), written atomically.
    opts
        Device, batch size, precision, patches per task.

    Returns
    -------
    ``out``.
    """
    arr = open_patch_stack(stack)
    ref, code_dim, attrs = _autoencoder_encoder(model, opts, arr.shape[1:], stack)
    n = int(arr.shape[0])
    step = opts.chunk or int(arr.chunks[0])
    with atomic_path(out) as tmp:
        _create_codes(tmp, n, code_dim, step).attrs.update(attrs)
        tasks = [dask.delayed(_encode_chunk)(ref, str(stack), str(tmp), i0, min(n, i0 + step))
                 for i0 in range(0, n, step)]
        dask.compute(*tasks)
    return Path(out)


def _describe_chunk(part: Any, codes_path: str, i0: int) -> tuple[np.ndarray, np.ndarray]:
    """Raw descriptors of one run of patches (``part.read()``) into the codes array from row ``i0``;
    returns their sum and sum of squares."""
    import zarr

    from deepict_dask.mine.invariant import describe

    values = describe(part.read())
    zarr.open_array(codes_path, mode="r+")[i0 : i0 + len(values)] = values
    v = values.astype(np.float64)
    return v.sum(0), (v**2).sum(0)


def _zscore(values: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Raw descriptors z-scored (in float64, stored as float32): the one formula of every invariant code."""
    return ((np.asarray(values, np.float64) - mean) / std).astype(np.float32)


def check_scaling(scaling: tuple[np.ndarray, np.ndarray], patch_shape: Any, source: Any = None) -> None:
    """Refuse a reference scaling whose descriptor count differs from what patches of ``patch_shape`` give."""
    from deepict_dask.mine.invariant import descriptor_size

    dim = descriptor_size(patch_shape)
    if len(scaling[0]) != dim:
        raise InputError(f"the reference codes have {len(scaling[0])} descriptors but patches of "
                         f"{[int(s) for s in patch_shape]} voxels give {dim}: cut the new patches with the "
                         "reference's patch shape", source)


def _scale_chunk(codes_path: str, i0: int, i1: int, mean: np.ndarray, std: np.ndarray) -> int:
    import zarr

    arr = zarr.open_array(codes_path, mode="r+")
    arr[i0:i1] = _zscore(arr[i0:i1], mean, std)
    return i1 - i0


def write_invariant_codes(source: str | os.PathLike | Any, out: str | os.PathLike, opts: EncodeOptions = EncodeOptions(),
                          scaling: tuple[np.ndarray, np.ndarray] | None = None) -> Path:
    """Rotation-invariant descriptors of patches, z-scored, into the codes array ``out``.

    ``source`` is a patch stack (path), or a :class:`~deepict_dask.mine.patches.PatchReader` that cuts the
    patches from the tomograms in each task (how the stack's patches are described without its low-pass).
    One Dask task per chunk computes the descriptors (:mod:`deepict_dask.mine.invariant`); a second
    pass z-scores them, with ``scaling`` = ``(mean, std)`` when given (the codes of the stack the
    clusters were fitted on: :func:`invariant_scaling`), else with these patches' own statistics.
    No model is needed. Returns ``out``.
    """
    from deepict_dask.mine.invariant import descriptor_size

    if isinstance(source, (str, os.PathLike)):
        arr = open_patch_stack(source)
        shape, n = [int(s) for s in arr.shape[1:]], int(arr.shape[0])
        step = opts.chunk or int(arr.chunks[0])
        recorded = stack_cut(arr)
        cut = (recorded.normalization, recorded.lowpass_sigma)
        parts = [(i0, StackRows(str(source), i0, min(n, i0 + step))) for i0 in range(0, n, step)]
    else:
        shape, n = [int(s) for s in source.patch_shape], len(source)
        step = opts.chunk or 256
        cut = (source.mode, source.sigma)
        parts = [(i0, source.part(i0, i0 + step)) for i0 in range(0, n, step)]
    dim = descriptor_size(shape)
    if scaling is not None:
        check_scaling(scaling, shape, source if isinstance(source, (str, os.PathLike)) else None)
    with atomic_path(out) as tmp:
        codes = _create_codes(tmp, n, dim, step)
        sums = dask.compute(*[dask.delayed(_describe_chunk)(part, str(tmp), i0) for i0, part in parts])
        if scaling is None:
            total = np.sum([s for s, _ in sums], axis=0)
            squares = np.sum([q for _, q in sums], axis=0)
            mean = total / max(1, n)
            std = np.sqrt(np.maximum(squares / max(1, n) - mean**2, 0.0))
            std = np.where(std > 1e-9 * np.maximum(1.0, np.abs(mean)), std, 1.0)  # a constant descriptor stays 0
        else:
            mean, std = (np.asarray(v, np.float64) for v in scaling)
        dask.compute(*[dask.delayed(_scale_chunk)(str(tmp), i0, min(n, i0 + step), mean, std) for i0, _ in parts])
        codes.attrs.update(_invariant_attrs(shape, mean, std, *cut))
    return Path(out)


def described_patches(codes: str | os.PathLike) -> dict[str, Any] | None:
    """How the patches of invariant codes were cut (``normalization``, ``lowpass_sigma``), or ``None`` for
    codes written before it was recorded (they described the stack's patches as they were)."""
    import zarr

    cut = zarr.open_array(str(codes), mode="r").attrs.get("described_patches")
    return dict(cut) if isinstance(cut, dict) else None


def _codes_of(part: Any, ref: Any, scaling: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
    """Codes of one run of patches cut by ``part``: the autoencoder's (``ref``) or invariant ones z-scored as
    :func:`write_invariant_codes` does, so the fused paths give the same codes as the stack's."""
    from deepict_dask.mine.invariant import describe

    patches = part.read()
    if ref is not None:
        return encode_array(ref, patches)
    return _zscore(describe(patches), *scaling)  # type: ignore[misc]


def _nearest_chunk(part: Any, ref: Any, scaling: tuple[np.ndarray, np.ndarray] | None,
                   centres: np.ndarray) -> np.ndarray:
    from deepict_dask.mine.kmeans import assign

    return assign(_codes_of(part, ref, scaling), centres)


def _write_codes_chunk(path: str, i0: int, part: Any, ref: Any, scaling: tuple[np.ndarray, np.ndarray] | None) -> int:
    import zarr

    zarr.open_array(path, mode="r+")[i0 : i0 + len(part)] = _codes_of(part, ref, scaling)
    return len(part)


def _fused_encoder(reader: Any, model: str | os.PathLike | None, opts: EncodeOptions,
                   scaling: tuple[np.ndarray, np.ndarray] | None) -> tuple[Any, Any, int, dict[str, Any]]:
    """``(encoder ref or None, scaling, code length, codes attrs)`` for encoding ``reader``'s patches without a
    patch stack; one clear error before any task when the model or the scaling cannot match the patches."""
    if opts.codes == "invariant":
        if scaling is None:
            raise InputError("invariant codes of new patches need the reference's scaling (invariant_scaling)")
        check_scaling(scaling, reader.patch_shape)
        mean, std = (np.asarray(v, np.float64) for v in scaling)
        return None, (mean, std), len(mean), _invariant_attrs(reader.patch_shape, mean, std, reader.mode, reader.sigma)
    if model is None:
        raise InputError("autoencoder codes of new patches need the autoencoder model")
    ref, dim, attrs = _autoencoder_encoder(model, opts, reader.patch_shape, model)
    return ref, None, dim, attrs


def nearest_clusters(reader: Any, centres: np.ndarray, *, model: str | os.PathLike | None = None,
                     opts: EncodeOptions = EncodeOptions(), scaling: tuple[np.ndarray, np.ndarray] | None = None,
                     chunk: int = 256) -> np.ndarray:
    """The nearest cluster centre of every patch of ``reader``, cut, encoded and assigned in one Dask task
    per ``chunk`` patches: no patch stack and no codes array are written, so filtering new tomograms
    needs no disk for them (a full-size tomogram's stack runs to many gigabytes).

    Parameters
    ----------
    reader
        A :class:`~deepict_dask.mine.patches.PatchReader` (:func:`~deepict_dask.mine.patches.patch_reader`).
    centres
        Cluster centres ``(k, code_dim)`` of the mining directory the patches are compared with.
    model
        The autoencoder, for autoencoder codes (``opts.codes``).
    opts
        The kind of codes, device, batch size and precision.
    scaling
        For invariant codes: the ``(mean, std)`` the reference's codes were z-scored with.

    Returns
    -------
    ``(N,)`` int32 cluster ids, in the reader's order.
    """
    ref, scale, _dim, _attrs = _fused_encoder(reader, model, opts, scaling)
    n = len(reader)
    step = int(opts.chunk or chunk)
    c = np.asarray(centres, np.float64)
    parts = dask.compute(*[dask.delayed(_nearest_chunk)(reader.part(i0, i0 + step), ref, scale, c)
                           for i0 in range(0, n, step)])
    return np.concatenate(parts).astype(np.int32) if parts else np.empty(0, np.int32)


def write_codes_from(reader: Any, out: str | os.PathLike, *, model: str | os.PathLike | None = None,
                     opts: EncodeOptions = EncodeOptions(), scaling: tuple[np.ndarray, np.ndarray] | None = None,
                     chunk: int = 256) -> Path:
    """The codes array ``out`` of ``reader``'s patches, each Dask task cutting and encoding its own run of
    patches: no patch stack is written (a data set's codes take 128 bytes a patch, its patches 128 kB).

    Same codes and attributes as :func:`write_codes` / :func:`write_invariant_codes` on a stack of the same
    patches; invariant codes need ``scaling`` (the reference's). Written atomically. Returns ``out``.
    """
    ref, scale, dim, attrs = _fused_encoder(reader, model, opts, scaling)
    n = len(reader)
    step = int(opts.chunk or chunk)
    with atomic_path(out) as tmp:
        _create_codes(tmp, n, dim, step).attrs.update(attrs)
        dask.compute(*[dask.delayed(_write_codes_chunk)(str(tmp), i0, reader.part(i0, i0 + step), ref, scale)
                       for i0 in range(0, n, step)])
    return Path(out)


def codes_kind(codes: str | os.PathLike) -> str:
    """What a codes array holds: ``autoencoder`` (also for arrays written before the kind was recorded) or
    ``invariant``."""
    import zarr

    return str(zarr.open_array(str(codes), mode="r").attrs.get("kind", "autoencoder"))


def invariant_scaling(codes: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """``(mean, std)`` that z-scored the invariant codes ``codes`` (to encode new patches the same way)."""
    import zarr

    attrs = zarr.open_array(str(codes), mode="r").attrs
    if attrs.get("kind") != "invariant" or "feature_mean" not in attrs:
        raise InputError("not rotation-invariant codes (encode with --codes invariant)", codes)
    return np.asarray(attrs["feature_mean"], np.float64), np.asarray(attrs["feature_std"], np.float64)


def decode_codes(model: str | os.PathLike, codes: np.ndarray, device: str = "auto") -> np.ndarray:
    """Images ``(N, D, H, W)`` float32 that the autoencoder's decoder makes of ``codes`` ``(N, code_dim)``."""
    import torch

    from deepict_dask.inference.devices import choose_device, inference_mode

    dev = choose_device(device)
    net, _info = load_autoencoder(str(model), dev)
    z = torch.from_numpy(np.ascontiguousarray(codes, dtype=np.float32)).to(dev)
    with inference_mode():
        images = net.decode(z)
    return images[:, 0].float().cpu().numpy()
