"""Autoencoder3D: the convolutional autoencoder of unsupervised feature mining (Zeng et al.).

The encoder turns a small patch into a short code; k-means on the codes groups patches that look
alike, and the decoder turns a cluster centre back into an image a person can judge. Layout (for the
default 32^3 patch): ``levels`` times a 3x3x3 convolution (``filters`` channels, ReLU) and a 2x2x2
max-pooling, then a fully connected layer to ``code_dim`` numbers. The decoder mirrors it: a fully
connected layer to ``filters`` x (patch / 2**levels) (8x8x8x32), then ``levels`` times a convolution
(ReLU) and a 2x nearest upsampling, and a final convolution with a linear output (the patch's
normalised grey values, trained with MSE).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from deepict_dask.errors import ConfigError


def checked_patch_shape(patch_shape: Sequence[int], levels: int) -> tuple[int, int, int]:
    """The patch shape as three ints, each a positive multiple of ``2**levels`` (else one ConfigError)."""
    shape = tuple(int(p) for p in patch_shape)
    step = 2 ** int(levels)
    if len(shape) != 3 or min(shape) < step or any(p % step for p in shape):
        raise ConfigError(f"patch shape {list(shape)} must be three edges, each a multiple of 2**levels = {step} "
                          f"(the autoencoder pools {levels} times by 2)")
    return shape  # type: ignore[return-value]


class Autoencoder3D(nn.Module):
    """3D convolutional autoencoder; ``encode(x) -> (N, code_dim)``, ``decode(z) -> (N, 1, D, H, W)``.

    ``in_channels``/``out_channels`` exist so the model files' builder can construct it like the
    U-Nets; patches have one channel.
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, patch_shape: Sequence[int] = (32, 32, 32),
                 code_dim: int = 32, filters: int = 32, levels: int = 2):
        super().__init__()
        if levels < 1 or code_dim < 1 or filters < 1:
            raise ConfigError(f"autoencoder: levels, code_dim and filters must be >= 1, got {levels}, {code_dim}, {filters}")
        self.patch_shape = checked_patch_shape(patch_shape, levels)
        self.bottom = tuple(p // 2**levels for p in self.patch_shape)
        self.filters = int(filters)
        self.code_dim = int(code_dim)
        flat = self.filters * self.bottom[0] * self.bottom[1] * self.bottom[2]
        enc: list[nn.Module] = []
        for i in range(levels):
            enc += [nn.Conv3d(in_channels if i == 0 else filters, filters, 3, padding=1), nn.ReLU(inplace=True),
                    nn.MaxPool3d(2)]
        self.encoder = nn.Sequential(*enc)
        self.to_code = nn.Linear(flat, code_dim)
        self.from_code = nn.Sequential(nn.Linear(code_dim, flat), nn.ReLU(inplace=True))
        dec: list[nn.Module] = []
        for _ in range(levels):
            dec += [nn.Conv3d(filters, filters, 3, padding=1), nn.ReLU(inplace=True),
                    nn.Upsample(scale_factor=2, mode="nearest")]
        dec.append(nn.Conv3d(filters, out_channels, 3, padding=1))
        self.decoder = nn.Sequential(*dec)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Codes ``(N, code_dim)`` of patches ``(N, 1, D, H, W)`` of exactly the model's patch shape."""
        if tuple(x.shape[2:]) != self.patch_shape:
            raise ConfigError(f"autoencoder expects patches of {list(self.patch_shape)} voxels, got {list(x.shape[2:])}")
        return self.to_code(self.encoder(x).flatten(1))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images ``(N, 1, D, H, W)`` of codes ``(N, code_dim)``."""
        h = self.from_code(z).reshape(z.shape[0], self.filters, *self.bottom)
        return self.decoder(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


def autoencoder_info(name: str, *, patch_shape: Sequence[int] = (32, 32, 32), code_dim: int = 32, filters: int = 32,
                     levels: int = 2, voxel_size: float = 1.0, normalization: str = "zscore", **fields: object):
    """The :class:`~deepict_dask.models.spec.ModelInfo` of an autoencoder file (``task="autoencoder"``).

    ``classes`` is ``["reconstruction"]`` (one output channel, linear): the model file format
    requires a class list, and segmentation code refuses such a file by its ``task``.
    """
    from deepict_dask.models.spec import ModelInfo

    shape = checked_patch_shape(patch_shape, levels)
    arch = {"kind": "Autoencoder3D", "patch_shape": list(shape), "code_dim": int(code_dim), "filters": int(filters),
            "levels": int(levels)}
    return ModelInfo(name=name, dim=3, classes=["reconstruction"], activation="sigmoid", task="autoencoder",
                     architecture=arch, patch_size=list(shape), voxel_size=voxel_size, normalization=normalization,
                     **fields)
