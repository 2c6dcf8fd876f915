"""Regenerate benchmarks/mnist100.md: every method (or those named) on MNIST-100, one run each.

Usage: python benchmarks/mnist100.py [--methods a,b] [--config configs/mnist100.toml] [overrides...]

Runs are sequential (never two trainings at once on a small machine). Each run logs test
accuracy during training (train.eval_test=true) for the accuracy-against-time figure; the
training time excludes those evaluations.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from pipeline.config import load_config  # noqa: E402
from pipeline.io import atomic_path, write_text  # noqa: E402
from pipeline.methods import METHODS  # noqa: E402
from pipeline.workflow import run_all  # noqa: E402

HERE = Path(__file__).resolve().parent
# The source notes' own programs on this machine (../shared/notes), shown beside ours.
NOTES = [("notes: VAE-SSL program", 0.672), ("notes: ladder program", 0.575)]


def machine() -> str:
    import os

    import torch

    cpu = platform.processor() or platform.machine()
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {platform.python_version()}"


def commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        return sha + ("+uncommitted" if dirty else "")
    except OSError:
        return "unknown"


def markdown_table(rows: list[dict]) -> str:
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--methods", default=",".join(sorted(METHODS)))
    parser.add_argument("--config", default="configs/mnist100.toml")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    rows, curves = [], {}
    for name in args.methods.split(","):
        config = load_config(args.config, [f"method.name={name}", "train.eval_test=true", *args.overrides])
        started = time.perf_counter()
        run = run_all(config)
        wall = time.perf_counter() - started
        summary = json.loads((run / "train_summary.json").read_text())
        calibration = json.loads((run / "calibration.json").read_text())
        rows.append({
            "method": name,
            "test accuracy": f"{summary['test_accuracy'] * 100:.2f}%",
            "train s": f"{summary['train_seconds']:.0f}",
            "stage wall s": f"{wall:.0f}",
            "steps": summary["steps"],
            "samples/s": f"{summary['samples_per_second']:.0f}",
            "ECE test (after T)": f"{calibration.get('test', {}).get('ece_after', float('nan')):.3f}",
            "run": run.name,
        })
        curves[name] = pd.read_csv(run / "metrics.csv")
        print(rows[-1], flush=True)
    figure = HERE / "mnist100_accuracy_vs_time.png"
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, history in curves.items():
        ax.plot(history["elapsed_s"] / 60, history["test_accuracy"] * 100, marker=".", label=name)
    for label, accuracy in NOTES:
        ax.axhline(accuracy * 100, ls=":", color="grey")
        ax.text(0, accuracy * 100 + 0.5, label, color="grey", fontsize=8)
    ax.set(xlabel="training time (min, evaluation excluded)", ylabel="test accuracy (%)",
           title="MNIST, 100 labels", ylim=(50, 100))
    ax.grid(alpha=0.3)
    ax.legend()
    with atomic_path(figure) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    table = markdown_table(rows)
    notes = "\n".join(f"| {label} | {acc * 100:.1f}% |" for label, acc in NOTES)
    text = f"""# MNIST with 100 labels

Regenerate: `make bench-mnist` (`python benchmarks/mnist100.py`). One run per method, default
seed, config `{args.config}`{' with ' + ' '.join(args.overrides) if args.overrides else ''}.
Labels: the first 10 training images of each class; the next 10 of each class are the calibration
set (temperature and thresholds only, never trained on); 59,800 unlabelled; 10,000 test images.

Machine: {machine()}. Commit: {commit()}. Date: {time.strftime('%Y-%m-%d')}.

{table}

"train s" is training time without evaluation; "stage wall s" is the whole fetch → calibrate
chain including the per-checkpoint test evaluations this benchmark adds.

The source notes' own programs, measured on this kind of machine:

| program | test accuracy |
|---|---|
{notes}

![test accuracy against training time](mnist100_accuracy_vs_time.png)
"""
    write_text(HERE / "mnist100.md", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
