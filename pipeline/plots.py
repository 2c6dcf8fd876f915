"""Figures a person would rather look at than read: training curves, reliability diagrams."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from pipeline.calibration import reliability_bins  # noqa: E402
from pipeline.io import atomic_path  # noqa: E402


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


def plot_training_curves(history: pd.DataFrame, path: Path, title: str = "") -> Path:
    """Loss terms (left) and held-out accuracy and, in a screening run, AUROC (right) against training step."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    if not history.empty:
        for column in ("loss", "supervised", "unsupervised"):
            if column in history and history[column].notna().any():
                ax_loss.plot(history["step"], history[column], label=column)
        for column in ("calibration_accuracy", "test_accuracy", "calibration_auroc", "test_auroc"):
            if column in history and history[column].notna().any():
                ax_acc.plot(history["step"], history[column], marker=".", label=column.replace("_", " "))
        if "round" in history and history["round"].nunique() > 1:
            for step in history.groupby("round")["step"].min().iloc[1:]:
                ax_acc.axvline(step, color="grey", lw=0.6, ls=":")
    ax_loss.set(xlabel="step", ylabel="loss (mean since last point)", yscale="log")
    ax_acc.set(xlabel="step", ylabel="accuracy, AUROC", ylim=(0, 1))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.suptitle(title)
    return _save(fig, path)


def plot_reliability(probs_before: np.ndarray, probs_after: np.ndarray, labels: np.ndarray,
                     path: Path, n_bins: int = 15, title: str = "") -> Path:
    """Reliability diagram (confidence vs accuracy) before and after temperature scaling."""
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1, label="perfect calibration")
    for probs, name in ((probs_before, "before"), (probs_after, "after temperature scaling")):
        confidence, accuracy, counts = reliability_bins(probs, labels, n_bins)
        used = counts > 0
        ax.plot(confidence[used], accuracy[used], marker="o", label=name)
    ax.set(xlabel="confidence", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1), title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    return _save(fig, path)


def plot_roc(p_positive: np.ndarray, is_positive: np.ndarray, screening: dict, path: Path, title: str = "") -> Path:
    """ROC curve with the calibrated operating point marked."""
    from sklearn.metrics import roc_auc_score, roc_curve

    fpr, tpr, _ = roc_curve(is_positive, p_positive)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(fpr, tpr, label=f"ROC (AUROC {roc_auc_score(is_positive, p_positive):.3f})")
    ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1)
    ax.plot(1 - screening["specificity"], screening["sensitivity"], "o", color="C3",
            label=f"operating point: sens {screening['sensitivity']:.2f}, spec {screening['specificity']:.2f}")
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", xlim=(0, 1), ylim=(0, 1.01), title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def plot_score_histogram(p_positive: np.ndarray, labels: np.ndarray, classes: list[str], positive: str,
                         screening: dict, path: Path, title: str = "") -> Path:
    """Histogram of the calibrated abnormal probability per true class, thresholds marked."""
    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.linspace(0, 1, 26)
    for k, name in enumerate(classes):
        ax.hist(p_positive[labels == k], bins=bins, alpha=0.6, label=f"true {name}")
    ax.axvspan(screening["review_low"], screening["review_high"], color="gold", alpha=0.25, label="review band")
    ax.axvline(screening["decision"], color="C3", label="decision threshold")
    ax.set(xlabel=f"calibrated p({positive})", ylabel="scans", title=title)
    ax.legend(fontsize=8)
    return _save(fig, path)
