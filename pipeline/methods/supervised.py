"""Supervised baseline: cross-entropy on the labelled scans only (weakly augmented).

With ``mixup_alpha`` > 0 the labelled scans are mixed with each other as MixMatch mixes its batch
(``shared.mixup``: Beta(alpha, alpha), the own scan weighing at least half) and trained on their
mixed labels: the regulariser MixMatch carries, without its unlabelled scans, so that a panel can
tell what of MixMatch's gain is the mixing and what the pool.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pipeline.methods import register
from pipeline.methods.base import Method, StepBatch
from pipeline.methods.shared import mixup


@register
class Supervised(Method):
    name = "supervised"

    @dataclass
    class Params:
        augment: bool = True
        mixup_alpha: float = 0.0  # > 0: labelled scans mixed with each other, Beta(alpha, alpha)

    def __init__(self, params, build_network, num_classes, input_shape):
        super().__init__(params, build_network, num_classes, input_shape)
        if params.mixup_alpha < 0:
            raise ValueError(f"method.supervised.mixup_alpha must be >= 0, got {params.mixup_alpha}")

    def losses(self, batch: StepBatch):
        images = batch.augment.weak(batch.labelled) if self.params.augment else batch.labelled
        targets, terms = batch.labels, {}
        if self.params.mixup_alpha > 0:
            one_hot = F.one_hot(batch.labels, self.num_classes).float()
            images, targets, lam = mixup(images, one_hot, self.params.mixup_alpha)
            terms["mix"] = torch.tensor(lam)
        loss = F.cross_entropy(self.network(images).float(), targets)  # class indices or mixed probabilities
        return {"loss": loss, "supervised": loss.detach(), **terms}
