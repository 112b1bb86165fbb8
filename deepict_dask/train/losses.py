"""Segmentation losses on logits: Dice, generalized Dice, Tversky, (binary) cross-entropy, sums.

Targets are per-class binary masks ``(N, C, ...)`` for both activations. With softmax the network
has ``C + 1`` channels (0 = background) and the masks are turned into one class index per voxel:
the first listed class whose mask is set wins, background otherwise. Overlap losses are computed
over the foreground classes only and averaged over classes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from deepict_dask.train.config import LossTerm

EPS = 1.0


def class_index(target: torch.Tensor) -> torch.Tensor:
    """(N, C, ...) binary masks -> (N, ...) index, 0 background, first set class c -> c + 1."""
    c = target.shape[1]
    prio = torch.arange(c, 0, -1, device=target.device).view(1, c, *([1] * (target.ndim - 2)))
    score = target.float() * prio
    best = score.argmax(dim=1)
    return torch.where(score.amax(dim=1) > 0, best + 1, torch.zeros_like(best))


def probabilities(logits: torch.Tensor, activation: str) -> torch.Tensor:
    """Foreground class probabilities (N, C, ...) for either activation."""
    if activation == "softmax":
        return torch.softmax(logits.float(), dim=1)[:, 1:]
    return torch.sigmoid(logits.float())


def _sums(p: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    dims = [0] + list(range(2, p.ndim))
    tp = (p * t).sum(dims)
    fp = (p * (1 - t)).sum(dims)
    fn = ((1 - p) * t).sum(dims)
    return tp, fp, fn


def dice_loss(p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    tp, fp, fn = _sums(p, t)
    return (1 - (2 * tp + EPS) / (2 * tp + fp + fn + EPS)).mean()


def generalized_dice_loss(p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Dice with class weights 1 / (class volume)^2 (Sudre et al. 2017), for rare classes."""
    tp, fp, fn = _sums(p, t)
    w = 1.0 / (t.sum([0] + list(range(2, t.ndim))) ** 2).clamp(min=1.0)
    return 1 - (2 * (w * tp).sum() + EPS * 1e-6) / ((w * (2 * tp + fp + fn)).sum() + EPS * 1e-6)


def tversky_loss(p: torch.Tensor, t: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    tp, fp, fn = _sums(p, t)
    return (1 - (tp + EPS) / (tp + alpha * fp + beta * fn + EPS)).mean()


class SegmentationLoss(torch.nn.Module):
    """Weighted sum of loss terms; call with logits and binary target masks (N, C, ...)."""

    def __init__(self, terms: Sequence[LossTerm], activation: str):
        super().__init__()
        self.terms = list(terms)
        self.activation = activation

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        t = target.float()
        p = probabilities(logits, self.activation)
        total = logits.new_zeros(())
        for term in self.terms:
            if term.kind == "dice":
                val = dice_loss(p, t)
            elif term.kind == "generalized_dice":
                val = generalized_dice_loss(p, t)
            elif term.kind == "tversky":
                val = tversky_loss(p, t, term.alpha, term.beta)
            elif term.kind == "bce":
                val = F.binary_cross_entropy_with_logits(logits, t)
            else:
                val = F.cross_entropy(logits, class_index(target))
            total = total + term.weight * val
        return total


class ReconstructionLoss(torch.nn.Module):
    """Weighted sum of ``mse`` terms between an autoencoder's output and its target (the input image).

    A term's ``centre_sigma`` weighs each voxel's squared error by a Gaussian around the patch centre
    (weights averaging 1, so the loss stays on the plain MSE's scale): a patch is *about* what lies at
    its centre (a DoG peak), and the plain MSE spends the 32 numbers of the code on the whole cube.
    """

    def __init__(self, terms: Sequence[LossTerm]):
        super().__init__()
        self.terms = [(float(t.weight), t.centre_sigma) for t in terms if t.kind == "mse"]
        self._weights: dict[tuple, torch.Tensor] = {}

    def centre_weights(self, shape: Sequence[int], sigma: float, device: torch.device) -> torch.Tensor:
        """Gaussian weights over a patch of ``shape`` (spatial), centred on it, mean 1 (cached)."""
        key = (tuple(shape), sigma, str(device))
        if key not in self._weights:
            axes = [(torch.arange(n, dtype=torch.float32) - (n - 1) / 2) ** 2 for n in shape]
            r2 = sum(a.reshape([-1 if i == j else 1 for j in range(len(shape))]) for i, a in enumerate(axes))
            w = torch.exp(-r2 / (2 * sigma**2))
            self._weights[key] = (w / w.mean()).to(device)
        return self._weights[key]

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        err = (output.float() - target.float()) ** 2
        total = err.new_zeros(())
        for weight, sigma in self.terms:
            if sigma is None:
                total = total + weight * err.mean()
            else:
                total = total + weight * (err * self.centre_weights(err.shape[2:], sigma, err.device)).mean()
        return total
