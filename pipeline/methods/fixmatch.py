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
        self.check_params(params)
        self.init_weight_average()

    def check_params(self, params) -> None:
        """Raise ValueError naming the first parameter out of range."""
        if not 0.0 <= params.threshold <= 1.0:
            raise ValueError(f"method.fixmatch.threshold must be in [0, 1], got {params.threshold}")

    def losses(self, batch: StepBatch):
        """Supervised cross-entropy plus masked cross-entropy of strong views on weak-view pseudo-labels.

        Returns
        -------
        dict
            ``loss``, ``supervised``, ``unsupervised`` (mean over all unlabelled scans, weighted
            by :meth:`pseudo_targets`, masked ones counting 0) and what it logs (``mask_rate``: the
            fraction passing the threshold).
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
            targets, weights, logged = self.pseudo_targets(weak)
            unsupervised = (F.cross_entropy(strong, targets, reduction="none") * weights).mean()
            loss = loss + self.params.unlabelled_weight * unsupervised
            terms["unsupervised"] = unsupervised.detach()
            terms.update(logged)
        terms["loss"] = loss
        return terms

    def pseudo_targets(self, weak: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """(hard pseudo-labels, each one's weight in the unlabelled loss, numbers to log) from the weak
        view's logits: here weight 1 where the top probability reaches ``threshold``, else 0. FixMatch's
        successors (``freematch``, ``softmatch``) choose the weights otherwise."""
        targets, mask, _ = confidence_mask(weak, self.params.threshold)
        return targets, mask, {"mask_rate": mask.mean()}
