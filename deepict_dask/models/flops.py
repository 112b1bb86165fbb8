"""Parameter counts and compute cost per voxel, measured by running a probe input through the net."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def flops_per_voxel(module: nn.Module, in_channels: int, patch: Sequence[int]) -> float:
    """Floating point operations (2 per multiply-add) of convolutions per output voxel.

    Counts every Conv and transposed Conv layer on a zero probe of shape ``patch``; normalization,
    activations and pooling are a few percent and not counted.
    """
    macs = 0

    def hook(mod: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal macs
        kernel = math.prod(mod.kernel_size)
        cin = mod.in_channels // mod.groups
        if isinstance(mod, nn.modules.conv._ConvTransposeNd):
            macs += inp[0].numel() // inp[0].shape[0] * kernel * mod.out_channels // mod.groups
        else:
            macs += out.numel() // out.shape[0] * kernel * cin

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, nn.modules.conv._ConvNd)]
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            module(torch.zeros(1, in_channels, *patch))
    finally:
        for h in handles:
            h.remove()
        module.train(was_training)
    return 2.0 * macs / math.prod(patch)
