"""Calibration maths: temperature scaling, expected calibration error, per-class thresholds."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import minimize, minimize_scalar
from scipy.special import log_softmax
from scipy.stats import beta, rankdata

# Prior estimates are clipped here: a class EM drives below it is taken as missing from the pool.
PRIOR_FLOOR = 0.02


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
    """Mean -log of each scan's probability of its label, rows normalised and clipped as scikit-learn's
    ``log_loss`` does; without its input checks, which took 6 ms a call, 7 s of a 60-scan calibration's
    bootstrap intervals."""
    probs = np.asarray(probs, dtype=np.float64)
    probs = probs / probs.sum(axis=1, keepdims=True)
    picked = np.clip(probs[np.arange(len(labels)), np.asarray(labels, dtype=int)], np.finfo(np.float64).eps, 1.0)
    return float(-np.log(picked).mean())


def rank_auroc(scores: np.ndarray, is_positive: np.ndarray) -> float:
    """Area under the ROC curve from the positives' ranks (Mann-Whitney U; ties count a half), as
    ``sklearn.metrics.roc_auc_score`` gives it, without its input checks (for bootstrap resamples).

    Raises
    ------
    ValueError
        Only one class among ``is_positive``.
    """
    is_positive = np.asarray(is_positive, dtype=bool)
    n_positive = int(is_positive.sum())
    n_negative = len(is_positive) - n_positive
    if not n_positive or not n_negative:
        raise ValueError("AUROC needs both classes")
    ranks = rankdata(scores)
    return float((ranks[is_positive].sum() - n_positive * (n_positive + 1) / 2) / (n_positive * n_negative))


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
    probs: np.ndarray, labels: np.ndarray, target_precision: float, min_support: int = 5,
    class_weights: np.ndarray | None = None, confidence: float | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per class, the lowest confidence threshold at which predictions reach a target precision.

    For class k, candidates are the confidences of calibration scans predicted as k.
    The chosen threshold is the lowest t such that, for every threshold t' >= t with at
    least ``min_support`` scans above it, precision(t') >= target.  Requiring it at every
    higher threshold keeps the choice stable where the precision curve is jagged.

    ``class_weights`` (K,) weighs each scan by its true class in the precision: with
    ``pool_prior / calibration_prior`` it is the precision on a pool of another class mix (a
    screening pool 9% abnormal makes a call of "abnormal" right far less often than balanced
    calibration scans show). ``min_support`` still counts scans.

    ``confidence`` (e.g. 0.8), where given, asks more: the threshold is the lowest at which the
    precision's lower confidence bound reaches the target, the bound taking each class's share of
    calibration scans above the threshold at its one-sided Clopper-Pearson bound (the called class's
    low, the others' high). With 20 calibration scans a class, none of one class above a threshold
    still allows, at 80% confidence, 8% of that class's scans above it; in a pool where that class is
    nine times as common, a point precision of 1.0 on the calibration scans meant calls 24-75% right
    (``benchmarks/real_variants.md``).

    Returns
    -------
    thresholds : (K,) array; 1.0 means "never confident enough" (too few scans or the
        target is not reached), so no pseudo-label of that class is accepted.
    precision : (K,) estimated precision at the threshold, its lower bound where ``confidence``
        is given (nan when none).
    support : (K,) number of calibration scans at or above the threshold.
    """
    if not 0.0 < target_precision <= 1.0:
        raise ValueError(f"target_precision must be in (0, 1], got {target_precision}")
    n_classes = probs.shape[1]
    if class_weights is not None:
        class_weights = np.asarray(class_weights, dtype=float)
        if class_weights.shape != (n_classes,) or not np.isfinite(class_weights).all() or (class_weights < 0).any():
            raise ValueError(f"class_weights must be {n_classes} finite non-negative numbers (one per class), "
                             f"got {class_weights.tolist()}")
    if confidence is not None and not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if confidence is not None:
        return _bounded_precision_thresholds(probs, labels, target_precision, min_support, class_weights, confidence)
    predicted = probs.argmax(axis=1)
    top = probs.max(axis=1)
    thresholds = np.ones(n_classes)
    precision = np.full(n_classes, np.nan)
    support = np.zeros(n_classes, dtype=int)
    for k in range(n_classes):
        mine = predicted == k
        conf = top[mine]
        correct = (labels[mine] == k).astype(float)
        weight = np.ones(len(conf)) if class_weights is None else class_weights[labels[mine]]
        order = np.argsort(-conf, kind="stable")
        conf, correct, weight = conf[order], correct[order], weight[order]
        cumulative_precision = np.cumsum(correct * weight) / np.maximum(np.cumsum(weight), 1e-12)
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
            precision[k] = (correct * weight)[included].sum() / weight[included].sum()
            support[k] = included.sum()
    return thresholds, precision, support


def _bounded_precision_thresholds(probs: np.ndarray, labels: np.ndarray, target_precision: float, min_support: int,
                                  class_weights: np.ndarray | None, confidence: float):
    """``precision_thresholds`` with ``confidence``: the lowest threshold whose lower precision bound
    reaches the target. The bound rises as calls of the right class accumulate, so unlike the point
    rule no higher threshold need pass on its own: the accepted set as a whole is what is bounded."""
    n_classes = probs.shape[1]
    totals = np.bincount(labels, minlength=n_classes)
    mass = _pool_mass(totals, class_weights)
    predicted, top = probs.argmax(axis=1), probs.max(axis=1)
    thresholds = np.ones(n_classes)
    precision = np.full(n_classes, np.nan)
    support = np.zeros(n_classes, dtype=int)
    for k in range(n_classes):
        mine = np.flatnonzero(predicted == k)
        order = mine[np.argsort(-top[mine], kind="stable")]
        conf = top[order]
        above = np.cumsum(np.eye(n_classes)[labels[order]], axis=0)  # (calls, K): scans of each class so far
        bound = _precision_lower_bound(above, totals, mass, k, confidence)
        # A tie is in or out as a whole: only the last scan of each run of equal confidences may end the set.
        ends = np.append(conf[1:] < conf[:-1], True)
        passing = np.flatnonzero(ends & (bound >= target_precision) & (np.arange(len(conf)) + 1 >= min_support))
        if len(passing):
            best = passing[-1]
            thresholds[k], precision[k], support[k] = conf[best], bound[best], best + 1
    return thresholds, precision, support


def _pool_mass(totals: np.ndarray, class_weights: np.ndarray | None) -> np.ndarray:
    """Each class's calibration scans times its weight: proportional to its share of the pool."""
    return totals * (1.0 if class_weights is None else np.asarray(class_weights, dtype=float))


def _precision_lower_bound(above: np.ndarray, totals: np.ndarray, mass: np.ndarray, k: int,
                           confidence: float) -> np.ndarray:
    """Lower confidence bound of the precision of calls of class ``k``, for each row of ``above``
    (calibration scans of each class among the calls): class k's share of its scans called at its
    one-sided Clopper-Pearson low, the other classes' at their high."""
    above = np.atleast_2d(above)
    wrong_above, wrong_total, wrong_mass = np.delete(above, k, axis=1), np.delete(totals, k), np.delete(mass, k)
    with np.errstate(invalid="ignore", divide="ignore"):
        right = mass[k] * np.nan_to_num(beta.ppf(1 - confidence, above[:, k], totals[k] - above[:, k] + 1))
        # The other classes' shares are bounded together, as one class (K - 1 separate bounds would
        # each add their margin): their pooled share's margin is added to every point share.
        pooled = wrong_above.sum(axis=1)
        margin = np.nan_to_num(beta.ppf(confidence, pooled + 1, wrong_total.sum() - pooled), nan=1.0) \
            - pooled / max(wrong_total.sum(), 1)
        share = np.where(wrong_total > 0, wrong_above / np.maximum(wrong_total, 1), 0.0)
    wrong = (wrong_mass * np.minimum(share + margin[:, None], 1.0)).sum(axis=1)
    return right / np.maximum(right + wrong, 1e-12)


def vouched_precision_ceiling(labels: np.ndarray, n_classes: int, confidence: float,
                              class_weights: np.ndarray | None = None) -> np.ndarray:
    """Per class, the most precision ``precision_thresholds`` with ``confidence`` can vouch for on
    calibration scans of these ``labels``, whatever the model: the lower bound when every scan of the
    class is called and none of the others. Where it is under the target, no scan of that class is
    called; only more calibration scans (or a lower target) change that."""
    totals = np.bincount(labels, minlength=n_classes)
    mass = _pool_mass(totals, class_weights)
    return np.array([_precision_lower_bound(np.where(np.arange(n_classes) == k, totals, 0), totals, mass, k,
                                            confidence)[0] for k in range(n_classes)])


def screening_thresholds(
    p_positive: np.ndarray, is_positive: np.ndarray, target_sensitivity: float,
    review_sensitivity: float, review_precision: float,
) -> dict:
    """Decision threshold and review band for a screening task (positive = abnormal).

    - ``decision``: the highest threshold whose sensitivity on these scans reaches
      ``target_sensitivity``; scans at or above it are called abnormal.
    - ``review_low``: the highest threshold reaching ``review_sensitivity``: below it a scan
      is confidently healthy.
    - ``review_high``: the lowest threshold above which every threshold keeps precision
      >= ``review_precision``: above it a scan is confidently abnormal.
    Scans with ``review_low <= p < max(review_high, decision)`` are flagged for review.
    """
    from sklearn.metrics import precision_recall_curve, roc_curve

    y = np.asarray(is_positive, dtype=int)
    if y.min() == y.max():
        raise ValueError("the calibration set needs both healthy and abnormal scans to choose a threshold")
    fpr, tpr, roc_thresholds = roc_curve(y, p_positive)
    roc_thresholds = np.minimum(roc_thresholds, 1.0)  # sklearn puts inf first

    def at_sensitivity(target: float) -> int:
        return int(np.flatnonzero(tpr >= target)[0])

    i = at_sensitivity(target_sensitivity)
    decision = float(roc_thresholds[i])
    review_low = float(roc_thresholds[at_sensitivity(review_sensitivity)])
    precision, _, pr_thresholds = precision_recall_curve(y, p_positive)
    precision = precision[:-1]  # the last point has no threshold
    # Lowest threshold from which precision never drops below the target again.
    tail_min = np.minimum.accumulate(precision[::-1])[::-1]
    good = np.flatnonzero(tail_min >= review_precision)
    review_high = float(pr_thresholds[good[0]]) if len(good) else 1.0
    review_high = max(review_high, decision)
    return {
        "decision": decision,
        "sensitivity": float(tpr[i]),
        "specificity": float(1.0 - fpr[i]),
        "review_low": min(review_low, decision),
        "review_high": review_high,
        "review_fraction": float(np.mean((p_positive >= min(review_low, decision)) & (p_positive < review_high))),
    }


def bootstrap_interval(statistic, arrays: tuple[np.ndarray, ...], n_resamples: int = 1000,
                       level: float = 0.95, seed: int = 0) -> tuple[float, float] | None:
    """Percentile bootstrap interval of ``statistic(*arrays)`` over resampled rows; a resample where
    the statistic is undefined (raises ValueError, or is NaN: sklearn's AUROC of one class) is left
    out."""
    if n_resamples <= 0 or len(arrays[0]) < 2:
        return None
    rng = np.random.default_rng(seed)
    n = len(arrays[0])
    values = []
    for _ in range(n_resamples):
        pick = rng.integers(0, n, n)
        try:
            value = statistic(*(a[pick] for a in arrays))
        except ValueError:  # a resample with one class only
            continue
        if np.isfinite(value):
            values.append(value)
    if not values:
        return None
    low, high = np.quantile(values, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(low), float(high)


def soft_confusion(calibration_probs: np.ndarray, calibration_labels: np.ndarray) -> np.ndarray | None:
    """C[i, j]: the mean probability the model gives class i on calibration scans of class j; None
    when a class has no calibration scan."""
    classes = calibration_probs.shape[1]
    if any((calibration_labels == k).sum() == 0 for k in range(classes)):
        return None
    return np.stack([calibration_probs[calibration_labels == k].mean(axis=0) for k in range(classes)], axis=1)


def _separates_classes(confusion: np.ndarray | None) -> bool:
    return confusion is not None and abs(np.linalg.det(confusion)) >= 0.05 ** (len(confusion) - 1)


def estimate_prior_bbse(calibration_probs: np.ndarray, calibration_labels: np.ndarray, pool_probs: np.ndarray,
                        floor: float = 0.02) -> np.ndarray | None:
    """Class prior of an unlabelled pool under label shift by black-box shift estimation (Lipton,
    Wang & Smola 2018), in its soft form: with C the ``soft_confusion`` on the calibration scans and
    q the mean probabilities on the pool, the pool's prior solves C @ prior = q.

    Returns None when C is too close to singular (a model near chance) or a class has no
    calibration scan; estimates are clipped to ``floor`` and renormalised.
    """
    confusion = soft_confusion(calibration_probs, calibration_labels)
    if len(pool_probs) == 0 or not _separates_classes(confusion):
        return None
    prior = np.linalg.solve(confusion, pool_probs.mean(axis=0))
    prior = np.clip(prior, floor, None)
    return prior / prior.sum()


def separates_classes_robustly(calibration_probs: np.ndarray, calibration_labels: np.ndarray,
                               resamples: int = 200, share: float = 0.9, seed: int = 0) -> bool:
    """Whether the model tells the classes apart on the calibration scans, and not by the luck of which
    scans they are: the soft confusion matrix is clear of singular (as ``estimate_prior_bbse`` asks)
    on the scans themselves and on at least ``share`` of class-stratified bootstrap resamples of them.

    With 20-30 calibration scans a class, a model near chance passes the plain test by luck now and
    then, and the prior estimated from it sits at the floor: on the development panel 4 of the 5
    estimates of 0.01-0.04 (true shares 0.09 and 0.19) came from snapshots that failed in 17-35% of
    resamples, while sound estimates came from snapshots failing in 0-8%, one in 21%
    (``benchmarks/prior_estimates.md``).
    """
    if not _separates_classes(soft_confusion(calibration_probs, calibration_labels)):
        return False
    passed = sum(_separates_classes(soft_confusion(calibration_probs[pick], calibration_labels[pick]))
                 for pick in stratified_resamples(calibration_labels, calibration_probs.shape[1], resamples, seed))
    return passed >= share * resamples


def stratified_resamples(labels: np.ndarray, classes: int, resamples: int, seed: int = 0):
    """Yield ``resamples`` bootstrap index arrays, each drawing every class's rows with replacement
    as often as the class has rows, so a resample keeps the class counts."""
    rng = np.random.default_rng(seed)
    by_class = [np.flatnonzero(labels == k) for k in range(classes)]
    for _ in range(resamples):
        yield np.concatenate([rng.choice(rows, len(rows)) for rows in by_class])


def fit_bias_temperature(logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Bias-corrected temperature scaling (Alexandari, Kundaje & Shrikumar 2020): the temperature
    T > 0 and per-class biases b minimising the negative log-likelihood of softmax(logits / T + b).

    The biases absorb a model's lean towards a class, which temperature alone cannot; maximum-likelihood
    prior estimation needs posteriors calibrated class by class.
    """
    if len(labels) == 0:
        raise ValueError("cannot fit a temperature on an empty calibration set")
    logits = np.asarray(logits, dtype=np.float64)
    count, classes = logits.shape
    one_hot = np.eye(classes)[labels]

    # In numpy with its gradient written out: a millisecond a fit, where autograd took 0.1 s.
    def nll(theta: np.ndarray) -> tuple[float, np.ndarray]:
        temperature = np.exp(theta[0])
        log_probs = log_softmax(logits / temperature + theta[1:], axis=1)
        residual = (np.exp(log_probs) - one_hot) / count
        d_log_temperature = -np.sum(residual * logits) / temperature
        return -np.sum(one_hot * log_probs) / count, np.concatenate([[d_log_temperature], residual.sum(axis=0)])

    bounds = [(np.log(0.05), np.log(20.0))] + [(-10.0, 10.0)] * classes
    result = minimize(nll, np.zeros(1 + classes), jac=True, method="L-BFGS-B", bounds=bounds)
    return float(np.exp(result.x[0])), result.x[1:]


def estimate_prior_mlls(calibration_logits: np.ndarray, calibration_labels: np.ndarray, pool_logits: np.ndarray,
                        floor: float = PRIOR_FLOOR, tolerance: float = 1e-7, max_iterations: int = 1000) -> np.ndarray | None:
    """Class prior of an unlabelled pool under label shift by maximum likelihood (the EM of Saerens,
    Latinne & Decaestecker 2002) on posteriors calibrated by ``fit_bias_temperature``, as Alexandari
    et al. 2020 recommend over black-box shift estimation: it uses every scan's posterior rather than
    inverting a confusion matrix measured on a few calibration scans. With temperature scaling alone
    EM followed the model's lean towards a class and drove VesselMNIST3D's 9% aneurysms to the floor
    (``benchmarks/prior_estimates.md``); the per-class biases take that lean out.

    The calibrated posteriors are for the calibration scans' class mix, the source prior EM starts from
    and reweights. Returns None when a class has no calibration scan or the pool is empty; estimates
    are clipped to ``floor`` and renormalised. Whether the model is informative enough to estimate from
    at all is the caller's question (``separates_classes_robustly``): EM on near-chance posteriors
    returns a number all the same.
    """
    classes = calibration_logits.shape[1]
    counts = np.bincount(calibration_labels, minlength=classes)
    if len(pool_logits) == 0 or (counts == 0).any():
        return None
    temperature, bias = fit_bias_temperature(calibration_logits, calibration_labels)
    prior = prior_by_em(softmax(pool_logits / temperature + bias), counts / counts.sum(), tolerance, max_iterations)
    prior = np.clip(prior, floor, None)
    return prior / prior.sum()


def estimate_pool_prior(calibration_logits: np.ndarray, calibration_labels: np.ndarray,
                        pool_logits: np.ndarray) -> np.ndarray | None:
    """The unlabelled pool's class prior where the model's logits allow an estimate, else None.

    The model must tell the classes apart on the calibration scans robustly
    (``separates_classes_robustly`` on temperature-scaled probabilities); the prior is then
    ``estimate_prior_mlls``'s, unless EM drove a class to the floor: that is what a model that has
    not learned a class does, whatever the pool holds. On the development panel the one estimate the
    robust gate let through at the floor was 0.020 against a true 0.091 (VesselMNIST3D draw 2 round 1),
    while no sound estimate came near it (``benchmarks/prior_estimates.md``). A pool whose true share
    of a class is under the floor loses the estimate too, and with it only the terms that need one.
    """
    temperature = fit_temperature(calibration_logits, calibration_labels)
    if not separates_classes_robustly(softmax(calibration_logits, temperature), calibration_labels):
        return None
    prior = estimate_prior_mlls(calibration_logits, calibration_labels, pool_logits)
    if prior is None or prior.min() <= PRIOR_FLOOR:
        return None
    return prior


def prior_by_em(posteriors: np.ndarray, source_prior: np.ndarray, tolerance: float = 1e-7,
                max_iterations: int = 1000) -> np.ndarray:
    """The class prior that maximises the likelihood of a pool whose ``posteriors`` were calibrated
    for ``source_prior`` (Saerens, Latinne & Decaestecker 2002): reweight the posteriors by
    prior / source_prior, renormalise, average, repeat until the prior moves less than ``tolerance``."""
    prior = source_prior
    for _ in range(max_iterations):
        shifted = posteriors * (prior / source_prior)
        shifted /= shifted.sum(axis=1, keepdims=True)
        updated = shifted.mean(axis=0)
        converged = np.abs(updated - prior).max() < tolerance
        prior = updated
        if converged:
            break
    return prior
