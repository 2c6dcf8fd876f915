"""Regenerate benchmarks/mnist100.md: every method (or those named) on MNIST-100, one run each.

Usage: python -m benchmarks.mnist100 [--methods a,b] [--config configs/mnist100.toml]
                                     [--report-only] [overrides...]

Each method trains with the config (and its ``[per_method.<name>]`` settings), logging test
accuracy during training (train.eval_test=true) for the accuracy-against-time figure; the
training time excludes those evaluations. Results accumulate in benchmarks/results/mnist100/
and the page is rebuilt from all of them, so the methods can be run a few at a time. Runs are
sequential: never two trainings at once on a small machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from benchmarks.common import HERE, load_results, markdown_table, record  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from pipeline.io import atomic_path, write_text  # noqa: E402
from pipeline.methods import METHODS  # noqa: E402

SUITE = "mnist100"
# The source notes' own programs on this machine (../shared/notes), shown beside ours.
NOTES = [("notes: VAE-SSL program", 0.672), ("notes: ladder program", 0.575)]
# Published MNIST-100 test accuracies, for reference (not measured here).
PUBLISHED = [("ladder network (Rasmus et al. 2015)", 0.9894), ("M1+M2 (Kingma et al. 2014)", 0.9667),
             ("VAT (Miyato et al. 2018)", 0.9864)]
# Targets of the methods issue, shown beside each result.
TARGETS = {"ladder": 0.985, "vae_m2": 0.93, "fixmatch": 0.98, "pi_model": 0.95, "mean_teacher": 0.95,
           "self_training": 0.92, "co_training": 0.90, "co_teaching": 0.90}
BEST_TARGET = 0.99  # the best method (published ladder, conv ladder, Improved GAN: 98.9-99.1%)
# The benchmark's own budgets where they differ from the config's: the Pi-model gets the 8 minutes
# of the 99% target here; the config gives it 6, so that make train (set-up included) fits 12.
BENCH_OVERRIDES = {"pi_model": ["train.minutes=8"]}


def run_one(config_path: str, method: str, overrides: list[str]) -> None:
    from pipeline.stages.run import run_all

    config = load_config(config_path, [f"method.name={method}", "train.eval_test=true", *overrides])
    started = time.perf_counter()
    run = run_all(config)
    result = record(SUITE, method, run, time.perf_counter() - started,
                    extra={"method": method, "config": config_path, "overrides": overrides,
                           "budget": {"steps": config.train.steps, "minutes": config.train.minutes}})
    print(f"{method}: test accuracy {result['summary']['test_accuracy']:.4f}", flush=True)


def record_existing(run_dir: str) -> None:
    """Add a finished run (e.g. from ``make train``) to the results; its own wall time is unknown."""
    run = Path(run_dir)
    meta = json.loads((run / "train_summary.json").read_text())
    config = load_config(run / "config.toml") if (run / "config.toml").exists() else None
    budget = {"steps": config.train.steps, "minutes": config.train.minutes} if config else {}
    record(SUITE, meta["method"], run, None, extra={"method": meta["method"], "config": str(run),
                                                    "overrides": [], "budget": budget})


def table_rows(results: list[dict]) -> list[dict]:
    rows = []
    for r in sorted(results, key=lambda r: -r["summary"]["test_accuracy"]):
        s = r["summary"]
        target = TARGETS.get(r["method"])
        met = "" if target is None else (" ✓" if s["test_accuracy"] >= target else " ✗")
        budget = r.get("budget", {})
        rows.append({
            "method": r["method"] + "".join(f" `{o}`" for o in r.get("overrides", [])
                                            if not o.startswith("train.minutes=")),
            "test accuracy": f"**{s['test_accuracy'] * 100:.2f}%**",
            "target": "-" if target is None else f"{target * 100:.1f}%{met}",
            "budget": (f"{budget['minutes']:g} min" if budget.get("minutes") else f"{budget.get('steps', s['steps'])} steps"),
            "train s": f"{s['train_seconds']:.0f}",
            "whole run s": "-" if r["stage_wall_s"] is None else f"{r['stage_wall_s']:.0f}",
            "steps": s["steps"],
            "samples/s": f"{s['samples_per_second']:.0f}",
            "ECE test (after T)": f"{r['calibration'].get('test', {}).get('ece_after', float('nan')):.3f}",
            "load at end": r.get("cpu_load_at_end", "-"),
            "commit": r["commit"],
            "run": r["run"],
        })
    return rows


def plot(loaded) -> str:
    figure = HERE / "figures" / "mnist100_accuracy_vs_time.png"
    fig, ax = plt.subplots(figsize=(8, 5))
    for r, curve in sorted(loaded, key=lambda e: e[0]["method"]):
        if "test_accuracy" in curve:
            ax.plot(curve["elapsed_s"] / 60, curve["test_accuracy"] * 100, marker=".", label=r["method"])
    for label, accuracy in NOTES:
        ax.axhline(accuracy * 100, ls=":", color="grey")
        ax.text(0, accuracy * 100 + 0.5, label, color="grey", fontsize=8)
    ax.set(xlabel="training time (min, evaluation excluded)", ylabel="test accuracy (%)",
           title="MNIST, 100 labels", ylim=(50, 100))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    with atomic_path(figure) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return f"figures/{figure.name}"


def best_line(results: list[dict]) -> str:
    best = max(results, key=lambda r: r["summary"]["test_accuracy"])
    accuracy = best["summary"]["test_accuracy"]
    met = "✓" if accuracy >= BEST_TARGET else "✗"
    return (f"Best method: **{best['method']}**, {accuracy * 100:.2f}% (commit {best['commit']}, "
            f"{best['summary']['steps']:,} steps; target for the best method: {BEST_TARGET * 100:.1f}% {met}).")


def write_report() -> None:
    loaded = load_results(SUITE)
    results = [r for r, _ in loaded]
    missing = sorted(set(METHODS) - {r["method"] for r in results})
    table = markdown_table(table_rows(results)) if results else "No results yet."
    figure = plot(loaded) if results else None
    machines = "; ".join(sorted({r["machine"] for r in results})) or "-"
    notes = "\n".join(f"| {label} (measured here) | {acc * 100:.1f}% |" for label, acc in NOTES)
    published = "\n".join(f"| {label} (published) | {acc * 100:.2f}% |" for label, acc in PUBLISHED)
    text = f"""# MNIST with 100 labels

Regenerate: `make bench-mnist` (all methods, about two hours) or `make bench-mnist METHODS=a,b`;
results accumulate in `benchmarks/results/mnist100/` and this page is rebuilt from all of them.
One run per method, default seed, config `configs/mnist100.toml` with its per-method budgets
(the Pi-model's raised to 8 minutes here, the budget of the 99% target; `make train` gives it 6).
Labels: the first 10 training images of each class; the next 10 of each class are the calibration
set (temperature and thresholds only, never trained on); 59,800 unlabelled; 10,000 test images.

Machine: {machines}.

{table}

{best_line(results) if results else ''}

Where a method has several rows they are runs of different commits or settings (named beside the
method); their steps show how fast the machine was that hour: the same 8 minutes gave the
Pi-model 5,174 steps on commit d5e55f3 and 2,928 to 3,485 on commit dced416, in a slower hour.

"train s" is training time without evaluation; "whole run s" is the whole fetch → calibrate
chain including the per-checkpoint test evaluations this benchmark adds (data stages are cached
after the first run). "load at end" is the 1-minute load average when the run ended: above 2 on
this 2-core machine something else shared the cores and the times are upper bounds.
{'Not yet run: ' + ', '.join(missing) + '.' if missing else ''}

| reference | test accuracy |
|---|---|
{notes}
{published}

{f'![test accuracy against training time]({figure})' if figure else ''}
"""
    write_text(HERE / "mnist100.md", text)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--methods", default=",".join(sorted(METHODS)))
    parser.add_argument("--config", default="configs/mnist100.toml")
    parser.add_argument("--report-only", action="store_true", help="only rebuild mnist100.md from stored results")
    parser.add_argument("--record", metavar="RUN", help="add an already finished, calibrated run and rebuild the page")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    if args.record:
        record_existing(args.record)
    elif not args.report_only:
        for name in args.methods.split(","):
            if name not in METHODS:
                raise SystemExit(f"unknown method '{name}'; registered: {', '.join(sorted(METHODS))}")
            run_one(args.config, name, [*BENCH_OVERRIDES.get(name, []), *args.overrides])
            write_report()
    write_report()
    return 0


if __name__ == "__main__":
    sys.exit(main())
