"""Running statistics of the weak view's predictions on the pool, as FixMatch's successors read them.

FixMatch keeps a pseudo-label where the weak view's top probability passes a fixed 0.95: early in
training almost nothing passes, and where the pool's class mix differs from the labels' the majority
class passes first. Its successors take the bar from the network's own confidence instead:

- *self-adaptive thresholds* (FreeMatch, Wang et al. 2023): the running mean of the top probability,
  scaled for each class by the running mean probability of that class over the largest one, so a
  class the network rarely predicts gets a lower bar;
- *soft weights* (SoftMatch, Chen et al. 2023): every pseudo-label counts, weighted 1 at or above the
  running mean of the top probability and by a Gaussian of its distance below it, so no confident
  scan is lost to a threshold and an unsure one teaches little;
- *distribution alignment* (ReMixMatch, AdaMatch): the probabilities are rescaled so that their
  running mean meets a target class mix before pseudo-labels are taken. The target is the pool's own
  estimated mix (``shared.PoolPriorRounds``), never the labelled scans' or an even one: a screening
  pool is mostly healthy, and SoftMatch's uniform alignment would push it towards balance.
"""

from __future__ import annotations

import torch
from torch import nn


class ConfidenceAverages(nn.Module):
    """Exponential moving averages over the unlabelled batches' weak-view probabilities.

    Buffers (saved with the method, so a resumed run keeps them): ``raw_class_mean``, the mean
    probability of each class before alignment (what alignment divides by); ``top_mean`` and
    ``top_var``, the mean and variance of the top probability; ``class_mean``, each class's mean
    probability as pseudo-labels see it (after alignment). All start where a network that knows
    nothing would be: every class at 1/K.

    Parameters
    ----------
    num_classes : int
    momentum : float
        Weight of the old value at each update, in (0, 1): 0.99 averages over about the last
        hundred steps.
    """

    def __init__(self, num_classes: int, momentum: float):
        super().__init__()
        if not 0.0 < momentum < 1.0:
            raise ValueError(f"momentum must be in (0, 1), got {momentum}")
        self.momentum = momentum
        even = torch.full((num_classes,), 1.0 / num_classes)
        self.register_buffer("raw_class_mean", even.clone())
        self.register_buffer("class_mean", even.clone())
        self.register_buffer("top_mean", torch.tensor(1.0 / num_classes))
        self.register_buffer("top_var", torch.tensor(1.0))

    @torch.no_grad()
    def probabilities(self, logits: torch.Tensor, target_mix: torch.Tensor | None = None) -> torch.Tensor:
        """The batch's softmax probabilities (no gradient), aligned to ``target_mix`` where one is
        given, after updating the averages with them."""
        probs = torch.softmax(logits.detach().float(), dim=1)
        self._follow(self.raw_class_mean, probs.mean(dim=0))
        if target_mix is not None:
            probs = align_distribution(probs, self.raw_class_mean, target_mix.to(probs))
        top = probs.max(dim=1).values
        self._follow(self.top_mean, top.mean())
        self._follow(self.top_var, top.var() if len(top) > 1 else torch.zeros_like(top.mean()))
        self._follow(self.class_mean, probs.mean(dim=0))
        return probs

    def _follow(self, average: torch.Tensor, value: torch.Tensor) -> None:
        average.mul_(self.momentum).add_((1.0 - self.momentum) * value)

    def thresholds(self) -> torch.Tensor:
        """FreeMatch's per-class thresholds: the mean top probability times each class's mean
        probability over the largest one."""
        return self.top_mean * self.class_mean / self.class_mean.max()

    def soft_weights(self, confidence: torch.Tensor, gaussian_sd: float) -> torch.Tensor:
        """SoftMatch's weights: 1 where ``confidence`` is at least the mean top probability, else a
        Gaussian of its distance below, whose sd is ``gaussian_sd`` times the running sd."""
        below = (self.top_mean - confidence).clamp_min(0.0)
        variance = (gaussian_sd ** 2) * self.top_var.clamp_min(1e-12)
        return torch.exp(-below ** 2 / (2.0 * variance))


def align_distribution(probs: torch.Tensor, running_mean: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Rescale each row of ``probs`` by ``target / running_mean`` and renormalise: where the
    network's mean prediction is ``running_mean``, the aligned predictions average near ``target``."""
    scaled = probs * (target / running_mean.clamp_min(1e-8))
    return scaled / scaled.sum(dim=1, keepdim=True).clamp_min(1e-12)
