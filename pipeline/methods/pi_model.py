"""Pi-model (Laine & Aila 2017): consistency between two stochastic passes.

Each unlabelled scan is augmented twice and passed through the network twice (with
dropout, from ``[network] dropout``); the mean squared difference between the two
softmax outputs is the unsupervised loss, its weight ramped up with a sigmoid.  Both
passes carry gradient, as in the paper.  Labelled scans get cross-entropy.  Labelled
and both unlabelled views go through one forward pass so they share batch-norm
statistics.  With ``ema_decay`` > 0 an exponential moving average of the weights (not
trained itself, unlike mean teacher's) predicts at calibration and scoring.  With
``entropy_weight`` > 0 the entropy of the unlabelled predictions is also minimised
(ramped like the consistency weight), as in "Pi-model + EntMin" of Oliver et al. 2018.
With ``alignment_weight`` > 0 the average unlabelled prediction is also held at the pool's
class prior, estimated round by round by maximum likelihood on calibrated posteriors, and only
where the network tells the classes apart on the calibration scans (``PoolPriorRounds``): the
pool's own mix, not the labelled scans', so entropy minimisation cannot drift towards one class
and a pool that is mostly healthy is not pushed towards balanced labels' mix.  With alignment on,
entropy minimisation waits for that prior: until one is estimated (and for the whole run where the
calibration scans never allow an estimate) nothing holds the mix, and on VesselMNIST3D the draw
that never got one drifted 0.09 AUROC below supervised (``benchmarks/real_variants.md``).
With ``warmup`` > 0 that fraction of training uses the labelled scans alone, and the ramp starts
where it ends: the two unlabelled passes cost several labelled steps, and while the network is
near chance their consistency term teaches little.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pipeline.methods import register
from pipeline.methods.base import Method, StepBatch
from pipeline.methods.shared import (
    PoolPriorRounds,
    WeightAveraged,
    sigmoid_rampup,
    softmax_mse,
)


@register
class PiModel(PoolPriorRounds, WeightAveraged, Method):
    name = "pi_model"

    @dataclass
    class Params:
        consistency_weight: float = 30.0  # maximum weight of the softmax MSE
        rampup: float = 0.3  # fraction of training over which the weight ramps up
        view: str = "weak"  # augmentation of the two unlabelled passes: weak | strong
        ema_decay: float = 0.0  # > 0: an EMA of the weights is the prediction network
        entropy_weight: float = 0.0  # > 0: also minimise the unlabelled predictions' entropy
        alignment_weight: float = 0.0  # > 0: hold the mean unlabelled prediction at the pool's prior
        prior_rounds: int = 4  # with alignment: the prior is re-estimated at the start of each round
        warmup: float = 0.0  # fraction of training on labelled scans alone; the ramp starts after it

    def __init__(self, params, build_network, num_classes, input_shape):
        super().__init__(params, build_network, num_classes, input_shape)
        if params.view not in ("weak", "strong"):
            raise ValueError(f"method.pi_model.view must be weak or strong, got '{params.view}'")
        if params.entropy_weight < 0:
            raise ValueError(f"method.pi_model.entropy_weight must be >= 0, got {params.entropy_weight}")
        if params.alignment_weight < 0:
            raise ValueError(f"method.pi_model.alignment_weight must be >= 0, got {params.alignment_weight}")
        if not 0 <= params.warmup < 1:
            raise ValueError(f"method.pi_model.warmup must be in [0, 1), got {params.warmup}")
        self.init_prior_rounds(params.alignment_weight > 0)
        self.init_weight_average()

    def losses(self, batch: StepBatch):
        """Cross-entropy on labelled scans plus ramped softmax MSE between two unlabelled passes.

        Returns
        -------
        dict
            ``loss`` (total), ``supervised``, ``unsupervised`` and ``weight`` (detached),
            ``entropy`` when ``entropy_weight`` > 0 (with alignment, once a pool prior is estimated),
            ``alignment`` once a pool prior is estimated.
        """
        n_labelled, n_unlabelled = len(batch.labels), len(batch.unlabelled)
        if batch.progress < self.params.warmup:
            n_unlabelled = 0
        view = batch.augment.strong if self.params.view == "strong" else batch.augment.weak
        parts = [batch.augment.weak(batch.labelled)]
        if n_unlabelled:
            parts += [view(batch.unlabelled), view(batch.unlabelled)]
        logits = self.network(torch.cat(parts))
        supervised = F.cross_entropy(logits[:n_labelled], batch.labels)
        terms = {"supervised": supervised.detach()}
        loss = supervised
        if n_unlabelled:
            first = logits[n_labelled:n_labelled + n_unlabelled]
            second = logits[n_labelled + n_unlabelled:]
            unsupervised = softmax_mse(first, second)
            ramp = sigmoid_rampup(batch.progress - self.params.warmup, self.params.rampup)
            weight = self.params.consistency_weight * ramp
            loss = loss + weight * unsupervised
            loss = loss + self.entropy_and_alignment(logits[n_labelled:], ramp, terms)
            terms["unsupervised"] = unsupervised.detach()
            terms["weight"] = torch.tensor(weight)
        terms["loss"] = loss
        return terms
