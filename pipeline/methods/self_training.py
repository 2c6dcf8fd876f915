"""Self-training: rounds of pseudo-labelling with calibrated, precision-targeted thresholds.

Round 0 trains on the labelled scans alone.  At the start of every later round the
current network predicts every unlabelled scan; probabilities are temperature-scaled
and each class's confidence threshold is chosen on the calibration set so that
accepted pseudo-labels reach ``target_precision`` (see ``pipeline.calibration``).
Accepted scans then train the network like labelled ones, seen through a stronger
augmentation than the clean view that labelled them (as in Noisy Student).  The round
in which each pseudo-label was first given is kept and written to the run folder.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from pipeline.calibration import fit_temperature, precision_thresholds, softmax
from pipeline.methods import register
from pipeline.methods.base import Method, StepBatch


@register
class SelfTraining(Method):
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
        self.register_buffer("pseudo_labels", torch.empty(0, dtype=torch.long), persistent=False)
        self.pseudo_round = np.empty(0, dtype=int)
        self.pseudo_confidence = np.empty(0)
        self.unlabelled_truth = np.empty(0, dtype=int)

    def start_round(self, round_index, context):
        n_unlabelled = len(context.data.unlabelled)
        if self.pseudo_labels.numel() != n_unlabelled:
            self.pseudo_labels = torch.full((n_unlabelled,), -1, dtype=torch.long)
            self.pseudo_round = np.full(n_unlabelled, -1)
            self.pseudo_confidence = np.zeros(n_unlabelled)
            self.unlabelled_truth = context.data.labels[context.data.unlabelled].numpy()
        if round_index == 0:
            return {"pseudo_labelled": 0.0}
        target = self.params.target_precision or context.calibrate.target_precision
        cal_logits, cal_labels = context.predict_subset("calibration")
        temperature = fit_temperature(cal_logits, cal_labels)
        thresholds, _, _ = precision_thresholds(
            softmax(cal_logits, temperature), cal_labels, target, context.calibrate.min_support
        )
        logits, _ = context.predict_subset("unlabelled")
        probs = softmax(logits, temperature)
        predicted, confidence = probs.argmax(1), probs.max(1)
        accepted = confidence >= thresholds[predicted]
        previous = self.pseudo_labels.numpy()
        changed = accepted & (previous != predicted)
        self.pseudo_round[changed] = round_index
        self.pseudo_round[~accepted] = -1
        new_labels = np.where(accepted, predicted, -1)
        self.pseudo_labels = torch.as_tensor(new_labels, dtype=torch.long)
        self.pseudo_confidence = np.where(accepted, confidence, 0.0)
        known = accepted & (self.unlabelled_truth >= 0)
        accuracy = float((predicted[known] == self.unlabelled_truth[known]).mean()) if known.any() else float("nan")
        return {
            "temperature": temperature,
            "pseudo_labelled": float(accepted.sum()),
            "pseudo_fraction": float(accepted.mean()),
            "pseudo_accuracy": accuracy,
            "min_threshold": float(thresholds.min()),
        }

    def unlabelled_pool(self):
        if self.pseudo_labels.numel() == 0:
            return torch.empty(0, dtype=torch.long)
        return torch.nonzero(self.pseudo_labels >= 0).flatten()

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
        if self.pseudo_labels.numel() == 0:
            return {}
        labels = self.pseudo_labels.numpy()
        names = np.array(list(classes) + [""], dtype=object)  # index -1 -> ""
        frame = pd.DataFrame({
            "scan_id": scan_ids,
            "pseudo_label": names[labels],
            "confidence": self.pseudo_confidence,
            "round": self.pseudo_round,
            "true_label": names[self.unlabelled_truth],
        })
        return {"pseudo_labels": frame[labels >= 0].reset_index(drop=True)}
