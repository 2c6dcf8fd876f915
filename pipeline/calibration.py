"""Calibration maths: temperature scaling, expected calibration error, per-class thresholds."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import minimize_scalar
from sklearn.metrics import log_loss


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    return F.softmax(torch.as_tensor(logits, dtype=torch.float64) / temperature, dim=1).numpy()


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """Temperature T > 0 minimising the negative log-likelihood of softmax(logits / T)."""
    if len(labels) == 0:
        raise ValueError("cannot fit a temperature on an empty calibration set")
    logits_t = torch.as_tensor(logits, dtype=torch.float64)
    labels_t = torch.as_tensor(labels, dtype=torch.long)

    def nll(log_t: float) -> float:
        return float(F.cross_entropy(logits_t / np.exp(log_t), labels_t))

    # Bounded search in log-space: T from 0.05 to 20 covers over- and under-confidence.
    result = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(result.x))


def negative_log_likelihood(probs: np.ndarray, labels: np.ndarray) -> float:
    return float(log_loss(labels, probs, labels=list(range(probs.shape[1]))))


def reliability_bins(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15):
    """Per confidence bin: (mean confidence, accuracy, count), for top-label calibration."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, n_bins - 1)
    counts = np.bincount(which, minlength=n_bins)
    sum_conf = np.bincount(which, weights=confidence, minlength=n_bins)
    sum_correct = np.bincount(which, weights=correct.astype(float), minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sum_conf / counts, sum_correct / counts, counts


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    """Top-label ECE: count-weighted mean |accuracy - confidence| over equal-width bins."""
    mean_conf, accuracy, counts = reliability_bins(probs, labels, n_bins)
    used = counts > 0
    return float(np.sum(counts[used] * np.abs(accuracy[used] - mean_conf[used])) / counts.sum())


def precision_thresholds(
    probs: np.ndarray, labels: np.ndarray, target_precision: float, min_support: int = 5
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per class, the lowest confidence threshold at which predictions reach a target precision.

    For class k, candidates are the confidences of calibration scans predicted as k.
    The chosen threshold is the lowest t such that, for every threshold t' >= t with at
    least ``min_support`` scans above it, precision(t') >= target.  Requiring it at every
    higher threshold keeps the choice stable where the precision curve is jagged.

    Returns
    -------
    thresholds : (K,) array; 1.0 means "never confident enough" (too few scans or the
        target is not reached), so no pseudo-label of that class is accepted.
    precision : (K,) estimated precision at the threshold (nan when none).
    support : (K,) number of calibration scans at or above the threshold.
    """
    if not 0.0 < target_precision <= 1.0:
        raise ValueError(f"target_precision must be in (0, 1], got {target_precision}")
    n_classes = probs.shape[1]
    predicted = probs.argmax(axis=1)
    confidence = probs.max(axis=1)
    thresholds = np.ones(n_classes)
    precision = np.full(n_classes, np.nan)
    support = np.zeros(n_classes, dtype=int)
    for k in range(n_classes):
        mine = predicted == k
        conf = confidence[mine]
        correct = (labels[mine] == k).astype(float)
        order = np.argsort(-conf, kind="stable")
        conf, correct = conf[order], correct[order]
        cumulative_precision = np.cumsum(correct) / np.arange(1, len(conf) + 1)
        ok = cumulative_precision >= target_precision
        # Walk down from the most confident; stop at the first failure past min_support.
        best = -1
        for i in range(len(conf)):
            if not ok[i] and i + 1 >= min_support:
                break
            if ok[i] and i + 1 >= min_support:
                best = i
        if best >= 0:
            # Ties: every scan with the same confidence is in or out together.
            thresholds[k] = conf[best]
            included = conf >= conf[best]
            precision[k] = correct[included].mean()
            support[k] = included.sum()
    return thresholds, precision, support
