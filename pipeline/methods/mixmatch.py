"""MixMatch (Berthelot et al. 2019): sharpened guesses for the pool, then mixup across all scans.

Each unlabelled scan is seen in ``views`` weak views; the network's probabilities, averaged over
them and sharpened with ``temperature``, are its guessed label (no gradient; the labelled scans go
through that pass too, so that its batch statistics are those of the mixed pass). Labelled scans (their
one-hot labels) and every unlabelled view (its guess) are then mixed with a shuffled copy of the
whole batch, ``lam`` drawn from Beta(``alpha``, ``alpha``) and kept at or above one half, so each
mixture stays closer to its own scan; one forward pass sees all mixtures. Labelled mixtures are
trained with cross-entropy on their mixed labels, unlabelled ones by the mean squared error of their
probabilities to their mixed guesses, at a sigmoid-ramped ``consistency_weight``.

Huang et al. (CVPR 2024), tuning 13 semi- and self-supervised methods on four medical image sets
with realistic validation sets, found MixMatch's gains the most reliable. Interpolation consistency
(``ict``), which mixes unlabelled scans alone with an even Beta(1, 1), read 0.03 below supervised on
PneumoniaMNIST; here mixing is mostly mild (Beta(0.75, 0.75), ``lam`` >= 1/2) and labels mix too.

With ``alignment`` (the default) the averaged guesses are first rescaled so that their running
mean meets the pool's own class mix, estimated at each round start from the calibration scans
(``shared.PoolPriorRounds``; as ReMixMatch aligns them, but to the screening pool's mix, never an
even one). ``ema_decay`` > 0 lets an average of the weights predict.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pipeline.methods import register
from pipeline.methods.base import Method, StepBatch
from pipeline.methods.confidence import ConfidenceAverages
from pipeline.methods.shared import PoolPriorRounds, WeightAveraged, mixup, sigmoid_rampup


def sharpen(probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """Each row raised to ``1 / temperature`` and renormalised: below 1 the top class gains."""
    powered = probs.clamp_min(1e-12) ** (1.0 / temperature)
    return powered / powered.sum(dim=1, keepdim=True)


@register
class MixMatch(PoolPriorRounds, WeightAveraged, Method):
    name = "mixmatch"

    @dataclass
    class Params:
        # Maximum weight of the unlabelled MSE (the paper's lambda_u), a mean over classes: the paper's 75
        # over ten classes is 7.5 per unit of summed squared error, 10 over two is 5; at 30 and 75 the early,
        # sharpened guesses took over on 3-class toy tasks of 120 steps (one class called throughout).
        consistency_weight: float = 10.0
        temperature: float = 0.5  # sharpening of the averaged guess
        views: int = 2  # weak views of each unlabelled scan averaged for its guess (the paper's K)
        alpha: float = 0.75  # mixing coefficients are drawn from Beta(alpha, alpha)
        rampup: float = 0.3  # fraction of training over which the weight ramps up
        alignment: bool = True  # align the averaged guesses to the pool's estimated class mix
        momentum: float = 0.99  # of the guesses' running mean that alignment divides by
        prior_rounds: int = 4  # with alignment: the pool's mix is re-estimated at each round start
        ema_decay: float = 0.0  # > 0: an EMA of the weights is the prediction network

    def __init__(self, params, build_network, num_classes, input_shape):
        super().__init__(params, build_network, num_classes, input_shape)
        if not 0 < params.temperature <= 1:
            raise ValueError(f"method.mixmatch.temperature must be in (0, 1], got {params.temperature}")
        if params.views < 1:
            raise ValueError(f"method.mixmatch.views must be >= 1, got {params.views}")
        if not params.alpha > 0:
            raise ValueError(f"method.mixmatch.alpha must be > 0, got {params.alpha}")
        if not 0 < params.momentum < 1:
            raise ValueError(f"method.mixmatch.momentum must be in (0, 1), got {params.momentum}")
        if params.consistency_weight < 0:
            raise ValueError(f"method.mixmatch.consistency_weight must be >= 0, got {params.consistency_weight}")
        self.averages = ConfidenceAverages(num_classes, params.momentum)
        self.init_prior_rounds(params.alignment)
        self.init_weight_average()

    @torch.no_grad()
    def guesses(self, views: list[torch.Tensor], labelled: torch.Tensor | None = None) -> torch.Tensor:
        """The sharpened mean of the network's probabilities over ``views`` (each (U, C, *spatial)),
        aligned to the pool's estimated mix where there is one; no gradient."""
        skip = 0 if labelled is None else len(labelled)
        parts = views if labelled is None else [labelled, *views]
        probs = torch.softmax(self.network(torch.cat(parts)).float()[skip:], dim=1)
        mean = probs.view(len(views), -1, self.num_classes).mean(dim=0)
        target = self.pool_prior if self.params.alignment else None
        mean = self.averages.probabilities(mean.clamp_min(1e-12).log(), target)
        return sharpen(mean, self.params.temperature)

    def losses(self, batch: StepBatch):
        """Cross-entropy of the labelled mixtures on their mixed labels plus the ramped MSE of the
        unlabelled mixtures' probabilities to their mixed guesses.

        Returns
        -------
        dict
            ``loss`` (total), ``supervised``, ``unsupervised``, ``weight``, ``mix`` (the step's
            ``lam``) and ``guess_top`` (the guesses' mean top probability); all but ``loss`` detached.
        """
        n_labelled, n_unlabelled = len(batch.labels), len(batch.unlabelled)
        labelled = batch.augment.weak(batch.labelled)
        labels = F.one_hot(batch.labels, self.num_classes).float()
        if not n_unlabelled:
            supervised = F.cross_entropy(self.network(labelled), batch.labels)
            return {"loss": supervised, "supervised": supervised.detach()}
        views = [batch.augment.weak(batch.unlabelled) for _ in range(self.params.views)]
        guess = self.guesses(views, labelled)
        inputs = torch.cat([labelled, *views])
        targets = torch.cat([labels, guess.repeat(self.params.views, 1)])
        mixed_inputs, mixed, lam = mixup(inputs, targets, self.params.alpha)
        logits = self.network(mixed_inputs).float()
        supervised = F.cross_entropy(logits[:n_labelled], mixed[:n_labelled])
        unsupervised = torch.mean((torch.softmax(logits[n_labelled:], dim=1) - mixed[n_labelled:]) ** 2)
        weight = self.params.consistency_weight * sigmoid_rampup(batch.progress, self.params.rampup)
        return {"loss": supervised + weight * unsupervised, "supervised": supervised.detach(),
                "unsupervised": unsupervised.detach(), "weight": torch.tensor(weight), "mix": torch.tensor(lam),
                "guess_top": guess.max(dim=1).values.mean()}
