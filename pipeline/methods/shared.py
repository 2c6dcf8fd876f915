"""Pieces used by more than one method, written once.

Ramp-up of unsupervised weights, EMA teachers and weight averages, confidence masks, mixup, a two-network
ensemble, image views, and calibrated pseudo-labelling with its bookkeeping.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from pipeline.calibration import (
    estimate_pool_prior,
    fit_temperature,
    precision_thresholds,
    softmax,
    vouched_precision_ceiling,
)

log = logging.getLogger(__name__)


def sigmoid_rampup(progress: float, length: float) -> float:
    """Sigmoid-shaped ramp from 0 to 1 (Laine & Aila 2017): ``exp(-5 (1 - t)^2)``.

    Parameters
    ----------
    progress : float
        Fraction of training done, in [0, 1].
    length : float
        Fraction of training over which the ramp rises; 0 means no ramp (always 1).

    Returns
    -------
    float
        The weight factor, in (0, 1].
    """
    if length <= 0:
        return 1.0
    t = min(max(progress / length, 0.0), 1.0)
    return float(math.exp(-5.0 * (1.0 - t) ** 2))


def ema_copy(network: nn.Module) -> nn.Module:
    """A frozen copy of ``network`` to serve as an EMA teacher (no gradients)."""
    teacher = copy.deepcopy(network)
    teacher.requires_grad_(False)
    return teacher


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, decay: float) -> None:
    """``teacher <- decay * teacher + (1 - decay) * student``; buffers (batch norm) are copied.

    Parameters
    ----------
    teacher, student : nn.Module
        Networks of identical structure.
    decay : float
        EMA decay in [0, 1); about 0.99 suits runs of a few thousand steps.
    """
    for t, s in zip(teacher.parameters(), student.parameters()):
        t.lerp_(s.detach(), 1.0 - decay)
    for t, s in zip(teacher.buffers(), student.buffers()):
        t.copy_(s)


class WeightAveraged:
    """Mixin for a Method whose ``params.ema_decay`` > 0 makes an EMA of ``self.network``'s
    weights (never trained itself) the prediction network, updated after every step.

    List it before ``Method`` and call ``init_weight_average()`` at the end of ``__init__``.
    """

    def init_weight_average(self) -> None:
        decay = self.params.ema_decay
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"method.{self.name}.ema_decay must be in [0, 1), got {decay}")
        self.ema = ema_copy(self.network) if decay > 0 else None

    def prediction_network(self) -> nn.Module:
        return self.ema if self.ema is not None else self.network

    def after_step(self) -> None:
        if self.ema is not None:
            ema_update(self.ema, self.network, self.params.ema_decay)


def confidence_mask(logits: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hard pseudo-labels from logits and which of them are confident enough.

    Parameters
    ----------
    logits : (N, K) tensor
        Detached here; pseudo-labels never carry gradient.
    threshold : float
        Minimum softmax probability of the predicted class.

    Returns
    -------
    labels : (N,) long tensor
        Argmax classes.
    mask : (N,) float tensor
        1 where the maximum probability is at least ``threshold``, else 0.
    confidence : (N,) float tensor
        The maximum probabilities.
    """
    probs = torch.softmax(logits.detach().float(), dim=1)
    confidence, labels = probs.max(dim=1)
    return labels, (confidence >= threshold).float(), confidence


def softmax_mse(student_logits: torch.Tensor, target_logits: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of the two softmax outputs (averaged over samples and classes)."""
    return torch.mean((torch.softmax(student_logits, 1) - torch.softmax(target_logits, 1)) ** 2)


def mixup(inputs: torch.Tensor, targets: torch.Tensor, alpha: float) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Each scan mixed with a shuffled copy of the batch (Zhang et al. 2018), its target alike.

    ``lam`` is drawn from Beta(``alpha``, ``alpha``) and kept at or above one half (MixMatch's
    choice), so every mixture stays nearer its own scan than its partner.

    Returns
    -------
    tuple
        The mixed inputs, the mixed targets (rows of class probabilities) and ``lam``.
    """
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    lam = max(lam, 1.0 - lam)
    pairs = torch.randperm(len(inputs), device=inputs.device)
    return lam * inputs + (1 - lam) * inputs[pairs], lam * targets + (1 - lam) * targets[pairs], lam


def mean_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean Shannon entropy (nats) of the softmax predictions; minimising it pushes decision
    boundaries away from dense unlabelled data (Grandvalet & Bengio 2005)."""
    log_probs = torch.log_softmax(logits.float(), dim=1)
    return -(log_probs.exp() * log_probs).sum(dim=1).mean()


def prior_alignment(logits: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
    """KL(prior || mean softmax): how far the batch's average prediction is from a class prior.

    Carries gradient to the logits; zero when the predictions average to ``prior``.
    """
    mean = torch.softmax(logits.float(), dim=1).mean(dim=0).clamp_min(1e-8)
    prior = prior.to(mean)
    return torch.sum(prior * (torch.log(prior.clamp_min(1e-8)) - torch.log(mean)))


class PoolPriorRounds:
    """Mixin: at the start of each round after the first, estimate the unlabelled pool's class
    prior from the prediction network's logits on the calibration scans and the pool, by maximum
    likelihood on bias-corrected calibrated posteriors (``pipeline.calibration.estimate_pool_prior``).

    The pool's mix may differ from the labelled one (a screening pool is mostly healthy while
    labels are often balanced); a method that holds its unlabelled predictions at this estimate
    neither forces the labelled mix onto the pool nor lets entropy minimisation drift to one
    class. ``self.pool_prior`` is None until the first estimate; a round that allows none (the model
    does not tell the classes apart on the calibration scans robustly, or EM drove a class to the
    floor) keeps the last one. Call ``init_prior_rounds`` in ``__init__``.
    """

    pool_prior: torch.Tensor | None = None

    def init_prior_rounds(self, enabled: bool) -> None:
        """Where ``enabled`` (the method's alignment is on), train in ``params.prior_rounds`` rounds (at
        least 2: the first has no estimate) and estimate at each start; otherwise in one, estimating nothing."""
        if self.params.prior_rounds < 2:
            raise ValueError(f"method.{self.name}.prior_rounds must be >= 2, got {self.params.prior_rounds}")
        self.rounds = self.params.prior_rounds if enabled else 1

    def entropy_and_alignment(self, logits: torch.Tensor, ramp: float, terms: dict) -> torch.Tensor:
        """The ramped entropy (``params.entropy_weight``) and prior-alignment (``params.alignment_weight``)
        terms on unlabelled ``logits``, added to ``terms`` detached; their weighted sum (0 where neither
        acts). With alignment on, entropy waits for a pool prior: until one is estimated nothing holds
        the class mix, and entropy alone drifts to one class."""
        total = logits.new_zeros(())
        aligned = self.params.alignment_weight == 0 or self.pool_prior is not None
        if self.params.entropy_weight > 0 and aligned:
            entropy = mean_entropy(logits)
            total = total + self.params.entropy_weight * ramp * entropy
            terms["entropy"] = entropy.detach()
        if self.params.alignment_weight > 0 and self.pool_prior is not None:
            alignment = prior_alignment(logits, self.pool_prior)
            total = total + self.params.alignment_weight * ramp * alignment
            terms["alignment"] = alignment.detach()
        return total

    @property
    def estimates_prior(self) -> bool:
        return self.rounds > 1  # init_prior_rounds gives an aligning method at least 2 rounds

    def start_round(self, round_index, context):
        if not self.estimates_prior:
            return {}
        unknown = {f"pool_prior_{k}": float("nan") for k in range(self.num_classes)}
        if round_index == 0:
            self.pool_prior = None
            return unknown
        cal_logits, cal_labels = context.predict_subset("calibration")
        pool_logits, _ = context.predict_subset("unlabelled")
        if not len(cal_labels) or not len(pool_logits):
            return unknown
        prior = estimate_pool_prior(cal_logits, cal_labels, pool_logits)
        if prior is None:
            return unknown
        self.pool_prior = torch.as_tensor(prior, dtype=torch.float32)
        return {f"pool_prior_{k}": float(p) for k, p in enumerate(prior)}


class HalfView(nn.Module):
    """Keep one half of the image along its last spatial axis; zero the other half.

    Parameters
    ----------
    side : int
        0 keeps the first (left) half, 1 the second (right) half.
    """

    def __init__(self, side: int):
        super().__init__()
        if side not in (0, 1):
            raise ValueError(f"side must be 0 or 1, got {side}")
        self.side = side

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        width = images.shape[-1]
        middle = width // 2
        keep = torch.zeros(width, dtype=images.dtype, device=images.device)
        if self.side == 0:
            keep[:middle] = 1
        else:
            keep[middle:] = 1
        return images * keep


class Ensemble(nn.Module):
    """Average of several networks' probabilities, each seeing its own (fixed) view.

    ``forward`` returns the log of the mean probability, so its output reads as logits
    (argmax, softmax and temperature scaling behave as for a single network).

    Parameters
    ----------
    members : sequence of nn.Module
        Classifiers returning logits.
    views : sequence of nn.Module, optional
        A deterministic input transform per member (``nn.Identity`` when omitted).
    """

    def __init__(self, members: Sequence[nn.Module], views: Sequence[nn.Module] | None = None):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.views = nn.ModuleList(views if views is not None else [nn.Identity() for _ in members])
        if len(self.views) != len(self.members):
            raise ValueError("Ensemble needs one view per member")

    def member_logits(self, index: int, images: torch.Tensor) -> torch.Tensor:
        return self.members[index](self.views[index](images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        probs = torch.stack([torch.softmax(self.member_logits(i, images).float(), 1)
                             for i in range(len(self.members))]).mean(0)
        return torch.log(probs.clamp_min(1e-12))


def subset_predictor(network: Callable[[torch.Tensor], torch.Tensor], modules: nn.Module, data,
                     batch_size: int = 1024) -> Callable[[str], tuple[np.ndarray, np.ndarray]]:
    """A ``subset -> (logits, labels)`` function (as ``RoundContext.predict_subset``) for any network.

    Parameters
    ----------
    network : callable
        Maps a batch of images to logits (may include a view).
    modules : nn.Module
        The module whose train/eval mode to switch while predicting; its device is used.
    data : TrainingData
        Images, labels and subset indices.
    """

    @torch.no_grad()
    def predict(subset: str) -> tuple[np.ndarray, np.ndarray]:
        index = getattr(data, subset)
        images = data.images[index]
        device = next(modules.parameters()).device
        was_training = modules.training
        modules.eval()
        out = [network(images[i:i + batch_size].to(device)).float().cpu() for i in range(0, len(images), batch_size)]
        modules.train(was_training)
        logits = torch.cat(out).numpy() if out else np.zeros((0, 0), dtype=np.float32)
        return logits, data.labels[index].numpy()

    return predict


@dataclass
class Proposal:
    """Calibrated predictions on every unlabelled scan and which pass the thresholds."""

    predicted: np.ndarray  # (N,) class index
    confidence: np.ndarray  # (N,) temperature-scaled maximum probability
    accepted: np.ndarray  # (N,) bool
    truth: np.ndarray  # (N,) true class where known, else -1 (reporting only)
    temperature: float
    thresholds: np.ndarray  # (K,)
    mix: np.ndarray | None = None  # (K,) the pool's estimated class mix the thresholds were chosen for
    ceiling: np.ndarray | None = None  # (K,) the most precision the calibration scans can vouch for, by class

    @property
    def mix_estimated(self) -> bool:
        """Whether the thresholds were chosen for the pool's estimated mix (else for the calibration
        scans', or, where the mix could not be estimated, none: nothing is accepted)."""
        return self.mix is not None


def calibrated_proposal(predict_subset: Callable[[str], tuple[np.ndarray, np.ndarray]], calibrate,
                        target_precision: float = 0.0, pool_mix: bool = True,
                        precision_confidence: float | None = None,
                        classes: Sequence[str] = ()) -> Proposal:
    """Pseudo-label candidates with per-class thresholds chosen on the calibration set.

    Probabilities are temperature-scaled (temperature fitted on the calibration set) and
    each class's confidence threshold is the lowest at which calibration predictions of
    that class reach the target precision (see ``pipeline.calibration``).

    Parameters
    ----------
    predict_subset : callable
        ``subset name -> (logits, labels)``, e.g. ``RoundContext.predict_subset``.
    calibrate : CalibrateConfig
        Supplies ``target_precision`` (unless overridden) and ``min_support``.
    target_precision : float
        Overrides ``calibrate.target_precision`` when > 0.
    pool_mix : bool
        Reach the target precision under the pool's class mix rather than the calibration scans':
        the pool's prior as ``estimate_pool_prior`` gives it. Where the model allows no estimate,
        nothing is accepted that round: no mix is then known under which a call would reach the
        target, and the one at hand, the pool's mean calibrated posterior, is a single EM step from
        the calibration mix that a model unable to tell the classes apart barely leaves (0.40-0.61
        aneurysm for a VesselMNIST3D pool of 0.09, whose aneurysm calls were then 25% right;
        ``benchmarks/real_variants.md``). ``rounds.csv`` says which rounds had an estimate
        (``pseudo_mix_estimated``).
    precision_confidence : float, optional
        Hold the lower bound of each class's precision at this confidence to the target
        (``precision_thresholds``); 0 for the point estimate; ``calibrate.precision_confidence``
        when not given. A class whose calibration scans cannot vouch for the target however good
        the model (``vouched_precision_ceiling``) is never called, and a warning names it
        (``classes``, else its index) and the ceiling.
    """
    target = target_precision or calibrate.target_precision
    if precision_confidence is None:
        precision_confidence = calibrate.precision_confidence
    precision_confidence = precision_confidence or None  # 0: the point estimate
    cal_logits, cal_labels = predict_subset("calibration")
    temperature = fit_temperature(cal_logits, cal_labels)
    logits, truth = predict_subset("unlabelled")
    probs = softmax(logits, temperature)
    predicted, confidence = probs.argmax(1), probs.max(1)
    counts = np.bincount(cal_labels, minlength=probs.shape[1])
    prior = weights = None
    if pool_mix and len(logits):
        prior = estimate_pool_prior(cal_logits, cal_labels, logits)
        if prior is None:
            thresholds = np.full(probs.shape[1], np.inf)
            return Proposal(predicted, confidence, np.zeros(len(probs), bool), truth, temperature, thresholds)
        weights = np.where(counts > 0, prior / np.maximum(counts / counts.sum(), 1e-12), 0.0)
    thresholds, _, _ = precision_thresholds(softmax(cal_logits, temperature), cal_labels, target,
                                            calibrate.min_support, weights, precision_confidence)
    accepted = confidence >= thresholds[predicted]
    ceiling = None
    if precision_confidence is not None:
        ceiling = vouched_precision_ceiling(cal_labels, probs.shape[1], precision_confidence, weights)
        warn_unvouched(ceiling, target, counts, prior, classes)
    return Proposal(predicted, confidence, accepted, truth, temperature, thresholds, prior, ceiling)


def warn_unvouched(ceiling: np.ndarray, target: float, counts: np.ndarray, mix: np.ndarray | None,
                   classes: Sequence[str]) -> None:
    """One warning naming every class whose ``ceiling`` is under ``target``, and what to change."""
    unvouched = np.flatnonzero(ceiling < target)
    if not len(unvouched):
        return
    names = [classes[k] if k < len(classes) else f"class {k}" for k in range(len(ceiling))]
    each = ", ".join(f"'{names[k]}' {ceiling[k]:.2f} ({counts[k]} calibration scans"
                     + (f", {mix[k]:.0%} of the pool" if mix is not None else "") + ")" for k in unvouched)
    log.warning("no pseudo-labels of %s: the calibration scans vouch for a precision of at most %s, under the "
                "target %.2f however good the model; add calibration scans or lower calibrate.target_precision",
                ", ".join(f"'{names[k]}'" for k in unvouched), each, target)


class PseudoLabels:
    """Pseudo-labels of the unlabelled scans (-1 = none), the round each was first given, confidences."""

    def __init__(self):
        self.labels = torch.empty(0, dtype=torch.long)
        self.round = np.empty(0, dtype=int)
        self.confidence = np.empty(0)
        self.truth = np.empty(0, dtype=int)

    def ensure(self, n_unlabelled: int, truth: np.ndarray) -> None:
        """Start empty for ``n_unlabelled`` scans (once); ``truth`` is -1 where unknown."""
        if self.labels.numel() != n_unlabelled:
            self.labels = torch.full((n_unlabelled,), -1, dtype=torch.long)
            self.round = np.full(n_unlabelled, -1)
            self.confidence = np.zeros(n_unlabelled)
            self.truth = np.asarray(truth, dtype=int)

    def update(self, proposal: Proposal, round_index: int) -> dict[str, float]:
        """Replace the pseudo-labels by ``proposal``'s accepted ones; return numbers to log."""
        accepted, predicted = proposal.accepted, proposal.predicted
        changed = accepted & (self.labels.numpy() != predicted)
        self.round[changed] = round_index
        self.round[~accepted] = -1
        self.labels = torch.as_tensor(np.where(accepted, predicted, -1), dtype=torch.long)
        self.confidence = np.where(accepted, proposal.confidence, 0.0)
        known = accepted & (self.truth >= 0)
        accuracy = float((predicted[known] == self.truth[known]).mean()) if known.any() else float("nan")
        return {
            "temperature": proposal.temperature,
            "pseudo_labelled": float(accepted.sum()),
            "pseudo_fraction": float(accepted.mean()) if len(accepted) else 0.0,
            "pseudo_accuracy": accuracy,
            "pseudo_classes": float(len(np.unique(predicted[accepted]))),
            "min_threshold": float(proposal.thresholds.min()),
            "pseudo_mix_estimated": float(proposal.mix_estimated),
            **({} if proposal.mix is None else
               {f"pseudo_mix_{k}": float(p) for k, p in enumerate(proposal.mix)}),
            **({} if proposal.ceiling is None else
               {f"pseudo_ceiling_{k}": float(p) for k, p in enumerate(proposal.ceiling)}),
        }

    def state(self) -> dict[str, torch.Tensor]:
        """As tensors, for a resumable training state."""
        return {"labels": self.labels, "round": torch.as_tensor(self.round, dtype=torch.long),
                "confidence": torch.as_tensor(self.confidence, dtype=torch.float64),
                "truth": torch.as_tensor(self.truth, dtype=torch.long)}

    def load(self, state: dict[str, torch.Tensor]) -> None:
        if state:
            self.labels = state["labels"].long()
            self.round, self.confidence = state["round"].numpy(), state["confidence"].numpy()
            self.truth = state["truth"].numpy()

    def pool(self) -> torch.Tensor:
        """Positions of the unlabelled scans that carry a pseudo-label."""
        return torch.nonzero(self.labels >= 0).flatten()

    def table(self, scan_ids: list[str], classes: list[str]) -> pd.DataFrame:
        """Accepted pseudo-labels as a frame: scan_id, pseudo_label, confidence, round, true_label."""
        labels = self.labels.numpy()
        names = np.array(list(classes) + [""], dtype=object)  # index -1 -> ""
        frame = pd.DataFrame({
            "scan_id": scan_ids,
            "pseudo_label": names[labels],
            "confidence": self.confidence,
            "round": self.round,
            "true_label": names[self.truth],
        })
        return frame[labels >= 0].reset_index(drop=True)


class CalibratedPseudoLabelRounds:
    """Mixin for methods that pseudo-label round by round at calibrated thresholds.

    Before each round after the first, the prediction network's confident calls on the
    unlabelled scans (``calibrated_proposal``) update ``self.pseudo``; training then draws
    unlabelled scans only from those with a pseudo-label.  Needs ``self.pseudo``
    (a :class:`PseudoLabels`) and ``self.params.target_precision``.
    """

    def start_round(self, round_index, context):
        data = context.data
        self.pseudo.ensure(len(data.unlabelled), data.labels[data.unlabelled].numpy())
        if round_index == 0:
            return {"pseudo_labelled": 0.0}
        proposal = calibrated_proposal(context.predict_subset, context.calibrate, self.params.target_precision,
                                       classes=context.data.classes)
        return self.pseudo.update(proposal, round_index)

    def unlabelled_pool(self):
        return self.pseudo.pool()
