"""Calibrate stage: temperature scaling and per-class pseudo-label thresholds for a run."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.calibration import (
    bootstrap_interval,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    precision_thresholds,
    rank_auroc,
    screening_thresholds,
    softmax,
)
from pipeline.cases import case_keys, case_scores
from pipeline.checkpoint import CALIBRATION, load_checkpoint
from pipeline.data import load_training_data
from pipeline.io import write_csv, write_json
from pipeline.manifest import study_uids
from pipeline.plots import plot_reliability, plot_roc, plot_score_histogram

log = logging.getLogger("pipeline.stages.calibrate")
TEST_PREDICTIONS = "test_predictions.csv"
# Calibration AUROC under which a screening model is called weak in a warning (0.7-0.8 is "fair"
# discrimination in the clinical literature): on such models the operating point at a high
# sensitivity leaves few scans below the review band, and those are not reliably healthy
# (covid_cxr's runs, about 0.6, had half abnormal scans among them; benchmarks/real.md).
WEAK_AUROC = 0.75


def calibrate(run_dir: str | Path, data=None) -> dict:
    """Fit a temperature and thresholds on the run's calibration set; write calibration.json.

    Parameters
    ----------
    run_dir : a run folder written by the train stage.
    data : TrainingData, optional; loaded from the run's own config (and cache) when omitted.
    """
    from pipeline.trainer import predict_logits, resolve_device

    run_dir = Path(run_dir)
    model = load_checkpoint(run_dir)
    config = model.config
    data = data if data is not None else load_training_data(config)
    if len(data.calibration) == 0:
        raise ValueError(f"{run_dir}: the split has no calibration scans; set split.calibration_per_class")
    device = resolve_device(config.train.device)
    network = model.network.to(device)
    logits = predict_logits(network, data.images[data.calibration], device)
    labels = data.labels[data.calibration].numpy()
    temperature = fit_temperature(logits, labels)
    before, after = softmax(logits), softmax(logits, temperature)
    c = config.calibrate
    thresholds, precision, support = precision_thresholds(after, labels, c.target_precision, c.min_support)
    result = {
        "temperature": temperature,
        "n_calibration": int(len(labels)),
        "target_precision": c.target_precision,
        "nll_before": negative_log_likelihood(before, labels),
        "nll_after": negative_log_likelihood(after, labels),
        "ece_before": expected_calibration_error(before, labels, c.ece_bins),
        "ece_after": expected_calibration_error(after, labels, c.ece_bins),
        "calibration_accuracy": float((after.argmax(1) == labels).mean()),
        "class_thresholds": {
            name: {"threshold": float(t), "precision": None if np.isnan(p) else float(p), "support": int(n)}
            for name, t, p, n in zip(model.classes, thresholds, precision, support)
        },
        "weights_sha256": model.weights_sha256,
        "warnings": [],
    }
    n_boot = c.bootstrap if len(labels) < 1000 else 0  # intervals matter when the set is small
    for name, metric in (("ece", lambda p, y: expected_calibration_error(p, y, c.ece_bins)),
                         ("nll", negative_log_likelihood)):
        for when, probs in (("before", before), ("after", after)):
            interval = bootstrap_interval(metric, (probs, labels), n_boot, seed=config.seed)
            if interval:
                result[f"{name}_{when}_ci95"] = interval
    positive = config.data.positive_class
    if positive:
        result["screening"] = _screening(model.classes, positive, after, labels, c, config.seed, result["warnings"])
        k = model.classes.index(positive)
        calibration_ids = [data.scan_ids[i] for i in data.calibration.numpy()]
        studies = study_uids(config.data.manifest) if config.data.scans else {}
        if cases := _case_operating_point(config.data.scans, calibration_ids, after[:, k], labels == k, c,
                                          positive, result["warnings"], studies):
            result["screening"]["cases"] = cases
        plot_roc(after[:, k], labels == k, result["screening"], run_dir / "roc.png",
                 title=f"calibration set (n={len(labels)})")
        plot_score_histogram(after[:, k], labels, model.classes, positive, result["screening"],
                             run_dir / "score_histogram.png", title="calibration set")
    if len(data.test):
        test_logits = predict_logits(network, data.images[data.test], device)
        test_labels = data.labels[data.test].numpy()
        test_probs = softmax(test_logits, temperature)
        _write_test_predictions(run_dir / TEST_PREDICTIONS, data, model.classes, test_probs)
        result["test"] = {
            "n": int(len(test_labels)),
            "accuracy": float((test_probs.argmax(1) == test_labels).mean()),
            "ece_before": expected_calibration_error(softmax(test_logits), test_labels, c.ece_bins),
            "ece_after": expected_calibration_error(test_probs, test_labels, c.ece_bins),
        }
        if positive:
            k = model.classes.index(positive)
            result["test"]["screening"] = _test_operating_point(test_probs[:, k], test_labels == k,
                                                                result["screening"])
            test_ids = [data.scan_ids[i] for i in data.test.numpy()]
            if "cases" in result["screening"] and (found := case_scores(
                    case_keys(config.data.scans, test_ids, studies), test_probs[:, k], test_labels == k)) is not None:
                result["test"]["screening"]["cases"] = _test_operating_point(*found, result["screening"]["cases"])
            if result["test"]["screening"]["auroc"] is not None:
                plot_roc(test_probs[:, k], test_labels == k, result["test"]["screening"], run_dir / "roc_test.png",
                         title=f"test set (n={len(test_labels)}), operating point from calibration")
            plot_score_histogram(test_probs[:, k], test_labels, model.classes, positive, result["screening"],
                                 run_dir / "score_histogram_test.png", title="test set")
    result["ood"] = _fit_ood(run_dir, network, data, device, config.seed)
    if len(labels) < 100:
        result["warnings"].append(f"only {len(labels)} labelled calibration scans: thresholds and rates are "
                                  "rough estimates; label more scans for calibration")
    for warning in result["warnings"]:
        log.warning("%s", warning)
    write_json(run_dir / CALIBRATION, result)
    plot_reliability(before, after, labels, run_dir / "reliability.png", c.ece_bins,
                     title=f"calibration set (n={len(labels)}), T={temperature:.2f}")
    log.info("temperature %.3f; ECE %.4f -> %.4f on %d calibration scans", temperature,
             result["ece_before"], result["ece_after"], len(labels))
    return result


def _fit_ood(run_dir: Path, network, data, device, seed: int) -> dict | None:
    """The out-of-distribution score's training features (``ood.safetensors``: labelled scans and
    up to a few thousand unlabelled ones) and its threshold, the 95th percentile of the calibration
    scans' scores (see ``pipeline.ood``)."""
    from pipeline import ood

    fitted = ood.fit(network, data, device, seed)
    if fitted is None:
        return None
    bank, threshold = fitted
    ood.save_bank(run_dir, bank)
    return {"method": "knn cosine distance on penultimate features", "neighbours": ood.NEIGHBOURS,
            "n_bank": int(len(bank)), "threshold": threshold, "percentile": ood.PERCENTILE}


def _write_test_predictions(path: Path, data, classes: list[str], probs: np.ndarray) -> None:
    """Per-scan calibrated test probabilities, so that results can be broken down afterwards
    (by lesion type, scanner, site...) without retraining."""
    index = data.test.numpy()
    frame = pd.DataFrame({"scan_id": [data.scan_ids[i] for i in index],
                          "label": [classes[k] for k in data.labels[index].numpy()]})
    for k, name in enumerate(classes):
        frame[f"p_{name}"] = probs[:, k]
    write_csv(path, frame)


def _case_operating_point(scans: str, scan_ids: list[str], p_positive: np.ndarray, is_positive: np.ndarray,
                          c, positive: str, warnings: list[str], studies: dict[str, str] | None = None
                          ) -> dict | None:
    """The operating point for cases seen in several views (a knee's planes, a DICOM study's series;
    ``pipeline.cases``), where the calibration scans hold ``MIN_CASES`` or more of them: a case is called
    abnormal where its most probable view reaches ``decision``, chosen on the calibration cases at the
    target sensitivity. Any view over the scans' own threshold would be more sensitive than that and
    less specific, the more so the more views a case has. None where the scans form too few cases; a
    warning in ``warnings`` where it rests on fewer abnormal cases than ``c.min_positives``. ``studies``:
    the manifest's study uids (:func:`pipeline.cases.study_cases`)."""
    found = case_scores(case_keys(scans, scan_ids, studies), p_positive, is_positive) if scans else None
    if found is None or found[1].all() or not found[1].any():
        return None
    p_case, y_case = found
    point = screening_thresholds(p_case, y_case, c.target_sensitivity, c.review_sensitivity, c.review_precision)
    log.info("cases of several views: %d on the calibration scans; a case is called abnormal from %.3f (its "
             "most probable view), sensitivity %.2f, specificity %.2f on them", len(p_case), point["decision"],
             point["sensitivity"], point["specificity"])
    if y_case.sum() < c.min_positives:
        warnings.append(f"the cases' operating point rests on {int(y_case.sum())} calibration cases of class "
                        f"{positive!r} (fewer than {c.min_positives}): its sensitivity is uncertain")
    return {**point, "n_cases": int(len(p_case)), "n_positive": int(y_case.sum())}


def _test_operating_point(p_positive: np.ndarray, is_positive: np.ndarray, screening: dict) -> dict:
    """What the thresholds chosen on the calibration set do on held-out test scans."""
    from sklearn.metrics import roc_auc_score

    called = p_positive >= screening["decision"]
    review = (p_positive >= screening["review_low"]) & (p_positive < screening["review_high"])
    both = is_positive.any() and not is_positive.all()
    return {
        "auroc": float(roc_auc_score(is_positive, p_positive)) if both else None,
        "sensitivity": float(called[is_positive].mean()) if is_positive.any() else None,
        "specificity": float((~called[~is_positive]).mean()) if not is_positive.all() else None,
        "review_fraction": float(review.mean()),
        "n_positive": int(is_positive.sum()),
        "n_negative": int((~is_positive).sum()),
    }


def _screening(classes, positive, probs, labels, c, seed, warnings) -> dict:
    """Decision threshold at the target sensitivity, its specificity, and the review band."""
    from sklearn.metrics import roc_auc_score

    if positive not in classes:
        raise ValueError(f"data.positive_class '{positive}' is not one of the classes {classes}")
    k = classes.index(positive)
    p_positive, is_positive = probs[:, k], labels == k
    screening = screening_thresholds(p_positive, is_positive, c.target_sensitivity,
                                     c.review_sensitivity, c.review_precision)
    n_positive = int(is_positive.sum())
    screening.update(positive_class=positive, target_sensitivity=c.target_sensitivity,
                     n_positive=n_positive, n_negative=int(len(labels) - n_positive),
                     auroc=float(roc_auc_score(is_positive, p_positive)))
    decision = screening["decision"]

    def sensitivity(p, y):
        if not y.any():
            raise ValueError("no positives")
        return float((p[y] >= decision).mean())

    def specificity(p, y):
        if y.all():
            raise ValueError("no negatives")
        return float((p[~y] < decision).mean())

    for name, statistic in (("sensitivity", sensitivity), ("specificity", specificity), ("auroc", rank_auroc)):
        interval = bootstrap_interval(statistic, (p_positive, is_positive), c.bootstrap, seed=seed)
        if interval:
            screening[f"{name}_ci95"] = interval
    low = screening.get("auroc_ci95", (screening["auroc"],))[0]
    if screening["auroc"] < WEAK_AUROC or low <= 0.5:
        warnings.append(f"the model tells {positive!r} from the other scans weakly on the calibration scans (AUROC "
                        f"{screening['auroc']:.2f}" + (f", 95% CI {low:.2f}-{screening['auroc_ci95'][1]:.2f}"
                                                       if "auroc_ci95" in screening else "")
                        + "): at the target sensitivity it calls many healthy scans abnormal, and scans below the "
                        "review band are not safe to leave unread; label more scans, check the labels "
                        "(pipeline check-labels) or train longer")
    if n_positive < c.min_positives:
        warnings.append(f"the decision threshold rests on {n_positive} calibration scans of class {positive!r} "
                        f"(fewer than {c.min_positives}): its sensitivity is uncertain")
    return screening
