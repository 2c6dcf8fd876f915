"""Regenerate benchmarks/active.md: does labelling the scans `pipeline suggest` picks beat labelling
random ones?

Usage: python -m benchmarks.active [--set pneumoniamnist] [--n 20] [--draws 3]

For each label draw D the start is that draw's default-method run of ``make bench-real``
(``results/real/<set>__<method>__draw<D>.json`` names it). From it, N unlabelled scans are
labelled (their labels taken from the held-back truth in the manifest): the N that
``pipeline suggest`` ranks first, or N drawn at random (seed D). Each arm retrains with the
start's resolved config and budget, and its test AUROC is compared, paired by draw.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.common import HERE, RESULTS, commit, machine, markdown_table
from benchmarks.real import paired_interval
from pipeline.checkpoint import load_checkpoint
from pipeline.io import write_csv, write_json, write_text
from pipeline.manifest import split_path

SUITE = "active"


def result_path(name: str, arm: str, draw: int) -> Path:
    return RESULTS / SUITE / f"{name}__{arm}__draw{draw}.json"


def arm_split(start_split: Path, chosen: list[str], out: Path) -> Path:
    split = pd.read_csv(start_split, dtype=str, keep_default_na=False)
    moving = split["scan_id"].isin(chosen)
    if (split.loc[moving, "subset"] != "unlabelled").any():
        raise ValueError("a chosen scan is not in the unlabelled pool")
    split.loc[moving, "subset"] = "labelled"
    return write_csv(out, split)


def added_positives(start_split: Path, chosen: list[str], positive: str) -> int:
    """How many of the ``chosen`` scans are of the ``positive`` class by the held-back truth."""
    split = pd.read_csv(start_split, dtype=str, keep_default_na=False)
    return int((split["scan_id"].isin(chosen) & (split["label"] == positive)).sum())


def run_arm(name: str, arm: str, draw: int, start: Path, chosen: list[str]) -> dict:
    config = load_checkpoint(start).config
    positives = added_positives(split_path(config), chosen, config.data.positive_class)
    split = arm_split(split_path(config), chosen,
                      Path("data_manifests") / f"{split_path(config).stem}.{arm}{len(chosen)}.split.csv")
    command = [sys.executable, "-m", "pipeline", "run", "--config", str(start / "config.toml"), "--quiet",
               "plan=false", f"data.split=\"{split}\"", f"name=\"{name}_{arm}\""]
    tick = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{name} {arm} draw {draw} failed:\n{done.stderr[-3000:]}")
    run = Path(Path("runs/LATEST").read_text().strip())
    calibration = json.loads((run / "calibration.json").read_text())
    summary = json.loads((run / "train_summary.json").read_text())
    result = {"set": name, "arm": arm, "draw": draw, "run": run.name, "start": start.name, "n_added": len(chosen),
              "n_added_positive": positives,
              "test_auroc": calibration["test"]["screening"]["auroc"], "steps": summary["steps"],
              "wall_s": round(time.perf_counter() - tick, 1), "commit": commit(), "machine": machine(),
              "date": time.strftime("%Y-%m-%d %H:%M")}
    write_json(result_path(name, arm, draw), result)
    print(f"    {arm}: test AUROC {result['test_auroc']:.3f}", flush=True)
    return result


def _positives_added(frame: pd.DataFrame, name: str) -> str:
    """Per paired draw, how many of the added scans were abnormal in each arm ("-" for results made
    before this was recorded)."""
    part = frame[frame["set"] == name]
    if "n_added_positive" not in part or part["n_added_positive"].isna().any():
        return "-"
    counts = part.pivot_table(index="draw", columns="arm", values="n_added_positive").dropna()
    return ", ".join(f"{int(row.suggested)} / {int(row.random)}" for row in counts.itertuples())


def main(argv: list[str] | None = None) -> int:
    from pipeline.stages.suggest import suggest

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", default="pneumoniamnist")
    parser.add_argument("--method", default="pi_model")
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--draws", type=int, default=3)
    args = parser.parse_args(argv)
    for draw in range(args.draws):
        start_record = RESULTS / "real" / f"{args.set}__{args.method}__draw{draw}.json"
        if not start_record.exists():
            print(f"draw {draw}: no start run ({start_record} missing; run make bench-real first)")
            continue
        if all(result_path(args.set, arm, draw).exists() for arm in ("suggested", "random")):
            continue  # the page re-renders from stored results without the start run
        start = Path("runs") / json.loads(start_record.read_text())["run"]
        suggested = pd.read_csv(suggest(start, n=args.n, out=Path("data_manifests") / f"to_label_{args.set}_{draw}.csv"))
        config = load_checkpoint(start).config
        split = pd.read_csv(split_path(config), dtype=str, keep_default_na=False)
        pool = split.loc[split["subset"] == "unlabelled", "scan_id"].tolist()
        random = list(np.random.default_rng(draw).choice(pool, size=args.n, replace=False))
        print(f"[{time.strftime('%H:%M:%S')}] {args.set} draw {draw} from {start.name}", flush=True)
        for arm, chosen in (("suggested", suggested["scan_id"].tolist()), ("random", random)):
            if not result_path(args.set, arm, draw).exists():
                run_arm(args.set, arm, draw, start, chosen)
    results = [json.loads(p.read_text()) for p in sorted((RESULTS / SUITE).glob("*.json"))]
    if not results:
        return 0
    frame = pd.DataFrame(results)
    pivot = frame.pivot_table(index=["set", "draw"], columns="arm", values="test_auroc")
    rows = []
    for name, part in pivot.groupby(level=0):
        paired = part.dropna()
        if {"suggested", "random"} <= set(paired.columns) and len(paired):
            mean, low, high = paired_interval((paired["suggested"] - paired["random"]).to_numpy())
            rows.append({"set": name, "draws": len(paired), "labels added": int(frame["n_added"].iloc[0]),
                         "suggested (mean ± sd)": f"{paired['suggested'].mean():.3f} ± {paired['suggested'].std(ddof=1):.3f}"
                         if len(paired) > 1 else f"{paired['suggested'].mean():.3f}",
                         "random (mean ± sd)": f"{paired['random'].mean():.3f} ± {paired['random'].std(ddof=1):.3f}"
                         if len(paired) > 1 else f"{paired['random'].mean():.3f}",
                         "suggested - random": f"{mean:+.3f}",
                         "95% interval": f"[{low:+.3f}, {high:+.3f}]" if np.isfinite(low) else "(one draw)",
                         "per draw": ", ".join(f"{d:+.3f}" for d in paired["suggested"] - paired["random"]),
                         "abnormal among added (suggested / random)": _positives_added(frame, name)})
    write_text(HERE / "active.md", "\n".join([
        "# Choosing the next scans to label: `pipeline suggest` against random", "",
        "Regenerate: `python -m benchmarks.active --set S --draws N` for each set after `make bench-real` "
        "(it starts from that bench's default-method runs, which must still be in `runs/` for draws not yet run). Each draw: the same start, N scans added to the labelled set (labels from the "
        "held-back truth), chosen by `pipeline suggest` or at random, retrained with the start's config and "
        "budget; test AUROC on the same test scans. *Abnormal among added*: per draw, how many of the N added "
        "scans are of the positive class by the held-back truth (suggested / random).", "",
        f"Commits: {', '.join(sorted(set(frame['commit'])))}. {frame['machine'].iloc[0]}.", "",
        markdown_table(rows) if rows else "No paired result yet.", ""]))
    print(HERE / "active.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
