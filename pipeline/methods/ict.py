"""Interpolation consistency training (Verma et al. 2019): predictions that mix as the scans do.

Two unlabelled scans mixed as ``lam * a + (1 - lam) * b`` (``lam`` drawn from Beta(``alpha``,
``alpha``) each step, pairs by a random permutation of the batch) should be predicted as the same
mix of the two scans' predictions. The targets come from an exponential moving average of the
weights (``ema_decay``) seeing the unmixed weak views, as in mean teacher, and carry no gradient;
the student sees the mixtures, and a mean squared error of probabilities with a sigmoid-ramped weight pulls it
to the mixed targets. Where the Pi-model asks two views of one scan to agree, this asks the decision
function to be linear between scans, so it moves the boundary into the low-density gaps between
them; the paper reports it ahead of VAT and mean teacher on CIFAR-10 and SVHN at the same label
counts, for one forward pass more than supervised training (the teacher's, without gradient).
Calibration and scoring use the averaged weights. With ``alignment_weight`` > 0 the mean prediction
of the mixed scans is also held at the unlabelled pool's estimated class prior (``PoolPriorRounds``, as
in the Pi-model): mixing is linear, so the mixtures' mean target is the pool's mean prediction.
Not the plan's default: on PneumoniaMNIST it read 0.03 below supervised, the network reading blended
radiographs as hazy, abnormal ones (``benchmarks/real_variants.md``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pipeline.methods import register
from pipeline.methods.base import Method, StepBatch
from pipeline.methods.shared import PoolPriorRounds, WeightAveraged, prior_alignment, sigmoid_rampup


@register
class InterpolationConsistency(PoolPriorRounds, WeightAveraged, Method):
    name = "ict"

    @dataclass
    class Params:
        consistency_weight: float = 30.0  # maximum weight of the softmax MSE
        alpha: float = 1.0  # mixing coefficients are drawn from Beta(alpha, alpha)
        rampup: float = 0.3  # fraction of training over which the weight ramps up
        ema_decay: float = 0.99  # the averaged weights give the targets and the predictions
        alignment_weight: float = 0.0  # > 0: hold the mixtures' mean prediction at the pool's prior
        prior_rounds: int = 4  # with alignment: the prior is re-estimated at the start of each round

    def __init__(self, params, build_network, num_classes, input_shape):
        super().__init__(params, build_network, num_classes, input_shape)
        if not params.alpha > 0:
            raise ValueError(f"method.ict.alpha must be > 0, got {params.alpha}")
        for key in ("consistency_weight", "alignment_weight"):
            if getattr(params, key) < 0:
                raise ValueError(f"method.ict.{key} must be >= 0, got {getattr(params, key)}")
        if not params.ema_decay > 0:
            raise ValueError(f"method.ict.ema_decay must be in (0, 1): the averaged weights give the targets, "
                             f"got {params.ema_decay}")
        self.init_prior_rounds(params.alignment_weight > 0)
        self.init_weight_average()

    def losses(self, batch: StepBatch):
        """Cross-entropy on labelled scans plus the ramped mean squared error between the student's
        probabilities for mixed unlabelled scans and the same mixes of the teacher's probabilities.

        Returns
        -------
        dict
            ``loss`` (total), ``supervised``, ``unsupervised``, ``weight``, ``mix`` (the step's ``lam``)
            and, once a pool prior is estimated, ``alignment``; all but ``loss`` detached.
        """
        n_labelled, n_unlabelled = len(batch.labels), len(batch.unlabelled)
        parts = [batch.augment.weak(batch.labelled)]
        if n_unlabelled:
            unlabelled = batch.augment.weak(batch.unlabelled)
            self.ema.train(self.network.training)
            with torch.no_grad():
                targets = torch.softmax(self.ema(unlabelled).float(), dim=1)
            lam = float(torch.distributions.Beta(self.params.alpha, self.params.alpha).sample())
            pairs = torch.randperm(n_unlabelled, device=unlabelled.device)
            parts.append(lam * unlabelled + (1 - lam) * unlabelled[pairs])
            mixed_targets = lam * targets + (1 - lam) * targets[pairs]
        logits = self.network(torch.cat(parts))
        supervised = F.cross_entropy(logits[:n_labelled], batch.labels)
        terms = {"supervised": supervised.detach()}
        loss = supervised
        if n_unlabelled:
            unsupervised = torch.mean((torch.softmax(logits[n_labelled:].float(), dim=1) - mixed_targets) ** 2)
            ramp = sigmoid_rampup(batch.progress, self.params.rampup)
            weight = self.params.consistency_weight * ramp
            loss = loss + weight * unsupervised
            if self.params.alignment_weight > 0 and self.pool_prior is not None:
                alignment = prior_alignment(logits[n_labelled:], self.pool_prior)
                loss = loss + self.params.alignment_weight * ramp * alignment
                terms["alignment"] = alignment.detach()
            terms["unsupervised"] = unsupervised.detach()
            terms["weight"] = torch.tensor(weight)
            terms["mix"] = torch.tensor(lam)
        terms["loss"] = loss
        return terms
