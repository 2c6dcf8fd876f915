"""Calibrate stage: temperature scaling and per-class pseudo-label thresholds for a run."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from pipeline.calibration import (
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    precision_thresholds,
    softmax,
)
from pipeline.checkpoint import load_checkpoint
from pipeline.io import write_json
from pipeline.plots import plot_reliability

log = logging.getLogger("pipeline.calibrate")
CALIBRATION = "calibration.json"


def calibrate(run_dir: str | Path, data=None) -> dict:
    """Fit a temperature and thresholds on the run's calibration set; write calibration.json.

    Parameters
    ----------
    run_dir : a run folder written by the train stage.
    data : TrainingData, optional; loaded from the run's own config (and cache) when omitted.
    """
    from pipeline.trainer import predict_logits, resolve_device
    from pipeline.workflow import prepare_data

    run_dir = Path(run_dir)
    model = load_checkpoint(run_dir)
    config = model.config
    data = data if data is not None else prepare_data(config)
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
    }
    if len(data.test):
        test_logits = predict_logits(network, data.images[data.test], device)
        test_labels = data.labels[data.test].numpy()
        test_probs = softmax(test_logits, temperature)
        result["test"] = {
            "n": int(len(test_labels)),
            "accuracy": float((test_probs.argmax(1) == test_labels).mean()),
            "ece_before": expected_calibration_error(softmax(test_logits), test_labels, c.ece_bins),
            "ece_after": expected_calibration_error(test_probs, test_labels, c.ece_bins),
        }
    write_json(run_dir / CALIBRATION, result)
    plot_reliability(before, after, labels, run_dir / "reliability.png", c.ece_bins,
                     title=f"calibration set (n={len(labels)}), T={temperature:.2f}")
    log.info("temperature %.3f; ECE %.4f -> %.4f on %d calibration scans", temperature,
             result["ece_before"], result["ece_after"], len(labels))
    return result
