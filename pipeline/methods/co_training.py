"""Co-training (Blum & Mitchell 1998): two networks on two views teach each other.

Each network sees its own view of every scan.  For images the default views are the
left and right halves (the other half zeroed, after augmentation); ``views = "augment"``
instead gives both networks the whole scan through two augmentation families (weak
geometry for the first, strong geometry + noise + cutout for the second), which suits
volumes whose halves are mirror images.  Training runs in rounds: round 0 uses the
labelled scans alone; at the start of each later round every network's calibrated,
confident predictions on the unlabelled scans (see ``shared.calibrated_proposal``)
become pseudo-labels for the OTHER network.  Calibration and scoring use the ensemble
(mean probability of the two networks, each on its view).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.methods import register
from pipeline.methods.base import Method, StepBatch
from pipeline.methods.shared import (
    Ensemble,
    HalfView,
    PseudoLabels,
    calibrated_proposal,
    subset_predictor,
)

VIEWS = ("halves", "augment")


@register
class CoTraining(Method):
    name = "co_training"

    @dataclass
    class Params:
        rounds: int = 5
        views: str = "halves"  # halves | augment
        target_precision: float = 0.0  # 0 = use calibrate.target_precision
        unlabelled_weight: float = 1.0
        pseudo_view: str = "weak"  # augmentation of pseudo-labelled scans with views = "halves": weak | strong

    def __init__(self, params, build_network, num_classes, input_shape):
        super().__init__(params, build_network, num_classes, input_shape)
        if params.rounds < 1:
            raise ValueError(f"method.co_training.rounds must be >= 1, got {params.rounds}")
        if params.views not in VIEWS:
            raise ValueError(f"method.co_training.views must be one of {', '.join(VIEWS)}, got '{params.views}'")
        if params.pseudo_view not in ("weak", "strong"):
            raise ValueError(f"method.co_training.pseudo_view must be weak or strong, got '{params.pseudo_view}'")
        self.rounds = params.rounds
        self.partner = build_network()
        views = [HalfView(0), HalfView(1)] if params.views == "halves" else [nn.Identity(), nn.Identity()]
        self.ensemble = Ensemble([self.network, self.partner], views)
        self.pseudo = [PseudoLabels(), PseudoLabels()]  # pseudo[i]: labels FOR network i, given by the other

    def prediction_network(self):
        return self.ensemble

    def view(self, index: int, images: torch.Tensor, augment, pseudo: bool = False) -> torch.Tensor:
        """Network ``index``'s augmented training view of ``images``."""
        if self.params.views == "augment":
            return augment.weak(images) if index == 0 else augment.strong(images)
        family = augment.strong if pseudo and self.params.pseudo_view == "strong" else augment.weak
        return self.ensemble.views[index](family(images))

    def start_round(self, round_index, context):
        data = context.data
        truth = data.labels[data.unlabelled].numpy()
        for book in self.pseudo:
            book.ensure(len(data.unlabelled), truth)
        if round_index == 0:
            return {}
        info = {}
        for teacher in (0, 1):
            def network(images, i=teacher):
                return self.ensemble.member_logits(i, images)

            predict = subset_predictor(network, self.ensemble.members[teacher], data)
            proposal = calibrated_proposal(predict, context.calibrate, self.params.target_precision,
                                           classes=data.classes)
            learner = 1 - teacher
            for key, value in self.pseudo[learner].update(proposal, round_index).items():
                info[f"{key}_{learner}"] = value
        return info

    def unlabelled_pool(self):
        if self.pseudo[0].labels.numel() == 0:
            return torch.empty(0, dtype=torch.long)
        return torch.nonzero((self.pseudo[0].labels >= 0) | (self.pseudo[1].labels >= 0)).flatten()

    def losses(self, batch: StepBatch):
        """Each network: cross-entropy on labelled scans and on the pseudo-labels the other gave it.

        Returns
        -------
        dict
            ``loss`` (sum over both networks), ``supervised`` and ``unsupervised`` (means
            over the two networks, detached).
        """
        n_labelled = len(batch.labels)
        loss, supervised, unsupervised = 0.0, [], []
        for i, network in enumerate(self.ensemble.members):
            parts = [self.view(i, batch.labelled, batch.augment)]
            targets = None
            if len(batch.unlabelled_index):
                targets = self.pseudo[i].labels[batch.unlabelled_index]
                keep = torch.nonzero(targets >= 0).flatten()
                targets = targets[keep].to(batch.labels.device) if len(keep) else None
                if targets is not None:
                    parts.append(self.view(i, batch.unlabelled[keep.to(batch.unlabelled.device)], batch.augment,
                                           pseudo=True))
            logits = network(torch.cat(parts))  # one pass: shared batch-norm statistics
            term = F.cross_entropy(logits[:n_labelled], batch.labels)
            supervised.append(term.detach())
            loss = loss + term
            if targets is not None:
                term = F.cross_entropy(logits[n_labelled:], targets)
                unsupervised.append(term.detach())
                loss = loss + self.params.unlabelled_weight * term
        terms = {"loss": loss, "supervised": torch.stack(supervised).mean()}
        if unsupervised:
            terms["unsupervised"] = torch.stack(unsupervised).mean()
        return terms

    def artifacts(self, scan_ids, classes):
        if self.pseudo[0].labels.numel() == 0:
            return {}
        frames = [book.table(scan_ids, classes).assign(for_network=i) for i, book in enumerate(self.pseudo)]
        return {"pseudo_labels": pd.concat(frames, ignore_index=True)}
