"""Suggest stage: which unlabelled scans a radiologist should label next.

Uncertainty together with diversity: the scans the run's calibrated model is least sure of (the
smallest margin between its two most probable classes) form a shortlist ten times the number
wanted, and greedy k-centre selection in the network's penultimate features (Sener & Savarese
2018) picks from it the scans farthest from everything already labelled and from each other, so
that the picks are hard cases of different kinds, not one hard case twenty times.
``to_label.csv`` lists them in order with the model's probabilities; ``to_label.html`` is the
review page in labelling mode (set each scan's class with the keyboard, export the labels).

Where scans are views of one case (a knee's planes, a study's series; ``pipeline.cases``), a reader
labels the case: suggest picks cases, each by the view its call rests on, and lists the case's other
views after it under the same rank, so no case is suggested twice and each view gets its label.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipeline.calibration import softmax
from pipeline.cases import case_keys
from pipeline.checkpoint import CALIBRATION, load_checkpoint
from pipeline.data import (
    input_channels,
    load_training_data,
    matching_scans,
    preprocess_paths,
    split_frame,
)
from pipeline.io import write_csv
from pipeline.manifest import study_uids
from pipeline.ood import logits_and_features, penultimate_features

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


def case_representatives(cases: list[str | None], probs: np.ndarray, positive: int | None) -> list[int]:
    """Positions of the scans to rank: each scan of no case (``None``), and one view of each case: the
    one its call rests on, its most probable view of class ``positive`` where the run screens for one,
    else its least certain view."""
    ordered = np.sort(probs, axis=1)
    margin = ordered[:, -1] - ordered[:, -2] if probs.shape[1] > 1 else 1 - ordered[:, -1]
    best: dict[str, int] = {}
    for i, case in enumerate(cases):
        if case is None:
            continue
        held = best.get(case)
        if held is None or (probs[i, positive] > probs[held, positive] if positive is not None
                            else margin[i] < margin[held]):
            best[case] = i
    chosen = set(best.values())
    return [i for i, case in enumerate(cases) if case is None or i in chosen]


def suggest(run_dir: str | Path, n: int = 20, out: str | Path | None = None, data=None) -> Path:
    """Write ``to_label.csv`` (and ``to_label.html``) for the ``n`` unlabelled scans (or cases of
    several views) to label next."""
    from pipeline.review import slice_stack, thumbnail_png, write_review_page

    if n < 1:
        raise ValueError(f"--n must be at least 1, got {n}")
    run_dir = Path(run_dir)
    model = load_checkpoint(run_dir)
    calibration_file = run_dir / CALIBRATION
    if not calibration_file.exists():
        raise FileNotFoundError(f"{calibration_file} not found: run 'pipeline calibrate {run_dir}' first")
    temperature = float(json.loads(calibration_file.read_text())["temperature"])
    pool = _pool_in_memory(model, data, temperature) if data is not None else _pool_of_split(model, temperature)
    if not pool.scan_ids:
        raise ValueError(f"{run_dir}: the split has no unlabelled scans to suggest from")
    cases = case_keys(model.config.data.scans, pool.scan_ids, study_uids(model.config.data.manifest))
    positive = model.config.data.positive_class
    ranked = case_representatives(cases, pool.probs, model.classes.index(positive) if positive else None)
    picks = [ranked[i] for i in rank_for_labelling(pool.probs[ranked], pool.features[ranked],
                                                   pool.labelled_features, n)]
    views: dict[str, list[int]] = {}
    for i, case in enumerate(cases):
        if case is not None:
            views.setdefault(case, []).append(i)
    rows = []
    for rank, pick in enumerate(picks, start=1):
        case = cases[pick]
        for i in [pick] + [i for i in views.get(case, []) if i != pick]:
            p = pool.probs[i]
            top = np.sort(p)
            rows.append({"rank": rank, "scan_id": pool.scan_ids[i], "case": case or "",
                         "prediction": model.classes[int(p.argmax())],
                         "margin": round(float(top[-1] - top[-2]) if len(top) > 1 else 1.0, 4),
                         **{f"p_{c}": round(float(v), 4) for c, v in zip(model.classes, p)}})
    frame = pd.DataFrame(rows)
    if not frame["case"].any():
        frame = frame.drop(columns="case")
    out = Path(out) if out else run_dir / "to_label.csv"
    write_csv(out, frame)
    report = frame.assign(path="", confidence=[max(r[f"p_{c}"] for c in model.classes) for r in rows],
                          needs_review=True, status="ok", error="")
    images = pool.images_of(list(frame["scan_id"]))
    thumbnails = {sid: thumbnail_png(image) for sid, image in images.items()}
    stacks = {sid: slice_stack(image) for sid, image in images.items()}
    summary = {"files": len(frame), "scored": len(frame), "errors": 0, "needs_review": len(frame),
               "predicted": frame["prediction"].value_counts().to_dict()}
    write_review_page(out.with_suffix(".html"), report, thumbnails, summary, {}, model.classes,
                      title=f"Scans to label next ({run_dir.name})", key=f"{model.weights_sha256[:16]}:suggest:{out}",
                      keep_order=True, stacks=stacks, folder=str(Path(model.config.data.scans).resolve()))
    log.info("suggest: %d scans to label next%s -> %s", len(frame),
             f" ({len(picks)} cases and scans; a case's views listed together)" if len(frame) > len(picks) else "",
             out)
    return out


@dataclass
class Pool:
    """The unlabelled scans' calibrated probabilities and features, the labelled scans' features,
    and a way back to the images of chosen scans."""

    scan_ids: list[str]
    probs: np.ndarray
    features: np.ndarray
    labelled_features: np.ndarray
    images_of: Callable[[list[str]], dict[str, np.ndarray]]


def _pool_of_split(model, temperature: float) -> Pool:
    frame, classes = split_frame(model.config)
    frame = matching_scans(frame, model.config.preprocess)
    cap = model.config.train.max_unlabelled
    if cap and (frame["subset"] == "unlabelled").sum() > cap:
        return _pool_in_parts(model, frame, temperature)
    return _pool_in_memory(model, load_training_data(model.config, frame, classes), temperature)


def _pool_in_memory(model, data, temperature: float) -> Pool:
    logits, features = logits_and_features(model.network, data.images[data.unlabelled])
    position = {sid: i for i, sid in enumerate(data.scan_ids)}
    return Pool([data.scan_ids[int(i)] for i in data.unlabelled], softmax(logits.numpy(), temperature), features,
                penultimate_features(model.network, data.images[data.labelled]),
                lambda ids: {sid: data.images[position[sid]].numpy() for sid in ids})


def _pool_in_parts(model, frame: pd.DataFrame, temperature: float) -> Pool:
    """Every unlabelled scan, preprocessed ``train.max_unlabelled`` at a time: where the plan capped
    the pool because it would not fit in memory, the whole pool is ranked, not only the part that
    training loaded."""
    config = model.config
    cap = config.train.max_unlabelled
    pool = frame[frame["subset"] == "unlabelled"]
    parts = range(0, len(pool), cap)
    log.info("ranking %d unlabelled scans in %d parts of %d (train.max_unlabelled)", len(pool), len(parts), cap)
    scan_ids, probs, features = [], [], []
    for start in parts:
        ids, images = _preprocessed(pool.iloc[start:start + cap], config)
        logits, part_features = logits_and_features(model.network, images)
        scan_ids += ids
        probs.append(softmax(logits.numpy(), temperature))
        features.append(part_features)
    _, labelled = _preprocessed(frame[frame["subset"] == "labelled"], config)
    rows = pool.set_index("scan_id")
    return Pool(scan_ids, np.concatenate(probs), np.concatenate(features),
                penultimate_features(model.network, labelled),
                lambda ids: dict(zip(*_preprocessed(rows.loc[ids].reset_index(), config, progress=False))))


def _preprocessed(rows: pd.DataFrame, config, progress: bool = True) -> tuple[list[str], torch.Tensor]:
    """(scan ids, images) of the rows that preprocess; the others are named in a warning."""
    arrays, errors = preprocess_paths(list(rows["path"]), config.preprocess, config.train.workers, progress)
    failed = [f"{sid}: {error}" for sid, error in zip(rows["scan_id"], errors) if error]
    if failed:
        log.warning("%d scans failed preprocessing and are left out: %s", len(failed), "; ".join(failed[:5]))
    kept = [i for i, error in enumerate(errors) if not error]
    shape = (0, input_channels(config.preprocess), *config.preprocess.spatial_size)
    images = torch.from_numpy(np.stack([arrays[i] for i in kept])) if kept else torch.zeros(shape)
    return [rows["scan_id"].iloc[i] for i in kept], images
