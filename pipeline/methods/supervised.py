"""Supervised baseline: cross-entropy on the labelled scans only (weakly augmented)."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

from pipeline.methods import register
from pipeline.methods.base import Method, StepBatch


@register
class Supervised(Method):
    name = "supervised"

    @dataclass
    class Params:
        augment: bool = True

    def losses(self, batch: StepBatch):
        images = batch.augment.weak(batch.labelled) if self.params.augment else batch.labelled
        loss = F.cross_entropy(self.network(images), batch.labels)
        return {"loss": loss, "supervised": loss.detach()}
