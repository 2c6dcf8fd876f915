"""Check-labels stage: which labelled and calibration scans carry a label the data disagrees with.

Confident learning (Northcutt et al. 2021) through cleanlab's ``find_label_issues`` needs
out-of-sample probabilities for every scan it judges. Calibration scans were never trained on,
so the run's own model (temperature-scaled) gives theirs; labelled scans were, so each gets its
probabilities from a supervised model trained, with the run's plan, on the other folds of the
labelled and calibration scans. The ranked list goes to ``label_issues.csv`` and a page of
thumbnails, ``label_issues.html``, in the run folder.
"""

from __future__ import annotations

import html
import logging
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipeline.calibration import fit_temperature, softmax
from pipeline.checkpoint import load_checkpoint
from pipeline.data import load_training_data
from pipeline.io import write_csv, write_text

log = logging.getLogger("pipeline.check_labels")
ISSUES = "label_issues.csv"


def out_of_sample_probabilities(config, data, folds: int, steps: int, seed: int = 0) -> np.ndarray:
    """Cross-validated class probabilities of ``data.labelled`` (in its order): for each fold a
    supervised model of the run's network and augmentation, trained ``steps`` steps on the other
    folds of the labelled and calibration scans, predicts the fold."""
    from pipeline.config import load_config
    from pipeline.trainer import Trainer, predict_logits

    pool = torch.cat([data.labelled, data.calibration])
    labels = data.labels[pool].numpy()
    rng = np.random.default_rng(seed)
    fold_of = np.empty(len(pool), dtype=int)
    for k in np.unique(labels):  # stratified: every fold sees every class
        members = rng.permutation(np.flatnonzero(labels == k))
        fold_of[members] = np.arange(len(members)) % folds
    probabilities = np.zeros((len(data.labelled), len(data.classes)))
    base = config.to_dict()
    base["method"] = {"name": "supervised"}
    base["train"].update(minutes=0.0, steps=steps, eval_every=max(steps, 1), checkpoint_minutes=0.0)
    fold_config = load_config(None, [], base=base)
    for fold in range(folds):
        train_part, held = pool[fold_of != fold], np.flatnonzero(fold_of == fold)
        view = replace(data, labelled=train_part, unlabelled=torch.empty(0, dtype=torch.long),
                       calibration=torch.empty(0, dtype=torch.long), test=torch.empty(0, dtype=torch.long))
        with tempfile.TemporaryDirectory() as scratch:
            trainer = Trainer(fold_config, view, Path(scratch), progress=False)
            trainer.fit()
            network = trainer.method.prediction_network()
            held_labelled = held[held < len(data.labelled)]  # calibration scans are judged by the run's model
            logits = predict_logits(network, data.images[pool[held_labelled]], trainer.device)
        probabilities[held_labelled] = softmax(logits)
        log.info("check-labels: fold %d of %d done (%d labelled scans predicted)", fold + 1, folds, len(held_labelled))
    return probabilities


def check_labels(run_dir: str | Path, folds: int = 5, steps: int = 300, data=None) -> Path:
    """Rank the run's labelled and calibration scans by how likely their label is wrong.

    Returns the path of ``label_issues.csv``: scan_id, subset, given label, suggested label,
    label quality (cleanlab's self-confidence, low is suspect), is_issue and rank; every judged
    scan is listed, issues first. ``data`` (TrainingData) is loaded from the run's config when omitted.
    """
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    from pipeline.trainer import predict_logits, resolve_device

    run_dir = Path(run_dir)
    model = load_checkpoint(run_dir)
    config = model.config
    data = data if data is not None else load_training_data(config)
    if len(data.labelled) < 2 * folds:
        raise ValueError(f"{run_dir}: {len(data.labelled)} labelled scans are too few for {folds}-fold checking")
    if folds < 2:
        raise ValueError(f"--folds must be at least 2, got {folds}")
    labelled_probs = out_of_sample_probabilities(config, data, folds, steps, seed=config.seed)
    device = resolve_device(config.train.device)
    cal_logits = predict_logits(model.network.to(device), data.images[data.calibration], device)
    cal_labels = data.labels[data.calibration].numpy()
    temperature = fit_temperature(cal_logits, cal_labels) if len(cal_labels) else 1.0
    probs = np.concatenate([labelled_probs, softmax(cal_logits, temperature)])
    index = torch.cat([data.labelled, data.calibration]).numpy()
    given = data.labels[index].numpy()
    issues = find_label_issues(given, probs, filter_by="prune_by_noise_rate")
    quality = get_label_quality_scores(given, probs, method="self_confidence")
    frame = pd.DataFrame({
        "scan_id": [data.scan_ids[i] for i in index],
        "subset": ["labelled"] * len(data.labelled) + ["calibration"] * len(data.calibration),
        "given_label": [data.classes[k] for k in given],
        "suggested_label": [data.classes[k] for k in probs.argmax(1)],
        "label_quality": quality.round(4),
        "is_issue": issues,
    })
    frame = frame.sort_values(["is_issue", "label_quality"], ascending=[False, True], kind="stable")
    frame.insert(0, "rank", np.arange(1, len(frame) + 1))
    out = write_csv(run_dir / ISSUES, frame.reset_index(drop=True))
    _write_page(run_dir / "label_issues.html", frame, data, dict(zip(data.scan_ids, range(len(data.scan_ids)))))
    log.info("check-labels: %d of %d labels look wrong; %s", int(issues.sum()), len(frame), out)
    return out


def _write_page(path: Path, frame: pd.DataFrame, data, position: dict[str, int], shown: int = 200) -> None:
    import base64

    from pipeline.review import thumbnail_png

    rows = []
    for row in frame.head(shown).itertuples(index=False):
        png = base64.b64encode(thumbnail_png(data.images[position[row.scan_id]].numpy())).decode()
        flag = "issue" if row.is_issue else ""
        rows.append(f'<tr class="{flag}"><td>{row.rank}</td><td><img src="data:image/png;base64,{png}" '
                    f'alt="{html.escape(row.scan_id)}"></td><td>{html.escape(row.scan_id)}</td>'
                    f"<td>{html.escape(row.subset)}</td><td>{html.escape(row.given_label)}</td>"
                    f"<td>{html.escape(row.suggested_label)}</td><td>{row.label_quality:.3f}</td></tr>")
    n_issues = int(frame["is_issue"].sum())
    write_text(path, f"""<!doctype html><html><head><meta charset="utf-8"><title>Label check</title>
<style>body{{font-family:sans-serif;margin:1.5em}}table{{border-collapse:collapse}}td,th{{padding:4px 8px;
border-bottom:1px solid #ddd;text-align:left}}tr.issue{{background:#fff1e6}}img{{image-rendering:pixelated}}</style>
</head><body><h1>Label check</h1><p>{n_issues} of {len(frame)} labelled and calibration scans carry a label
that out-of-sample predictions disagree with (cleanlab, confident learning); the most suspect come first.
Check each against the scan and fix the labels file.</p><table><tr><th>#</th><th>scan</th><th>scan id</th>
<th>subset</th><th>given</th><th>suggested</th><th>label quality</th></tr>{''.join(rows)}</table></body></html>
""")
