"""FreeMatch (Wang et al. 2023): FixMatch with a self-adaptive threshold.

FixMatch's fixed bar of 0.95 passes almost nothing while the network is unsure and, where the pool's
class mix differs from the labels', the majority class first. Here the bar follows the network:
the running mean of the weak view's top probability on the pool, lowered for each class the network
rarely predicts in proportion to that class's running mean probability
(``confidence.ConfidenceAverages.thresholds``). Pseudo-labels and the strong-view cross-entropy are
FixMatch's. The paper's fairness term, which pushes the batch's pseudo-label mix towards even classes,
is left out: a screening pool is mostly healthy. With ``alignment`` (the default) the weak view's
probabilities are instead aligned to the pool's own class mix, estimated at each round start from the
calibration scans (``shared.PoolPriorRounds``; none until the network tells the classes apart there).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pipeline.methods import register
from pipeline.methods.confidence import ConfidenceAverages
from pipeline.methods.fixmatch import FixMatch
from pipeline.methods.shared import PoolPriorRounds


@register
class FreeMatch(PoolPriorRounds, FixMatch):
    name = "freematch"

    @dataclass
    class Params:
        unlabelled_weight: float = 1.0
        # Of the running averages the threshold is read from: the papers' 0.999 suits a million steps; a
        # run here makes 700-2,500, at whose end 0.999's averages still hold 20-50% of their start at 1/K.
        momentum: float = 0.99
        alignment: bool = True  # align the weak view's probabilities to the pool's estimated mix
        prior_rounds: int = 4  # with alignment: the pool's mix is re-estimated at each round start
        ema_decay: float = 0.0  # > 0: an EMA of the weights is the prediction network

    def __init__(self, params, build_network, num_classes, input_shape):
        super().__init__(params, build_network, num_classes, input_shape)
        self.averages = ConfidenceAverages(num_classes, params.momentum)
        self.init_prior_rounds(params.alignment)

    def check_params(self, params) -> None:
        if not 0.0 < params.momentum < 1.0:
            raise ValueError(f"method.{self.name}.momentum must be in (0, 1), got {params.momentum}")

    def weak_probabilities(self, weak: torch.Tensor) -> torch.Tensor:
        """The weak view's probabilities, aligned to the pool's estimated mix where there is one."""
        return self.averages.probabilities(weak, self.pool_prior if self.params.alignment else None)

    def pseudo_targets(self, weak):
        confidence, targets = self.weak_probabilities(weak).max(dim=1)
        thresholds = self.averages.thresholds()
        mask = (confidence >= thresholds[targets]).float()
        return targets, mask, {"mask_rate": mask.mean(), **{f"threshold_{k}": t for k, t in enumerate(thresholds)}}
