"""EDSS3D: the encoder-decoder segmentation network of the Autoencoder3D workflow (weak supervision).

An encoder of 3x3x3 convolutions (ReLU) and 2x2x2 max-poolings, and a mirrored decoder of
upsamplings and convolutions, without skip connections (this is what tells it apart from a U-Net)
and without a fully connected layer, so it runs on windows of any size: ``forward`` pads the input
to a multiple of ``2**depth`` (edge replicate) and crops the output back, like the U-Nets, and the
inference engine can tile whole tomograms with it. It returns logits (N, out_channels, Z, Y, X);
trained with softmax over background + classes (channel 0 = background).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _convs(cin: int, cout: int, n: int, batch_norm: bool) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for i in range(n):
        layers.append(nn.Conv3d(cin if i == 0 else cout, cout, 3, padding=1, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm3d(cout))
        layers.append(nn.ReLU(inplace=True))
    return layers


class EDSS3D(nn.Module):
    """Fully convolutional encoder-decoder; ``depth`` poolings, ``filters`` channels at every level.

    Parameters
    ----------
    in_channels, out_channels
        Input channels (1: a tomogram) and output channels (background + classes with softmax).
    depth
        Number of 2x2x2 poolings (and upsamplings); windows are padded to a multiple of ``2**depth``.
    filters
        Convolution channels of every level (the published network uses 32).
    convs_per_level
        3x3x3 convolutions (each followed by ReLU) per level of the encoder and of the decoder.
    batch_norm
        Batch normalisation after each convolution (off in the published network).
    """

    keeps_size = True  # any window size works (padded and cropped in forward)

    def __init__(self, in_channels: int = 1, out_channels: int = 2, depth: int = 2, filters: int = 32,
                 convs_per_level: int = 1, batch_norm: bool = False):
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        if filters < 1 or convs_per_level < 1:
            raise ValueError("filters and convs_per_level must be >= 1")
        self.depth = depth
        enc: list[nn.Module] = []
        cin = in_channels
        for _ in range(depth):
            enc += _convs(cin, filters, convs_per_level, batch_norm) + [nn.MaxPool3d(2)]
            cin = filters
        self.encoder = nn.Sequential(*enc, *_convs(filters, filters, convs_per_level, batch_norm))
        dec: list[nn.Module] = []
        for _ in range(depth):
            dec += [nn.Upsample(scale_factor=2, mode="nearest")] + _convs(filters, filters, convs_per_level, batch_norm)
        self.decoder = nn.Sequential(*dec)
        self.head = nn.Conv3d(filters, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[2:]
        m = 2**self.depth
        pad = [(-s) % m for s in size]
        if any(pad):
            spec: list[int] = []
            for p in reversed(pad):  # F.pad lists the last axis first
                spec += [0, p]
            x = F.pad(x, spec, mode="replicate")
        x = self.head(self.decoder(self.encoder(x)))
        if any(pad):
            x = x[(slice(None), slice(None)) + tuple(slice(0, s) for s in size)]
        return x
