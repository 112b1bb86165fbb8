"""2D and 3D U-Nets (DeePiCt, DeepFinder) and presets reproducing the published networks.

One implementation serves both dimensionalities: ``dim`` picks Conv2d/Conv3d, pooling and
transposed convolutions. Every level is two 3x3(x3) convolutions (+ optional batch norm) with ReLU,
``depth`` max-poolings down, transposed convolutions up, skip connections by concatenation.
The forward pass returns *logits*; :class:`ProbabilityHead` turns them into probabilities
according to the model's activation (sigmoid per class, or softmax with background channel 0).
Inputs of any spatial size are accepted: they are padded (edge replicate) to a multiple of
``2**depth`` and the output is cropped back, so blockwise inference needs no size rules.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from deepict_dask.models.edss3d import EDSS3D

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_UP = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
_POOL = {2: nn.MaxPool2d, 3: nn.MaxPool3d}
_BN = {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_DROP = {2: nn.Dropout2d, 3: nn.Dropout3d}

# Constructor arguments of the published networks (architecture dicts, 'kind' included).
PRESETS: dict[str, dict[str, Any]] = {
    # DeePiCt 2D compartment network: 4 poolings, 16..256 filters, 288x288 tiles.
    "deepict_2d": {"kind": "UNet2D", "depth": 4, "initial_filters": 16, "batch_norm": True},
    # DeePiCt 3D ribosome / membrane networks.
    "deepict_ribosome": {"kind": "UNet3D", "depth": 2, "initial_filters": 4, "batch_norm": True},
    "deepict_membrane": {"kind": "UNet3D", "depth": 2, "initial_filters": 4, "batch_norm": True},
    # DeePiCt FAS network.
    "deepict_fas": {"kind": "UNet3D", "depth": 2, "initial_filters": 16, "batch_norm": False},
    # DeepFinder: 2 poolings, 32/48/64 filters, softmax with background.
    "deepfinder": {"kind": "UNet3D", "depth": 2, "filters": [32, 48, 64], "batch_norm": False},
    # EDSS3D (Autoencoder3D workflow): encoder-decoder without skips, 32 filters, softmax with background.
    "edss3d": {"kind": "EDSS3D", "depth": 2, "filters": 32},
}
PRESET_PATCH = {"deepict_2d": [288, 288], "deepfinder": [56, 56, 56]}


class _Block(nn.Sequential):
    """Two convolutions (kernel 3, same padding), each followed by optional BN and ReLU."""

    def __init__(self, dim: int, cin: int, cout: int, batch_norm: bool, dropout: float):
        layers: list[nn.Module] = []
        for i in range(2):
            layers.append(_CONV[dim](cin if i == 0 else cout, cout, 3, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(_BN[dim](cout))
            layers.append(nn.ReLU(inplace=True))
        if dropout > 0:
            layers.append(_DROP[dim](dropout))
        super().__init__(*layers)


class UNet(nn.Module):
    """U-Net for ``dim`` = 2 or 3 spatial dimensions; returns logits (N, out_channels, ...)."""

    # forward pads any input to a multiple of 2**depth and crops back: every window size works,
    # so the inference engine need not trace the network to check a window
    keeps_size = True

    def __init__(
        self,
        dim: int = 3,
        in_channels: int = 1,
        out_channels: int = 1,
        depth: int = 2,
        initial_filters: int = 16,
        filters: Sequence[int] | None = None,
        batch_norm: bool = True,
        dropout_encoder: float = 0.0,
        dropout_decoder: float = 0.0,
    ):
        super().__init__()
        if dim not in (2, 3):
            raise ValueError(f"dim must be 2 or 3, got {dim}")
        if depth < 0:
            raise ValueError(f"depth must be >= 0, got {depth}")
        widths = list(filters) if filters else [initial_filters * 2**i for i in range(depth + 1)]
        if len(widths) != depth + 1:
            raise ValueError(f"'filters' needs depth + 1 = {depth + 1} values, got {len(widths)}")
        self.dim, self.depth = dim, depth
        self.down = nn.ModuleList()
        cin = in_channels
        for w in widths:
            self.down.append(_Block(dim, cin, w, batch_norm, dropout_encoder))
            cin = w
        self.pool = _POOL[dim](2)
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        for w_skip, w_low in zip(reversed(widths[:-1]), reversed(widths[1:])):
            self.up.append(_UP[dim](w_low, w_skip, 2, stride=2))
            self.dec.append(_Block(dim, 2 * w_skip, w_skip, batch_norm, dropout_decoder))
        self.head = _CONV[dim](widths[0], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[2:]
        m = 2**self.depth
        pad = [(-s) % m for s in size]
        if any(pad):
            # F.pad takes (last_lo, last_hi, ..., first_lo, first_hi)
            spec: list[int] = []
            for p in reversed(pad):
                spec += [0, p]
            x = F.pad(x, spec, mode="replicate")
        skips = []
        for i, block in enumerate(self.down):
            x = block(x)
            if i < self.depth:
                skips.append(x)
                x = self.pool(x)
        for up, dec, skip in zip(self.up, self.dec, reversed(skips)):
            x = dec(torch.cat([up(x), skip], dim=1))
        x = self.head(x)
        if any(pad):
            x = x[(slice(None), slice(None)) + tuple(slice(0, s) for s in size)]
        return x


class UNet2D(UNet):
    """DeePiCt's 2D compartment U-Net (defaults: 4 poolings, 16..256 filters, batch norm)."""

    def __init__(self, in_channels: int = 1, out_channels: int = 1, depth: int = 4, initial_filters: int = 16,
                 filters: Sequence[int] | None = None, batch_norm: bool = True,
                 dropout_encoder: float = 0.0, dropout_decoder: float = 0.0):
        super().__init__(2, in_channels, out_channels, depth, initial_filters, filters, batch_norm,
                         dropout_encoder, dropout_decoder)


class UNet3D(UNet):
    """3D U-Net (DeePiCt multi-label or DeepFinder multi-class), 3x3x3 convolutions."""

    def __init__(self, in_channels: int = 1, out_channels: int = 1, depth: int = 2, initial_filters: int = 8,
                 filters: Sequence[int] | None = None, batch_norm: bool = True,
                 dropout_encoder: float = 0.0, dropout_decoder: float = 0.0):
        super().__init__(3, in_channels, out_channels, depth, initial_filters, filters, batch_norm,
                         dropout_encoder, dropout_decoder)


class ProbabilityHead(nn.Module):
    """Wraps a logits network so that ``forward`` returns probabilities (sigmoid or softmax)."""

    def __init__(self, net: nn.Module, activation: str):
        super().__init__()
        self.net = net
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.net(x).float()
        return torch.softmax(logits, dim=1) if self.activation == "softmax" else torch.sigmoid(logits)


KINDS: dict[str, type[nn.Module]] = {"UNet2D": UNet2D, "UNet3D": UNet3D, "EDSS3D": EDSS3D}


def architecture_from(preset_or_arch: str | dict[str, Any]) -> dict[str, Any]:
    """Resolve a preset name or an architecture dict (which may name a ``preset`` to override)."""
    if isinstance(preset_or_arch, str):
        if preset_or_arch not in PRESETS:
            raise KeyError(f"unknown preset {preset_or_arch!r} (known: {', '.join(PRESETS)})")
        return dict(PRESETS[preset_or_arch])
    arch = dict(preset_or_arch)
    preset = arch.pop("preset", None)
    return {**architecture_from(preset), **arch} if preset else arch
