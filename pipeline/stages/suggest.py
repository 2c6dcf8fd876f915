"""Suggest stage: which unlabelled scans a radiologist should label next.

Uncertainty together with diversity: the scans the run's calibrated model is least sure of (the
smallest margin between its two most probable classes) form a shortlist ten times the number
wanted, and greedy k-centre selection in the network's penultimate features (Sener & Savarese
2018) picks from it the scans farthest from everything already labelled and from each other, so
that the picks are hard cases of different kinds, not one hard case twenty times.
``to_label.csv`` lists them in order with the model's probabilities; ``to_label.html`` is the
review page in labelling mode (set each scan's class with the keyboard, export the labels).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.calibration import softmax
from pipeline.checkpoint import CALIBRATION, load_checkpoint
from pipeline.data import load_training_data
from pipeline.io import write_csv
from pipeline.ood import penultimate_features

log = logging.getLogger("pipeline.suggest")
SHORTLIST = 10  # candidates per scan wanted, ranked by margin


def k_centre_greedy(features: np.ndarray, centres: np.ndarray, n: int) -> list[int]:
    """Indices of ``n`` rows of ``features`` chosen one at a time as the row farthest (cosine)
    from ``centres`` and the rows already chosen."""
    if len(centres):
        nearest = 1.0 - (features @ centres.T).max(axis=1)
    else:
        nearest = np.full(len(features), np.inf)
    chosen: list[int] = []
    for _ in range(min(n, len(features))):
        pick = int(np.argmax(nearest))
        chosen.append(pick)
        nearest = np.minimum(nearest, 1.0 - features @ features[pick])
        nearest[chosen] = -np.inf
    return chosen


def rank_for_labelling(probs: np.ndarray, features: np.ndarray, labelled_features: np.ndarray, n: int) -> list[int]:
    """Positions of ``n`` scans to label next: small margin first, then diverse (see module doc)."""
    ordered = np.sort(probs, axis=1)
    margin = ordered[:, -1] - ordered[:, -2] if probs.shape[1] > 1 else 1 - ordered[:, -1]
    shortlist = np.argsort(margin, kind="stable")[: max(n, SHORTLIST * n)]
    picked = k_centre_greedy(features[shortlist], labelled_features, n)
    return [int(shortlist[i]) for i in picked]


def suggest(run_dir: str | Path, n: int = 20, out: str | Path | None = None, data=None) -> Path:
    """Write ``to_label.csv`` (and ``to_label.html``) for the ``n`` unlabelled scans to label next."""
    from pipeline.review import slice_stack, thumbnail_png, write_review_page

    if n < 1:
        raise ValueError(f"--n must be at least 1, got {n}")
    run_dir = Path(run_dir)
    model = load_checkpoint(run_dir)
    calibration_file = run_dir / CALIBRATION
    if not calibration_file.exists():
        raise FileNotFoundError(f"{calibration_file} not found: run 'pipeline calibrate {run_dir}' first")
    temperature = float(json.loads(calibration_file.read_text())["temperature"])
    data = data if data is not None else load_training_data(model.config)
    if len(data.unlabelled) == 0:
        raise ValueError(f"{run_dir}: the split has no unlabelled scans to suggest from")
    from pipeline.trainer import predict_logits

    pool = data.unlabelled
    probs = softmax(predict_logits(model.network, data.images[pool], "cpu"), temperature)
    features = penultimate_features(model.network, data.images[pool])
    labelled = penultimate_features(model.network, data.images[data.labelled])
    picks = rank_for_labelling(probs, features, labelled, n)
    rows = []
    for rank, i in enumerate(picks, start=1):
        p = probs[i]
        top = np.sort(p)
        rows.append({"rank": rank, "scan_id": data.scan_ids[int(pool[i])], "prediction": model.classes[int(p.argmax())],
                     "margin": round(float(top[-1] - top[-2]) if len(top) > 1 else 1.0, 4),
                     **{f"p_{c}": round(float(v), 4) for c, v in zip(model.classes, p)}})
    frame = pd.DataFrame(rows)
    out = Path(out) if out else run_dir / "to_label.csv"
    write_csv(out, frame)
    report = frame.assign(path="", confidence=[max(r[f"p_{c}"] for c in model.classes) for r in rows],
                          needs_review=True, status="ok", error="")
    position = {sid: i for i, sid in enumerate(data.scan_ids)}
    thumbnails = {sid: thumbnail_png(data.images[position[sid]].numpy()) for sid in frame["scan_id"]}
    stacks = {sid: slice_stack(data.images[position[sid]].numpy()) for sid in frame["scan_id"]}
    summary = {"files": len(frame), "scored": len(frame), "errors": 0, "needs_review": len(frame),
               "predicted": frame["prediction"].value_counts().to_dict()}
    write_review_page(out.with_suffix(".html"), report, thumbnails, summary, {}, model.classes,
                      title=f"Scans to label next ({run_dir.name})", key=f"{model.weights_sha256[:16]}:suggest:{out}",
                      keep_order=True, stacks=stacks, folder=str(Path(model.config.data.scans).resolve()))
    log.info("suggest: %d scans to label next -> %s", len(frame), out)
    return out
