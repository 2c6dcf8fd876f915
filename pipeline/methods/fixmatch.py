"""FixMatch (Sohn et al. 2020): pseudo-labels from a weak view train the strong view.

For each unlabelled scan the network's prediction on a weakly augmented view gives a
hard pseudo-label (argmax, no gradient), kept only when its probability reaches
``threshold``; cross-entropy then trains the prediction on a strongly augmented view
of the same scan.  Labelled weak, unlabelled weak and unlabelled strong views go
through ONE forward pass so all three share batch-norm statistics (a separate pass for
the weak view collapsed on MNIST).  The ratio of unlabelled to labelled scans is set
by ``train.unlabelled_batch_size``.  Optionally an EMA of the weights predicts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pipeline.methods import register
from pipeline.methods.base import Method, StepBatch
from pipeline.methods.shared import WeightAveraged, confidence_mask


@register
class FixMatch(WeightAveraged, Method):
    name = "fixmatch"

    @dataclass
    class Params:
        threshold: float = 0.95
        unlabelled_weight: float = 1.0
        ema_decay: float = 0.0  # > 0: an EMA of the weights is the prediction network

    def __init__(self, params, build_network, num_classes, input_shape):
        super().__init__(params, build_network, num_classes, input_shape)
        if not 0.0 <= params.threshold <= 1.0:
            raise ValueError(f"method.fixmatch.threshold must be in [0, 1], got {params.threshold}")
        self.init_weight_average()

    def losses(self, batch: StepBatch):
        """Supervised cross-entropy plus masked cross-entropy of strong views on weak-view pseudo-labels.

        Returns
        -------
        dict
            ``loss``, ``supervised``, ``unsupervised`` (mean over all unlabelled scans,
            masked ones counting 0) and ``mask_rate`` (fraction passing the threshold).
        """
        n_labelled, n_unlabelled = len(batch.labels), len(batch.unlabelled)
        parts = [batch.augment.weak(batch.labelled)]
        if n_unlabelled:
            parts += [batch.augment.weak(batch.unlabelled), batch.augment.strong(batch.unlabelled)]
        logits = self.network(torch.cat(parts))
        supervised = F.cross_entropy(logits[:n_labelled], batch.labels)
        terms = {"supervised": supervised.detach()}
        loss = supervised
        if n_unlabelled:
            weak = logits[n_labelled:n_labelled + n_unlabelled]
            strong = logits[n_labelled + n_unlabelled:]
            targets, mask, _ = confidence_mask(weak, self.params.threshold)
            unsupervised = (F.cross_entropy(strong, targets, reduction="none") * mask).mean()
            loss = loss + self.params.unlabelled_weight * unsupervised
            terms["unsupervised"] = unsupervised.detach()
            terms["mask_rate"] = mask.mean()
        terms["loss"] = loss
        return terms
