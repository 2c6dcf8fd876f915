import warnings

import numpy as np
import pytest

from pipeline.calibration import (
    PRIOR_FLOOR,
    estimate_pool_prior,
    estimate_prior_bbse,
    estimate_prior_mlls,
    expected_calibration_error,
    fit_bias_temperature,
    fit_temperature,
    negative_log_likelihood,
    precision_thresholds,
    separates_classes_robustly,
    softmax,
)


def overconfident_logits(n=3000, classes=4, true_temperature=3.0, seed=0):
    """Logits drawn from a calibrated model, then sharpened by ``true_temperature``."""
    rng = np.random.default_rng(seed)
    calibrated = rng.normal(size=(n, classes)) * 1.5
    probs = softmax(calibrated)
    labels = np.array([rng.choice(classes, p=p) for p in probs])
    return calibrated * true_temperature, labels


def test_temperature_recovers_the_sharpening_and_lowers_ece_and_nll():
    logits, labels = overconfident_logits()
    temperature = fit_temperature(logits, labels)
    assert temperature == pytest.approx(3.0, rel=0.15)
    before, after = softmax(logits), softmax(logits, temperature)
    assert expected_calibration_error(after, labels) < expected_calibration_error(before, labels) / 2
    assert negative_log_likelihood(after, labels) < negative_log_likelihood(before, labels)


def test_empty_calibration_set_is_an_error():
    with pytest.raises(ValueError, match="empty"):
        fit_temperature(np.zeros((0, 3)), np.zeros(0, dtype=int))


def test_thresholds_reach_target_precision_on_fresh_data():
    logits, labels = overconfident_logits(n=6000, seed=1)
    probs = softmax(logits, 3.0)
    thresholds, precision, support = precision_thresholds(probs[:3000], labels[:3000], 0.9, min_support=20)
    assert (thresholds < 1).all()
    assert (precision >= 0.9).all()
    held_probs, held_labels = probs[3000:], labels[3000:]
    predicted, confidence = held_probs.argmax(1), held_probs.max(1)
    accepted = confidence >= thresholds[predicted]
    assert accepted.sum() > 100
    assert (predicted[accepted] == held_labels[accepted]).mean() > 0.85


def test_thresholds_weighted_to_a_rare_class_pool_reach_the_target_there():
    # Balanced calibration scans, a pool 10% class 1: the same threshold that is 90% precise on
    # the calibration scans is far less precise on the pool, so a class-1 call must be surer.
    rng = np.random.default_rng(3)
    labels = np.repeat([0, 1], 2000)
    score = rng.normal(size=4000) + 3.0 * labels
    probs = np.stack([1 - (p := 1 / (1 + np.exp(-score))), p], axis=1)
    pool_prior, calibration_prior = np.array([0.9, 0.1]), np.array([0.5, 0.5])
    plain, _, _ = precision_thresholds(probs, labels, 0.9, min_support=20)
    weighted, precision, _ = precision_thresholds(probs, labels, 0.9, min_support=20,
                                                  class_weights=pool_prior / calibration_prior)
    assert weighted[1] > plain[1] and weighted[0] <= plain[0]
    assert precision[1] >= 0.9
    # Drawn at the pool's mix, class-1 calls above the weighted threshold are about 90% right;
    # above the plain one they are not.
    pool = np.concatenate([np.flatnonzero(labels == 0), rng.choice(np.flatnonzero(labels == 1), 222)])
    called = pool[(probs[pool].argmax(1) == 1)]
    assert (labels[called[probs[called, 1] >= weighted[1]]] == 1).mean() > 0.8
    assert (labels[called[probs[called, 1] >= plain[1]]] == 1).mean() < 0.75


def test_bounded_precision_asks_for_enough_calibration_scans():
    # A perfect model: every call right. On 20 scans a class the precision's 80% lower bound is
    # 0.92 (each class's share above the threshold bounded at 0.2^(1/20) and 1 - 0.2^(1/20)), so a
    # 0.9 target is reached and a 0.95 target is not; on 200 scans a class both are.
    for per_class, reaches in ((20, {0.9: True, 0.95: False}), (200, {0.9: True, 0.95: True})):
        labels = np.repeat([0, 1], per_class)
        probs = np.where(np.eye(2)[labels] == 1, 0.9, 0.1) + np.linspace(0, 0.05, len(labels))[:, None]
        probs /= probs.sum(1, keepdims=True)
        for target, reached in reaches.items():
            point, _, _ = precision_thresholds(probs, labels, target)
            bounded, precision, support = precision_thresholds(probs, labels, target, confidence=0.8)
            assert (point < 1).all()
            assert (bounded < 1).all() == reached, (per_class, target)
            if reached:
                assert (precision >= target).all() and (precision < 1).all() and (support == per_class).all()


def test_bounded_precision_bounds_the_other_classes_together():
    # Ten classes, 100 calibration scans each, every call right: the nine other classes' 900 scans
    # bound the wrong calls' share at 0.2%, so 95% is vouched for (nine separate bounds of 1.6% would not).
    labels = np.repeat(np.arange(10), 100)
    probs = np.full((1000, 10), 0.01)
    probs[np.arange(1000), labels] = 0.91 - np.linspace(0, 0.05, 1000)
    thresholds, precision, support = precision_thresholds(probs, labels, 0.95, confidence=0.8)
    assert (thresholds < 1).all() and (precision > 0.97).all() and (support == 100).all()


def test_the_precision_ceiling_is_what_a_perfect_model_gets():
    from pipeline.calibration import vouched_precision_ceiling

    low = 0.2 ** (1 / 20)  # one-sided 80% Clopper-Pearson bound of 20 of 20
    assert vouched_precision_ceiling(np.repeat([0, 1], 20), 2, 0.8) == pytest.approx([low, low])
    # A pool nine times as healthy (class 0) as abnormal: abnormal calls cannot be vouched for.
    skewed = vouched_precision_ceiling(np.repeat([0, 1], 20), 2, 0.8, np.array([1.8, 0.2]))
    assert skewed[1] == pytest.approx(0.2 * low / (0.2 * low + 1.8 * (1 - low))) and skewed[0] > 0.99
    for per_class in (20, 200):
        labels = np.repeat([0, 1, 2], per_class)
        probs = np.where(np.eye(3)[labels] == 1, 0.8, 0.1) + np.linspace(0, 0.05, len(labels))[:, None]
        probs /= probs.sum(1, keepdims=True)
        ceiling = vouched_precision_ceiling(labels, 3, 0.8)
        _, precision, _ = precision_thresholds(probs, labels, 0.5, min_support=1, confidence=0.8)
        assert precision == pytest.approx(ceiling)


def test_bounded_precision_is_never_above_the_point_precision():
    rng = np.random.default_rng(4)
    labels = np.repeat([0, 1], 60)
    score = rng.normal(size=120) + 2.0 * labels
    probs = np.stack([1 - (p := 1 / (1 + np.exp(-score))), p], axis=1)
    weights = np.array([1.8, 0.2])  # a pool 90% class 0
    point, point_precision, _ = precision_thresholds(probs, labels, 0.8, class_weights=weights)
    bounded, bounded_precision, _ = precision_thresholds(probs, labels, 0.8, class_weights=weights, confidence=0.8)
    assert (bounded >= point).all() and bounded[1] > point[1]
    assert (bounded_precision[bounded < 1] >= 0.8).all()


def test_unreachable_precision_gives_threshold_one():
    probs = np.full((50, 2), 0.5)
    probs[:, 0] += 0.01
    probs[:, 1] -= 0.01
    labels = np.arange(50) % 2  # half of the class-0 predictions are wrong
    thresholds, precision, support = precision_thresholds(probs, labels, 0.95)
    assert thresholds[0] == 1.0 and support[0] == 0 and np.isnan(precision[0])


def test_bad_target_is_rejected():
    with pytest.raises(ValueError, match="target_precision"):
        precision_thresholds(np.ones((2, 2)) / 2, np.array([0, 1]), 1.5)
    for weights in ([1.0], [1.0, -1.0], [1.0, np.nan]):
        with pytest.raises(ValueError, match="class_weights"):
            precision_thresholds(np.ones((2, 2)) / 2, np.array([0, 1]), 0.9, class_weights=weights)
    for confidence in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="confidence"):
            precision_thresholds(np.ones((2, 2)) / 2, np.array([0, 1]), 0.9, confidence=confidence)


def test_screening_threshold_reaches_target_sensitivity_and_band_brackets_it():
    from pipeline.calibration import screening_thresholds

    rng = np.random.default_rng(0)
    y = rng.random(2000) < 0.3
    p = np.clip(np.where(y, rng.normal(0.7, 0.2, 2000), rng.normal(0.3, 0.2, 2000)), 0, 1)
    s = screening_thresholds(p, y, 0.95, 0.99, 0.95)
    assert (p[y] >= s["decision"]).mean() >= 0.95
    assert s["sensitivity"] >= 0.95 and 0 < s["specificity"] < 1
    assert s["review_low"] <= s["decision"] <= s["review_high"]
    assert (p[y] >= s["review_low"]).mean() >= 0.99
    above = p >= s["review_high"]
    assert y[above].mean() >= 0.95
    with pytest.raises(ValueError, match="both"):
        screening_thresholds(p[~y], y[~y], 0.95, 0.99, 0.95)


def test_bootstrap_interval_brackets_the_statistic():
    from pipeline.calibration import bootstrap_interval

    values = np.random.default_rng(1).normal(5, 1, 400)
    low, high = bootstrap_interval(np.mean, (values,), 500)
    assert low < values.mean() < high and high - low < 0.5
    assert bootstrap_interval(np.mean, (values,), 0) is None


def test_a_bootstrap_interval_leaves_out_resamples_where_the_statistic_is_undefined():
    from sklearn.metrics import roc_auc_score

    from pipeline.calibration import bootstrap_interval

    # one positive in eight: about a third of resamples hold none, where sklearn's AUROC is NaN
    y = np.array([True] + [False] * 7)
    p = np.linspace(0.9, 0.1, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        low, high = bootstrap_interval(lambda p, y: roc_auc_score(y, p), (p, y), 300)
    assert np.isfinite([low, high]).all() and low == pytest.approx(1.0) and high == pytest.approx(1.0)


@pytest.mark.parametrize("shift", [0.1, 0.5, 0.8])
def test_bbse_recovers_a_shifted_class_prior_even_from_a_biased_model(shift):
    rng = np.random.default_rng(0)

    def posteriors(labels, bias):
        x = rng.normal(np.where(labels, 1.0, -1.0), 1.0)
        p1 = 1 / (1 + np.exp(-2 * x - bias))  # bias: the model leans towards class 1
        return np.stack([1 - p1, p1], 1)

    calibration_labels = np.repeat([0, 1], 200)  # balanced, as calibration sets are drawn
    pool_labels = rng.random(4000) < shift
    for bias in (0.0, 1.5):
        prior = estimate_prior_bbse(posteriors(calibration_labels, bias), calibration_labels,
                                    posteriors(pool_labels, bias))
        assert prior[1] == pytest.approx(pool_labels.mean(), abs=0.05)
    chance = np.full((400, 2), 0.5)
    assert estimate_prior_bbse(chance, calibration_labels, chance[:10]) is None  # a model at chance: no estimate


def leaning_logits(labels, lean, sharpen, rng):
    """Two-class logits of a model that leans towards class 1 by ``lean`` and is ``sharpen`` times
    overconfident: evidence x ~ N(+-1, 1), calibrated log-odds 2x for equal priors."""
    x = rng.normal(np.where(labels == 1, 1.0, -1.0), 1.0)
    return np.stack([np.zeros_like(x), (2 * x + lean) * sharpen], axis=1)


def test_bias_corrected_temperature_recovers_the_sharpening_and_the_lean():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 2000)
    temperature, bias = fit_bias_temperature(leaning_logits(labels, 1.5, 3.0, rng), labels)
    assert temperature == pytest.approx(3.0, rel=0.1)
    assert bias[1] - bias[0] == pytest.approx(-1.5, abs=0.2)


@pytest.mark.parametrize("shift", [0.1, 0.5, 0.8])
def test_mlls_recovers_a_shifted_pool_prior_even_from_a_leaning_overconfident_model(shift):
    rng = np.random.default_rng(1)
    calibration_labels = np.repeat([0, 1], 200)  # balanced, as calibration sets are drawn
    pool_labels = (rng.random(4000) < shift).astype(int)
    for lean, sharpen in ((0.0, 1.0), (1.5, 3.0)):
        prior = estimate_prior_mlls(leaning_logits(calibration_labels, lean, sharpen, rng), calibration_labels,
                                    leaning_logits(pool_labels, lean, sharpen, rng))
        assert prior[1] == pytest.approx(pool_labels.mean(), abs=0.04)


def test_mlls_needs_calibration_scans_of_every_class_and_a_pool():
    rng = np.random.default_rng(2)
    logits = leaning_logits(np.repeat([0, 1], 20), 0.0, 1.0, rng)
    assert estimate_prior_mlls(logits, np.zeros(40, dtype=int), logits) is None
    assert estimate_prior_mlls(logits, np.repeat([0, 1], 20), logits[:0]) is None


def test_the_robust_gate_refuses_a_separation_that_rests_on_which_calibration_scans_were_drawn():
    labels = np.repeat([0, 1], 20)
    spread = np.tile([-0.3, 0.3], 20)  # 20 scans a class, as on the development panel

    def probs(positive_mean_gap, scatter):
        p1 = 0.5 + np.where(labels == 1, 0.5, -0.5) * positive_mean_gap + scatter * spread
        return np.stack([1 - p1, p1], axis=1)

    steady, lucky, chance = probs(0.6, 0.1), probs(0.07, 1.0), probs(0.0, 1.0)
    assert separates_classes_robustly(steady, labels)
    # The plain test lets the lucky model through (its class means differ by 0.07 > 0.05), but the
    # difference is within the noise of 20 scans a class: most resamples would refuse it.
    assert estimate_prior_bbse(lucky, labels, lucky) is not None
    assert not separates_classes_robustly(lucky, labels)
    assert not separates_classes_robustly(chance, labels)


def test_a_pool_prior_at_the_floor_is_refused_as_a_model_that_has_not_learned_the_class():
    rng = np.random.default_rng(3)
    calibration_labels = np.repeat([0, 1], 30)
    calibration = leaning_logits(calibration_labels, 0.0, 1.0, rng)  # separates the classes robustly
    with_positives = leaning_logits((rng.random(2000) < 0.2).astype(int), 0.0, 1.0, rng)
    # A model that calls every pool scan firmly healthy: EM drives the positive class to the floor.
    none_seen = leaning_logits(np.zeros(2000, dtype=int), -6.0, 1.0, rng)
    assert estimate_prior_mlls(calibration, calibration_labels, none_seen)[1] <= PRIOR_FLOOR
    assert estimate_pool_prior(calibration, calibration_labels, none_seen) is None
    assert estimate_pool_prior(calibration, calibration_labels, with_positives)[1] == pytest.approx(0.2, abs=0.05)
    chance = rng.normal(0.0, 0.1, (60, 2))
    assert estimate_pool_prior(chance, calibration_labels, with_positives) is None  # the robust gate still holds


def test_nll_and_rank_auroc_agree_with_scikit_learns():
    from sklearn.metrics import log_loss, roc_auc_score

    from pipeline.calibration import negative_log_likelihood, rank_auroc

    rng = np.random.default_rng(3)
    probs = rng.dirichlet([1.0, 1.0, 1.0], 50)
    probs[0] = [1.0, 0.0, 0.0]  # a zero probability of the label is clipped, not infinite
    labels = rng.integers(0, 3, 50)
    labels[0] = 1
    assert negative_log_likelihood(probs, labels) == pytest.approx(log_loss(labels, probs, labels=[0, 1, 2]))
    assert negative_log_likelihood(probs * 2, labels) == pytest.approx(negative_log_likelihood(probs, labels))
    scores = np.round(rng.random(80), 1)  # many ties, which count a half
    positive = rng.random(80) < 0.3
    assert rank_auroc(scores, positive) == pytest.approx(roc_auc_score(positive, scores))
    with pytest.raises(ValueError, match="both classes"):
        rank_auroc(scores, np.ones(80, bool))
