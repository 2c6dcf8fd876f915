"""Scoring pieces shared by the score stage's engines (local processes, Ray): the model and its
calibrated decision rule, and the report rows of a chunk of files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipeline.calibration import softmax
from pipeline.checkpoint import CALIBRATION, load_checkpoint
from pipeline.data import input_channels
from pipeline.networks import forward_batch
from pipeline.ood import OODScorer, load_bank, logits_and_features
from pipeline.reading import SCAN_FORMATS, is_scan_file


def load_scorer(run_dir: Path) -> tuple:
    """``(model, calibration, temperature, decide, ood)`` for a calibrated run folder; ``ood`` is an
    :class:`~pipeline.ood.OODScorer`, or None for a run calibrated before there was one."""
    model = load_checkpoint(run_dir)
    calibration_file = run_dir / CALIBRATION
    if not calibration_file.exists():
        raise FileNotFoundError(f"{calibration_file} not found: run 'pipeline calibrate {run_dir}' first")
    calibration = json.loads(calibration_file.read_text())
    if calibration.get("weights_sha256") != model.weights_sha256:
        raise ValueError(f"{calibration_file} was made for other weights; re-run 'pipeline calibrate {run_dir}'")
    bank = load_bank(run_dir)
    scorer = (OODScorer(bank, calibration["ood"]["threshold"])
              if bank is not None and calibration.get("ood") else None)
    return model, calibration, float(calibration["temperature"]), decision_rule(calibration, model.classes), scorer


def report_columns(classes: list[str]) -> list[str]:
    """The report's columns, in order, for a model with these classes."""
    return ["scan_id", "path", "prediction", "confidence", "needs_review", "status", "error",
            *(f"p_{c}" for c in classes), "ood_score", "out_of_distribution"]


def decision_rule(calibration: dict, classes: list[str]):
    """``decide(probs) -> (class index, needs_review)`` from a run's calibration.

    Screening tasks call a scan abnormal at the calibrated decision threshold (not at the
    largest probability) and flag the review band; other tasks take the most probable
    class and flag confidences below that class's calibrated threshold.
    """
    screening = calibration.get("screening")
    if screening:
        k = classes.index(screening["positive_class"])
        others = [i for i in range(len(classes)) if i != k]

        def decide(p):
            predicted = k if p[k] >= screening["decision"] else max(others, key=lambda i: p[i])
            return predicted, bool(screening["review_low"] <= p[k] < screening["review_high"])

        return decide
    thresholds = np.array([calibration["class_thresholds"][c]["threshold"] for c in classes])

    def decide(p):
        predicted = int(p.argmax())
        return predicted, bool(p[predicted] < thresholds[predicted])

    return decide


def readable_paths(paths: list[Path]) -> list[Path]:
    """The paths of a chunk that look like scans (the others get an error row without reading)."""
    return [p for p in paths if is_scan_file(p)]


def as_strings(paths: list[Path]) -> list[str]:
    return [str(p) for p in paths]


def rows_frame(rows: list[dict] | pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Report rows as a frame with fixed column types, whichever engine made them."""
    frame = pd.DataFrame(rows, columns=columns)
    numeric = [c for c in columns if c in ("confidence", "ood_score") or c.startswith("p_")]
    frame[numeric] = frame[numeric].astype(float)  # a chunk of error rows only would be object-typed
    return frame


CHUNK_IMAGE_BYTES = 64 * 2**20  # the preprocessed scans of one chunk (two are alive at once)


def memory_bounded_sizes(model, batch_size: int, chunk_size: int) -> tuple[int, int]:
    """Forward batch and chunk sizes no larger than asked and small enough that scoring's memory
    stays flat at any input size (``model``: a loaded run).

    Images and first-layer activations grow with the voxels: 256 volumes of 64^3 in one forward
    pass held over a gigabyte of activations, and a chunk of 512 another half gigabyte of
    images. The batch is ``forward_batch``'s (the first layer's output, which also sets the
    fastest batch on a CPU); the image size bounds the chunk.
    """
    preprocess = model.config.preprocess
    scan_shape = (input_channels(preprocess), *preprocess.spatial_size)
    batch = forward_batch(model.network, scan_shape, most=max(batch_size, 1))
    chunk = max(batch, min(chunk_size, int(CHUNK_IMAGE_BYTES // (math.prod(scan_shape) * 4))))
    return batch, chunk


def score_chunk(paths, scans, process, model, temperature, decide, batch_size, ood=None) -> list[dict]:
    """Report rows of ``paths``: preprocess (``process``), predict, decide; a scan unlike the
    training scans (``ood``) is flagged for review whatever its probability."""
    readable = readable_paths(paths)
    arrays, errors = process(as_strings(readable))
    outcome = {p: (a, e) for p, a, e in zip(readable, arrays, errors)}
    good = [p for p in readable if outcome[p][1] is None]
    probs, unlike = {}, {}
    if good:
        images = torch.from_numpy(np.stack([outcome[p][0] for p in good]))
        logits, features = logits_and_features(model.network, images, batch_size)
        probs = dict(zip(good, softmax(logits.numpy(), temperature)))
        if ood is not None and features is not None:
            values, flags = ood.scores(features)
            unlike = {p: (float(v), bool(f)) for p, v, f in zip(good, values, flags)}
    rows = []
    for path in paths:
        row = {"scan_id": path.relative_to(scans).as_posix(), "path": str(path.absolute())}
        if path in probs:
            p = probs[path]
            k, review = decide(p)
            score, flagged = unlike.get(path, (np.nan, False))
            row.update(prediction=model.classes[k], confidence=float(p[k]), needs_review=review or flagged,
                       status="ok", error="", ood_score=score, out_of_distribution=flagged)
            row.update({f"p_{c}": float(v) for c, v in zip(model.classes, p)})
        else:
            reason = outcome[path][1] if path in outcome else f"unsupported file type (not {SCAN_FORMATS})"
            row.update(prediction="", confidence=np.nan, needs_review=True, status="error", error=reason,
                       ood_score=np.nan, out_of_distribution=False)
        rows.append(row)
    return rows


