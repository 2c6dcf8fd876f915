"""Regenerate benchmarks/volumes.md: supervised against SSL on the screening data sets.

Usage: python -m benchmarks.volumes [--datasets volumes,pneumoniamnist,adrenalmnist3d]
                                    [--methods supervised,self_training,fixmatch]
                                    [--record RUN ...] [--report-only] [overrides...]

Each (data set, method) pair trains with the data set's config, calibrates, and leaves its
numbers in benchmarks/results/volumes/; the page is rebuilt from every result there, so the
runs can be spread over several invocations. Runs are sequential: never two trainings at once
on a small machine. A data set whose folder is missing (../shared/data is optional) is skipped
with a message. ``--record RUN`` stores a run that was trained with ``pipeline run`` instead.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from benchmarks.common import HERE, load_results, markdown_table, record  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from pipeline.io import atomic_path, write_text  # noqa: E402
from pipeline.reading import scan_id  # noqa: E402

SUITE = "volumes"
CONFIGS = {
    "volumes": "configs/volumes.toml",
    "pneumoniamnist": "configs/pneumoniamnist.toml",
    "adrenalmnist3d": "configs/adrenalmnist3d.toml",
}
DESCRIPTION = {
    "volumes": "synthetic MRI-like head volumes (pipeline synth volumes, generator version 3), lesion or "
               "not, trained at 24^3, 1.333 mm",
    "pneumoniamnist": "PneumoniaMNIST chest X-rays (MedMNIST v2), normal or pneumonia, 28x28 PNG",
    "adrenalmnist3d": "AdrenalMNIST3D shape volumes (MedMNIST v2), normal or abnormal, 28^3 NIfTI",
}
# The bar for the best SSL method's test AUROC, where it sets one.
TARGET_AUROC = {"volumes": 0.95}
FIGURES = HERE / "figures"
# Abnormal test scans grouped by what their lesions are (truth.csv of `pipeline synth volumes`),
# each group scored against all healthy test scans: which lesions the model finds.
LESION_GROUPS = {
    "a hypo-intense lesion": lambda t: t["hypo_lesions"] > 0,
    "hyper-intense lesions only": lambda t: (t["hypo_lesions"] == 0) & (t["lesions"] > 0),
    "subtle lesions only": lambda t: (t["subtle_lesions"] == t["lesions"]) & (t["lesions"] > 0),
}


def data_available(config) -> bool:
    if config.data.dataset:  # generated or fetched by the pipeline itself
        return True
    return Path(config.data.scans).is_dir()


def lesion_breakdown(run: Path, config) -> dict | None:
    """Test AUROC per lesion group, from the run's test predictions and the generator's truth.csv."""
    truth_path, predictions_path = Path(config.data.scans) / "truth.csv", Path(run) / "test_predictions.csv"
    positive = config.data.positive_class
    if not (truth_path.exists() and predictions_path.exists() and positive):
        return None
    truth = pd.read_csv(truth_path)
    if "hypo_lesions" not in truth.columns:
        return None  # written before the generator recorded lesion types; regenerate the set
    truth["scan_id"] = [scan_id(name) for name in truth["file"]]
    frame = pd.read_csv(predictions_path).merge(truth.drop(columns="label"), on="scan_id", how="inner")
    healthy = frame["label"] != positive
    out = {}
    for name, select in LESION_GROUPS.items():
        group = (frame["label"] == positive) & select(frame)
        subset = frame[healthy | group]
        auroc = (float(roc_auc_score(subset["label"] == positive, subset[f"p_{positive}"]))
                 if group.any() and healthy.any() else None)
        out[name] = {"n": int(group.sum()), "auroc": auroc}
    return out


def run_one(dataset: str, method: str, overrides: list[str]) -> None:
    from pipeline.stages.run import run_all

    config = load_config(CONFIGS[dataset], [f"method.name={method}", "train.eval_test=true", *overrides])
    if not data_available(config):
        print(f"skip {dataset}: {config.data.scans} does not exist", flush=True)
        return
    started = time.perf_counter()
    run = run_all(config)
    result = record(SUITE, f"{dataset}__{method}", run, time.perf_counter() - started,
                    extra={"dataset": dataset, "method": method, "overrides": overrides,
                           "lesion_breakdown": lesion_breakdown(run, config)})
    print(f"{dataset} {method}: test AUROC {test_auroc(result)}", flush=True)


def record_run(run: Path) -> None:
    from pipeline.checkpoint import load_checkpoint

    config = load_checkpoint(run).config
    dataset = next((name for name, path in CONFIGS.items() if load_config(path).name == config.name), None)
    if dataset is None:
        raise SystemExit(f"{run}: its config name '{config.name}' is not one of this benchmark's data sets")
    key = f"{dataset}__{config.method_name}"
    previous = {r["run"]: r for r, _ in load_results(SUITE) if r["key"] == key}.get(Path(run).name)
    # Re-recording a benchmarked run (after a re-calibration, say) keeps its measured wall time.
    record(SUITE, key, run, previous["stage_wall_s"] if previous else None,
           extra={"dataset": dataset, "method": config.method_name,
                  "overrides": previous["overrides"] if previous else ["recorded from a run"],
                  "lesion_breakdown": lesion_breakdown(run, config),
                  **({"commit": previous["commit"], "date": previous["date"]} if previous else {})})


def percent(value) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def table_rows(results: list[dict]) -> list[dict]:
    rows = []
    for r in sorted(results, key=lambda r: (r["method"] != "supervised", r["method"])):
        s, c = r["summary"], r["calibration"]
        test = c.get("test", {}).get("screening", {})
        screening = c.get("screening", {})
        rows.append({
            "method": r["method"],
            "labels": s["n_labelled"],
            "unlabelled": s["n_unlabelled"],
            "test AUROC": f"**{test['auroc']:.4f}**" if test.get("auroc") is not None else "-",
            "test accuracy": percent(c.get("test", {}).get("accuracy")),
            "test sensitivity": percent(test.get("sensitivity")),
            "test specificity": percent(test.get("specificity")),
            "test review": percent(test.get("review_fraction")),
            "threshold": f"{screening['decision']:.3f}" if screening else "-",
            "cal. AUROC": f"{screening['auroc']:.4f}" if "auroc" in screening else "-",
            "cal. sens / spec": (f"{percent(screening.get('sensitivity'))} / {percent(screening.get('specificity'))}"
                                 if screening else "-"),
            "train s": f"{s['train_seconds']:.0f}",
            "whole run s": "-" if r["stage_wall_s"] is None else f"{r['stage_wall_s']:.0f}",
            "run": r["run"],
        })
    return rows


def test_auroc(result: dict) -> float | None:
    return result["calibration"].get("test", {}).get("screening", {}).get("auroc")


def best_ssl(results: list[dict]) -> dict | None:
    ssl = [r for r in results if r["method"] != "supervised" and test_auroc(r) is not None]
    return max(ssl, key=test_auroc) if ssl else None


def plot_curves(dataset: str, entries: list[tuple[dict, object]]) -> Path | None:
    entries = [(r, curve) for r, curve in entries if "test_auroc" in curve]
    if not entries:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for r, curve in entries:
        ax.plot(curve["elapsed_s"] / 60, curve["test_auroc"], marker=".", label=r["method"])
    ax.set(xlabel="training time (min, evaluation excluded)", ylabel="test AUROC", title=dataset)
    ax.grid(alpha=0.3)
    ax.legend()
    path = FIGURES / f"volumes_{dataset}_auroc_vs_time.png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def breakdown_rows(results: list[dict]) -> list[dict]:
    rows = []
    for r in sorted(results, key=lambda r: (r["method"] != "supervised", r["method"])):
        groups = r.get("lesion_breakdown")
        if not groups:
            continue
        row = {"method": r["method"]}
        for name, g in groups.items():
            auroc = g["auroc"]
            row[f"{name} (n)"] = "-" if auroc is None else f"{auroc:.3f} ({g['n']})"
        rows.append(row)
    return rows


def target_verdict(dataset: str, best_auroc: float) -> str:
    """The sentence "Target for the best SSL method: 0.95 ✓." (or ✗); empty without a target."""
    target = TARGET_AUROC.get(dataset)
    if target is None:
        return ""
    return f" Target for the best SSL method: {target:.2f} {'✓' if best_auroc >= target else '✗ (not met)'}."


def write_report() -> Path:
    loaded = load_results(SUITE)
    sections = []
    for dataset in CONFIGS:
        entries = [(r, curve) for r, curve in loaded if r["dataset"] == dataset]
        if not entries:
            sections.append(f"## {dataset}\n\n{DESCRIPTION[dataset]}.\n\nNot run yet.\n")
            continue
        results = [r for r, _ in entries]
        first = results[0]["summary"]
        text = [f"## {dataset}\n", f"{DESCRIPTION[dataset]}; config `{CONFIGS[dataset]}`. "
                f"{first['n_labelled']} labelled, {first['n_unlabelled']} unlabelled, "
                f"{first['n_calibration']} calibration, {first['n_test']} test scans.\n",
                markdown_table(table_rows(results)), ""]
        supervised = next((r for r in results if r["method"] == "supervised"), None)
        best = best_ssl(results)
        if supervised and best:
            gain = test_auroc(best) - test_auroc(supervised)
            verdict = target_verdict(dataset, test_auroc(best))
            text.append(f"Best SSL method: **{best['method']}**, test AUROC {test_auroc(best):.4f} against "
                        f"{test_auroc(supervised):.4f} for supervised on the same labels ({gain:+.4f}).{verdict}\n")
        breakdown = breakdown_rows(results)
        if breakdown:
            text += ["Test AUROC by lesion type: the abnormal test scans of each group against all healthy "
                     "test scans (lesion types from the generator's `truth.csv`).\n", markdown_table(breakdown), ""]
        figure = plot_curves(dataset, entries)
        if figure:
            text.append(f"![test AUROC against training time](figures/{figure.name})\n")
        if best:
            roc = Path("runs") / best["run"] / "roc_test.png"
            if roc.exists():
                shutil.copyfile(roc, FIGURES / f"volumes_{dataset}_roc_test.png")
            if (FIGURES / f"volumes_{dataset}_roc_test.png").exists():
                text.append(f"![test ROC of {best['method']}](figures/volumes_{dataset}_roc_test.png)\n")
        provenance = sorted({(r["commit"], r["machine"]) for r in results})
        text.append("Measured on " + "; ".join(f"commit `{c}` ({m})" for c, m in provenance) + ", dates "
                    + ", ".join(sorted({r["date"][:10] for r in results})) + ".\n")
        sections.append("\n".join(text))
    page = f"""# Screening benchmarks: supervised against semi-supervised

Regenerate: `make bench-volumes` (all data sets and methods; `DATASETS=a,b METHODS=c,d` for a
part; results accumulate in `benchmarks/results/volumes/`). One run per pair, default seed, each
data set's own config with `method.name` set. "test sensitivity / specificity" apply the
decision threshold chosen on the calibration set (target sensitivity 0.95) to the untouched test
scans; "test review" is the share of test scans that fall in the review band. "cal. AUROC" and
"cal. sens / spec" are measured on the calibration scans that chose the threshold (drawn from the
same pool as the training scans, unlike a test set that comes from elsewhere). "train s" excludes evaluation;
"whole run s" is ingest → split → preprocess → train → calibrate (it includes the per-checkpoint
test evaluations this benchmark adds).

{chr(10).join(sections)}
"""
    return write_text(HERE / "volumes.md", page)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--datasets", default=",".join(CONFIGS))
    parser.add_argument("--methods", default="supervised,self_training,fixmatch")
    parser.add_argument("--record", nargs="+", type=Path, default=[], help="store these run folders' results")
    parser.add_argument("--report-only", action="store_true", help="only rebuild volumes.md from stored results")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    for run in args.record:
        record_run(run)
    if not (args.record or args.report_only):
        for dataset in args.datasets.split(","):
            if dataset not in CONFIGS:
                raise SystemExit(f"unknown data set '{dataset}'; choose from {', '.join(CONFIGS)}")
            for method in args.methods.split(","):
                run_one(dataset, method, args.overrides)
    print(write_report())
    return 0


if __name__ == "__main__":
    sys.exit(main())
