"""Mean teacher (Tarvainen & Valpola 2017): a student and its exponential-moving-average teacher.

The teacher (an EMA of the student's weights, decay ``ema_decay``) predicts one
augmented view of each unlabelled scan; the student predicts a different view and is
pulled towards the teacher by a softmax mean squared error, weight ramped up with a
sigmoid.  Only the student receives gradients: the teacher's output is a fixed
target.  Calibration and scoring use the teacher.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pipeline.methods import register
from pipeline.methods.base import Method, StepBatch
from pipeline.methods.shared import ema_copy, ema_update, sigmoid_rampup, softmax_mse


@register
class MeanTeacher(Method):
    name = "mean_teacher"

    @dataclass
    class Params:
        ema_decay: float = 0.99
        consistency_weight: float = 30.0  # maximum weight of the softmax MSE
        rampup: float = 0.3  # fraction of training over which the weight ramps up
        view: str = "weak"  # augmentation of the student's and teacher's views: weak | strong

    def __init__(self, params, build_network, num_classes, input_shape):
        super().__init__(params, build_network, num_classes, input_shape)
        if not 0.0 <= params.ema_decay < 1.0:
            raise ValueError(f"method.mean_teacher.ema_decay must be in [0, 1), got {params.ema_decay}")
        if params.view not in ("weak", "strong"):
            raise ValueError(f"method.mean_teacher.view must be weak or strong, got '{params.view}'")
        self.teacher = ema_copy(self.network)

    def prediction_network(self):
        return self.teacher

    def consistency(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        """Softmax MSE pulling the student towards the teacher; the teacher's side is detached."""
        return softmax_mse(student_logits, teacher_logits.detach())

    def losses(self, batch: StepBatch):
        """Cross-entropy on labelled scans plus ramped student-teacher consistency.

        The student sees ``labelled`` and unlabelled view 1 in one pass; the teacher sees
        the same labelled images differently augmented and unlabelled view 2, so both
        passes normalise batches of the same make-up.
        """
        n_labelled, n_unlabelled = len(batch.labels), len(batch.unlabelled)
        view = batch.augment.strong if self.params.view == "strong" else batch.augment.weak
        student_in = [batch.augment.weak(batch.labelled)]
        if n_unlabelled:
            student_in.append(view(batch.unlabelled))
        student_logits = self.network(torch.cat(student_in))
        supervised = F.cross_entropy(student_logits[:n_labelled], batch.labels)
        terms = {"supervised": supervised.detach()}
        loss = supervised
        if n_unlabelled:
            teacher_in = torch.cat([batch.augment.weak(batch.labelled), view(batch.unlabelled)])
            self.teacher.train(self.network.training)
            with torch.no_grad():
                teacher_logits = self.teacher(teacher_in)[n_labelled:]
            unsupervised = self.consistency(student_logits[n_labelled:], teacher_logits)
            weight = self.params.consistency_weight * sigmoid_rampup(batch.progress, self.params.rampup)
            loss = loss + weight * unsupervised
            terms["unsupervised"] = unsupervised.detach()
            terms["weight"] = torch.tensor(weight)
        terms["loss"] = loss
        return terms

    def after_step(self):
        ema_update(self.teacher, self.network, self.params.ema_decay)
