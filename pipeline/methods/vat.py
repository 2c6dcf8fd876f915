"""Virtual adversarial training (Miyato et al. 2018): consistency against the worst small change.

Each unlabelled scan is seen once (weakly augmented, with dropout); a perturbation of size
``epsilon`` in the direction that changes that prediction most, found by ``power_iterations``
rounds of the power method on the divergence's curvature, is added to it, and the KL divergence
from the clean prediction (a fixed target) to the perturbed one is the unsupervised loss, its
weight ramped up with a sigmoid. Unlike the Pi-model's second random view, the change is chosen
against the network, so the term smooths the decision function where it is least smooth, whatever
the augmentation does; Oliver et al. 2018 found it ahead of the Pi-model and mean teacher on SVHN
and CIFAR-10 at the same label counts.

Sizes are per voxel, relative to the unlabelled batch's intensity spread: ``epsilon`` is the
perturbation's root-mean-square over a scan's voxels as a fraction of the batch's standard
deviation, so that one default carries across input sizes and intensity schemes (the paper's
norms were per data set). The power method's probe is ``xi`` times that size: the paper's 1e-6
vanishes in bfloat16, whose inputs keep 8 bits of mantissa.

Entropy minimisation ("VAT + EntMin") and holding the mean unlabelled prediction at the pool's
estimated prior work as in the Pi-model (``PoolPriorRounds``); so do ``warmup`` and ``ema_decay``.
With ``view_weight`` > 0 each unlabelled scan is also seen in a second weak view and the Pi-model's
term (softmax MSE between the two views, both with gradient) is added at that weight: the two
consistencies smooth the prediction in different directions, the augmentation's and the network's
least smooth one. With ``mixup_alpha`` > 0 the labelled scans are mixed with each other and trained
on their mixed labels (``shared.mixup``), as supervised's option of that name does.
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
    mixup,
    sigmoid_rampup,
    softmax_mse,
)


def prediction_divergence(target_logits: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Mean KL(softmax(target) || softmax(logits)) over the batch; the target carries no gradient."""
    target = torch.log_softmax(target_logits.detach().float(), dim=1)
    return F.kl_div(torch.log_softmax(logits.float(), dim=1), target, log_target=True, reduction="batchmean")


def _unit(directions: torch.Tensor) -> torch.Tensor:
    """Each scan's direction scaled to root-mean-square 1 over its voxels."""
    flat = directions.flatten(1)
    rms = flat.float().pow(2).mean(dim=1).sqrt().clamp_min(1e-12)
    return directions / rms.view(-1, *([1] * (directions.dim() - 1))).to(directions)


@register
class VirtualAdversarial(PoolPriorRounds, WeightAveraged, Method):
    name = "vat"

    @dataclass
    class Params:
        consistency_weight: float = 1.0  # maximum weight of the KL term (the paper's alpha)
        epsilon: float = 0.2  # the perturbation's RMS per voxel, in units of the batch's intensity sd
        xi: float = 1.0  # the power method's probe, as a fraction of epsilon
        power_iterations: int = 1
        rampup: float = 0.3  # fraction of training over which the weight ramps up
        ema_decay: float = 0.0  # > 0: an EMA of the weights is the prediction network
        entropy_weight: float = 0.0  # > 0: also minimise the unlabelled predictions' entropy
        alignment_weight: float = 0.0  # > 0: hold the mean unlabelled prediction at the pool's prior
        prior_rounds: int = 4  # with alignment: the prior is re-estimated at the start of each round
        warmup: float = 0.0  # fraction of training on labelled scans alone; the ramp starts after it
        view_weight: float = 0.0  # > 0: also the Pi-model's softmax MSE between two weak views
        mixup_alpha: float = 0.0  # > 0: labelled scans mixed with each other, as supervised's option

    def __init__(self, params, build_network, num_classes, input_shape):
        super().__init__(params, build_network, num_classes, input_shape)
        for key in ("epsilon", "xi"):
            if not getattr(params, key) > 0:
                raise ValueError(f"method.vat.{key} must be > 0, got {getattr(params, key)}")
        if params.power_iterations < 1:
            raise ValueError(f"method.vat.power_iterations must be >= 1, got {params.power_iterations}")
        for key in ("entropy_weight", "alignment_weight", "view_weight", "mixup_alpha"):
            if getattr(params, key) < 0:
                raise ValueError(f"method.vat.{key} must be >= 0, got {getattr(params, key)}")
        if not 0 <= params.warmup < 1:
            raise ValueError(f"method.vat.warmup must be in [0, 1), got {params.warmup}")
        self.init_prior_rounds(params.alignment_weight > 0)
        self.init_weight_average()

    def adversarial_change(self, images: torch.Tensor, clean_logits: torch.Tensor) -> torch.Tensor:
        """The perturbation of ``images`` (detached) that most changes the network's prediction,
        to first order, of RMS ``epsilon`` times the batch's intensity sd per scan."""
        images = images.detach()
        size = self.params.epsilon * images.float().std().clamp_min(1e-6)
        direction = torch.randn_like(images)
        for _ in range(self.params.power_iterations):
            probe = (_unit(direction) * (self.params.xi * size)).requires_grad_()
            divergence = prediction_divergence(clean_logits, self.network(images + probe))
            direction = torch.autograd.grad(divergence, probe)[0]
        return (_unit(direction) * size).detach()

    def losses(self, batch: StepBatch):
        """Cross-entropy on labelled scans plus the ramped KL from each unlabelled scan's prediction
        to its prediction under the adversarial change; the same terms as the Pi-model's ``losses``
        returns (``unsupervised`` is the KL divergence here)."""
        n_labelled, n_unlabelled = len(batch.labels), len(batch.unlabelled)
        if batch.progress < self.params.warmup:
            n_unlabelled = 0
        views = 2 if self.params.view_weight > 0 else 1
        parts = [batch.augment.weak(batch.labelled)]
        targets = batch.labels
        if self.params.mixup_alpha > 0:
            one_hot = F.one_hot(batch.labels, self.num_classes).float()
            parts[0], targets, _ = mixup(parts[0], one_hot, self.params.mixup_alpha)
        if n_unlabelled:
            parts += [batch.augment.weak(batch.unlabelled) for _ in range(views)]
        logits = self.network(torch.cat(parts))
        supervised = F.cross_entropy(logits[:n_labelled].float(), targets)  # class indices or mixed probabilities
        terms = {"supervised": supervised.detach()}
        loss = supervised
        if n_unlabelled:
            clean = logits[n_labelled:n_labelled + n_unlabelled]
            change = self.adversarial_change(parts[1], clean)
            unsupervised = prediction_divergence(clean, self.network(parts[1].detach() + change))
            ramp = sigmoid_rampup(batch.progress - self.params.warmup, self.params.rampup)
            weight = self.params.consistency_weight * ramp
            loss = loss + weight * unsupervised
            loss = loss + self.entropy_and_alignment(clean, ramp, terms)
            if views == 2:
                agreement = softmax_mse(clean, logits[n_labelled + n_unlabelled:])
                loss = loss + self.params.view_weight * ramp * agreement
                terms["views"] = agreement.detach()
            terms["unsupervised"] = unsupervised.detach()
            terms["weight"] = torch.tensor(weight)
        terms["loss"] = loss
        return terms
