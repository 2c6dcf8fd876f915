"""Regenerate benchmarks/ood.md: how well the out-of-distribution flag tells foreign scans apart.

Usage: python -m benchmarks.ood --runs-dir runs [--max-out 600]

For each pair (a trained run, a folder of scans it was not made for) the run's own test scans are
the in-distribution side and the folder's scans the out-of-distribution side; both go through the
run's preprocessing and network, and are scored as the calibrate and score stages do
(``pipeline.ood``: k-nearest-neighbour cosine distance of penultimate features to the run's
labelled and unlabelled scans, threshold at the 95th percentile of its calibration scans). The
page gives the score's AUROC, its false-positive rate at 95% true-positive rate, and the share
of each side the flag at the calibrated threshold raises. Runs are found as the newest run folder
whose name starts with each pair's prefix (``make bench-real`` leaves them).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score, roc_curve

from benchmarks.common import HERE, commit, machine, markdown_table
from pipeline import ood
from pipeline.checkpoint import load_checkpoint
from pipeline.data import load_training_data, preprocess_paths
from pipeline.io import write_json, write_text
from pipeline.reading import is_scan_file, list_files

PANEL = Path("../shared/data")
# (run folder prefix, what the run screens, foreign folder, what it holds, modality: same or different)
PAIRS = [
    ("pneumoniamnist_pi_model", "PneumoniaMNIST chest X-rays", "data/mnist_scans/test", "MNIST digits", "different"),
    ("pneumoniamnist_pi_model", "PneumoniaMNIST chest X-rays", PANEL / "covid_cxr/scans", "COVID-19 collection chest X-rays", "same"),
    ("adrenalmnist3d_pi_model", "AdrenalMNIST3D shape masks", PANEL / "vesselmnist3d/scans", "VesselMNIST3D vessel masks",
     "same (binary masks), other anatomy"),
    ("adrenalmnist3d_pi_model", "AdrenalMNIST3D shape masks", "data/ood_heads", "synthetic MRI-like head volumes", "different"),
    ("covid_cxr_pi_model", "COVID-19 collection chest X-rays", PANEL / "pneumoniamnist/scans", "PneumoniaMNIST chest X-rays (28 px)", "same"),
    ("mnist100_pi_model", "MNIST-100 digits", PANEL / "pneumoniamnist/scans", "PneumoniaMNIST chest X-rays", "different"),
]


def newest_run(runs_dir: Path, prefix: str) -> Path | None:
    found = sorted(p for p in runs_dir.glob(f"{prefix}_*") if (p / "checkpoint.json").exists())
    return found[-1] if found else None


def fpr_at_95_tpr(labels: np.ndarray, scores: np.ndarray) -> float:
    fpr, tpr, _ = roc_curve(labels, scores)
    return float(fpr[np.searchsorted(tpr, 0.95)])


def evaluate(run: Path, folder: Path, max_out: int, seed: int = 0) -> dict:
    model = load_checkpoint(run)
    config = model.config
    data = load_training_data(config)
    rng = np.random.default_rng(seed)
    bank, threshold = ood.fit(model.network, data, seed=seed)  # as the calibrate stage fits it
    rng.permutation(len(data.unlabelled))  # the draw ood.fit made: the foreign sample stays the one recorded
    inside = ood.knn_scores(ood.penultimate_features(model.network, data.images[data.test]), bank)
    files = [str(p) for p in list_files(folder) if is_scan_file(p)]
    files = [files[i] for i in sorted(rng.permutation(len(files))[:max_out])]
    arrays, errors = preprocess_paths(files, config.preprocess, workers=2, progress=False)
    images = torch.from_numpy(np.stack([a for a in arrays if a is not None]))
    outside = ood.knn_scores(ood.penultimate_features(model.network, images), bank)
    labels = np.r_[np.zeros(len(inside)), np.ones(len(outside))]
    scores = np.r_[inside, outside]
    return {"run": run.name, "n_in": int(len(inside)), "n_out": int(len(outside)),
            "unreadable_out": int(sum(e is not None for e in errors)), "auroc": float(roc_auc_score(labels, scores)),
            "fpr_at_95_tpr": fpr_at_95_tpr(labels, scores), "threshold": threshold,
            "flagged_in": float((inside > threshold).mean()), "flagged_out": float((outside > threshold).mean())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs-dir", default="runs")
    parser.add_argument("--max-out", type=int, default=600, help="foreign scans per pair")
    args = parser.parse_args(argv)
    if not Path("data/ood_heads").exists():
        from pipeline.synth import generate_volumes

        generate_volumes("data/ood_heads", 120, seed=5, size=28, progress=False)
    rows, results = [], []
    for prefix, screens, folder, holds, modality in PAIRS:
        run, folder = newest_run(Path(args.runs_dir), prefix), Path(folder)
        if run is None or not folder.is_dir():
            print(f"skipped {prefix} vs {folder}: {'no run' if run is None else 'no folder'}")
            continue
        tick = time.perf_counter()
        result = {"model": screens, "foreign": holds, "modality": modality, **evaluate(run, folder, args.max_out)}
        results.append(result)
        rows.append({"model screens": screens, "foreign scans": holds, "modality": modality,
                     "in / out": f"{result['n_in']} / {result['n_out']}", "AUROC": f"{result['auroc']:.3f}",
                     "FPR at 95% TPR": f"{result['fpr_at_95_tpr']:.3f}",
                     "flagged (in / out)": f"{result['flagged_in']:.1%} / {result['flagged_out']:.1%}"})
        print(f"{screens} vs {holds}: AUROC {result['auroc']:.3f} ({time.perf_counter() - tick:.0f} s)", flush=True)
    write_json(HERE / "results" / "ood.json", {"pairs": results, "commit": commit(), "machine": machine(),
                                               "date": time.strftime("%Y-%m-%d %H:%M"),
                                               "cpu_load_at_end": round(os.getloadavg()[0], 2)})
    write_text(HERE / "ood.md", "\n".join([
        "# Out-of-distribution flag", "",
        "Regenerate: `python -m benchmarks.ood --runs-dir runs` after `make bench-real` (it uses the newest run "
        "of each set). In-distribution: the run's own test scans; out: scans of another set. Score: cosine "
        "distance to the 10th nearest of the run's labelled and unlabelled scans in the network's penultimate "
        "features; the flag fires above the 95th percentile of the calibration scans' scores.", "",
        f"Commit {commit()}, {machine()}, {time.strftime('%Y-%m-%d %H:%M')}.", "",
        markdown_table(rows) if rows else "No pair could be run.", ""]))
    print(HERE / "ood.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
