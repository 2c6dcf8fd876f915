"""Self-training: rounds of pseudo-labelling with calibrated, precision-targeted thresholds.

Round 0 trains on the labelled scans alone.  At the start of every later round the
current network predicts every unlabelled scan; probabilities are temperature-scaled
and each class's confidence threshold is chosen on the calibration set so that
accepted pseudo-labels reach ``target_precision`` (see ``pipeline.methods.shared``).
Accepted scans then train the network like labelled ones, seen through a stronger
augmentation than the clean view that labelled them (as in Noisy Student).  The round
in which each pseudo-label was first given is kept and written to the run folder.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pipeline.methods import register
from pipeline.methods.base import Method, StepBatch
from pipeline.methods.shared import CalibratedPseudoLabelRounds, PseudoLabels


@register
class SelfTraining(CalibratedPseudoLabelRounds, Method):
    name = "self_training"

    @dataclass
    class Params:
        rounds: int = 5
        target_precision: float = 0.0  # 0 = use calibrate.target_precision
        unlabelled_weight: float = 1.0
        pseudo_view: str = "strong"  # view of pseudo-labelled scans: weak | strong

    def __init__(self, params, build_network, num_classes, input_shape):
        super().__init__(params, build_network, num_classes, input_shape)
        if params.rounds < 1:
            raise ValueError(f"method.rounds must be >= 1, got {params.rounds}")
        if params.pseudo_view not in ("weak", "strong"):
            raise ValueError(f"method.pseudo_view must be weak or strong, got '{params.pseudo_view}'")
        self.rounds = params.rounds
        self.pseudo = PseudoLabels()

    @property
    def pseudo_labels(self) -> torch.Tensor:
        """(N_unlabelled,) pseudo-label per unlabelled scan, -1 where none."""
        return self.pseudo.labels

    @property
    def pseudo_round(self):
        return self.pseudo.round

    def losses(self, batch: StepBatch):
        n_labelled = len(batch.labels)
        views = [batch.augment.weak(batch.labelled)]
        if len(batch.unlabelled_index):
            view = batch.augment.strong if self.params.pseudo_view == "strong" else batch.augment.weak
            views.append(view(batch.unlabelled))
        # One forward pass, so batch-norm statistics cover labelled and pseudo-labelled scans alike.
        logits = self.network(torch.cat(views))
        supervised = F.cross_entropy(logits[:n_labelled], batch.labels)
        terms = {"supervised": supervised.detach()}
        loss = supervised
        if len(batch.unlabelled_index):
            targets = self.pseudo_labels[batch.unlabelled_index].to(batch.labels.device)
            unsupervised = F.cross_entropy(logits[n_labelled:], targets)
            loss = loss + self.params.unlabelled_weight * unsupervised
            terms["unsupervised"] = unsupervised.detach()
        terms["loss"] = loss
        return terms

    def artifacts(self, scan_ids, classes):
        if self.pseudo.labels.numel() == 0:
            return {}
        return {"pseudo_labels": self.pseudo.table(scan_ids, classes)}
