"""How well the default method's pool-prior estimate finds the unlabelled pool's true class mix.

The Pi-model with alignment holds its mean unlabelled prediction at a prior estimated at each round
start from the network's predictions on the calibration scans and the pool. The panel's pool scans
all have labels (the split only hides them), so the estimate can be checked against the truth.

``--capture``: run the panel's default-method runs as ``benchmarks.real`` does (user knowledge only,
``--seed D``) and save, at every round start, the logits on the calibration scans and the pool with
their labels (``benchmarks/results/prior_estimates/<set>__draw<D>__round<R>.npz``). Finished
snapshots are kept. ``--report``: score every estimator of ``ESTIMATORS`` on the saved snapshots and
write ``benchmarks/prior_estimates.md``. Snapshots are the models the method trained with the
estimator of its commit; the comparison is offline, so every estimator sees the same predictions.

    python -m benchmarks.prior_estimates --capture --sets vesselmnist3d,covid_cxr --draws 3
    python -m benchmarks.prior_estimates --report
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import tomllib
from sklearn.metrics import roc_auc_score

from benchmarks.common import commit
from pipeline.calibration import (
    PRIOR_FLOOR,
    estimate_pool_prior,
    estimate_prior_bbse,
    estimate_prior_mlls,
    fit_temperature,
    prior_by_em,
    separates_classes_robustly,
    soft_confusion,
    softmax,
    stratified_resamples,
)
from pipeline.config import CalibrateConfig
from pipeline.methods.shared import calibrated_proposal

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "prior_estimates"
SETS = ROOT / "benchmarks" / "real_sets.toml"


def capture(name: str, spec: dict, draw: int) -> None:
    from pipeline import cli
    from pipeline.methods import shared

    original = shared.PoolPriorRounds.start_round

    def recording(self, round_index, context):
        if round_index > 0:
            cal_logits, cal_labels = context.predict_subset("calibration")
            pool_logits, pool_labels = context.predict_subset("unlabelled")
            RESULTS.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(RESULTS / f"{name}__draw{draw}__round{round_index}.npz",
                                cal_logits=cal_logits, cal_labels=cal_labels, pool_logits=pool_logits,
                                pool_labels=pool_labels, commit=commit())
        return original(self, round_index, context)

    shared.PoolPriorRounds.start_round = recording
    try:
        code = cli.main(["run", "--scans", spec["scans"], "--positive", spec["positive"],
                         "--labels-per-class", str(spec["labels_per_class"]), f"train.minutes={spec['minutes']}",
                         "--seed", str(draw), "--quiet"])
    finally:
        shared.PoolPriorRounds.start_round = original
    if code:
        raise SystemExit(f"{name} draw {draw}: pipeline run exited {code}")
    describe_run(name, draw, ROOT / (ROOT / "runs" / "LATEST").read_text().strip())


def describe_run(name: str, draw: int, run: Path) -> None:
    """Beside the snapshots: the run and which logit column is the positive class."""
    checkpoint = json.loads((run / "checkpoint.json").read_text())
    positive = checkpoint["classes"].index(checkpoint["positive_class"])
    (RESULTS / f"{name}__draw{draw}.json").write_text(json.dumps({"run": run.name, "positive_index": positive}))


def _bbse_soft(cal_logits, cal_labels, pool_logits):
    temperature = fit_temperature(cal_logits, cal_labels)
    return estimate_prior_bbse(softmax(cal_logits, temperature), cal_labels, softmax(pool_logits, temperature))


def _bbse_hard(cal_logits, cal_labels, pool_logits):
    classes = cal_logits.shape[1]
    one_hot = np.eye(classes)
    return estimate_prior_bbse(one_hot[cal_logits.argmax(1)], cal_labels, one_hot[pool_logits.argmax(1)])


def _bbse_ungated(cal_logits, cal_labels, pool_logits):
    temperature = fit_temperature(cal_logits, cal_labels)
    confusion = soft_confusion(softmax(cal_logits, temperature), cal_labels)
    try:
        prior = np.linalg.solve(confusion, softmax(pool_logits, temperature).mean(0))
    except np.linalg.LinAlgError:
        return None
    prior = np.clip(prior, 0.02, None)
    return prior / prior.sum()


def _bootstrap_estimates(cal_logits, cal_labels, pool_logits, resamples=200, seed=0):
    """Soft BBSE estimates over class-stratified resamples of the calibration scans (None where the gate
    refuses one)."""
    temperature = fit_temperature(cal_logits, cal_labels)
    cal, pool = softmax(cal_logits, temperature), softmax(pool_logits, temperature)
    return [estimate_prior_bbse(cal[pick], cal_labels[pick], pool)
            for pick in stratified_resamples(cal_labels, cal.shape[1], resamples, seed)]


def _bbse_bootstrap(cal_logits, cal_labels, pool_logits):
    """Median of the soft estimate over class-stratified resamples of the calibration scans;
    None where fewer than half the resamples give one."""
    estimates = [p for p in _bootstrap_estimates(cal_logits, cal_labels, pool_logits) if p is not None]
    if len(estimates) < 100:
        return None
    prior = np.median(estimates, axis=0)
    return prior / prior.sum()


def _mlls_ts(cal_logits, cal_labels, pool_logits):
    """EM (Saerens et al. 2002) on temperature-scaled posteriors, without per-class biases."""
    temperature = fit_temperature(cal_logits, cal_labels)
    source = np.bincount(cal_labels, minlength=cal_logits.shape[1]) / len(cal_labels)
    prior = np.clip(prior_by_em(softmax(pool_logits, temperature), source), PRIOR_FLOOR, None)
    return prior / prior.sum()


def _mlls_bcts_gated(cal_logits, cal_labels, pool_logits):
    """MLLS + BCTS where the soft BBSE estimate's singularity gate lets one through, else None."""
    if _bbse_soft(cal_logits, cal_labels, pool_logits) is None:
        return None
    return estimate_prior_mlls(cal_logits, cal_labels, pool_logits)


def _robust_gate(estimator):
    def gated(cal_logits, cal_labels, pool_logits):
        temperature = fit_temperature(cal_logits, cal_labels)
        if not separates_classes_robustly(softmax(cal_logits, temperature), cal_labels):
            return None
        return estimator(cal_logits, cal_labels, pool_logits)
    return gated


ESTIMATORS = {
    "BBSE soft (the default until now)": _bbse_soft,
    "BBSE soft, no singularity gate": _bbse_ungated,
    "BBSE hard": _bbse_hard,
    "BBSE soft, bootstrap median": _bbse_bootstrap,
    "MLLS + temperature": _mlls_ts,
    "MLLS + bias-corrected temperature": estimate_prior_mlls,
    "MLLS + bias-corrected temperature, gated as BBSE": _mlls_bcts_gated,
    "BBSE soft, robust gate": _robust_gate(_bbse_soft),
    "MLLS + bias-corrected temperature, robust gate (807eaf7)": _robust_gate(estimate_prior_mlls),
    "the same, floor estimates refused (adopted)": estimate_pool_prior,
}


def write_report(results: Path, out: Path) -> None:
    rows = []
    for path in sorted(results.glob("*.npz")):
        snap = np.load(path)
        name, draw, round_index = path.stem.split("__")
        known = snap["pool_labels"] >= 0
        described = results / f"{name}__{draw}.json"
        if not described.exists():  # its run has not finished
            continue
        positive = json.loads(described.read_text())["positive_index"]
        truth = float((snap["pool_labels"][known] == positive).mean())
        cal_auroc = roc_auc_score(snap["cal_labels"] == positive, softmax(snap["cal_logits"])[:, positive])
        pool_auroc = roc_auc_score(snap["pool_labels"][known] == positive,
                                   softmax(snap["pool_logits"][known])[:, positive])
        spread = _bootstrap_estimates(snap["cal_logits"], snap["cal_labels"], snap["pool_logits"])
        given = [p[positive] for p in spread if p is not None]
        low, high = np.quantile(given, [0.05, 0.95]) if len(given) >= 20 else (np.nan, np.nan)
        row = {"set": name, "refused": 1 - len(given) / len(spread), "interval": f"{low:.2f}-{high:.2f}", "draw": int(draw[4:]), "round": int(round_index[5:]), "truth": truth,
               "cal_auroc": cal_auroc, "pool_auroc": pool_auroc, "n_cal": len(snap["cal_labels"]), "commit": str(snap["commit"])}
        for label, estimator in ESTIMATORS.items():
            prior = estimator(snap["cal_logits"], snap["cal_labels"], snap["pool_logits"])
            row[label] = np.nan if prior is None else float(prior[positive])
        rows.append(row)
    frame = pd.DataFrame(rows).sort_values(["set", "draw", "round"])
    lines = ["# Pool-prior estimates against the pool's true class mix", "",
             "Regenerate: `python -m benchmarks.prior_estimates --capture` (one run per set and draw, as "
             "`benchmarks.real` runs the default method), then `--report`. Snapshots: commit(s) "
             f"{', '.join(sorted(set(frame['commit'])))}. Each estimator sees the same saved logits; the "
             "positive class's share of the pool is compared with the truth (the pool's hidden labels).", "",
             "## Summary", "",
             "| estimator | snapshots with an estimate | mean abs. error | median abs. error | "
             "estimates off by more than 0.10 | mean abs. error, pneumonia / adrenal / vessel / covid |",
             "|---|---|---|---|---|---|"]
    for label in ESTIMATORS:
        error = (frame[label] - frame["truth"]).abs()
        per_set = " / ".join(f"{error[frame['set'] == s].mean():.3f}"
                             for s in ("pneumoniamnist", "adrenalmnist3d", "vesselmnist3d", "covid_cxr"))
        lines.append(f"| {label} | {error.notna().sum()} of {len(frame)} | {error.mean():.3f} | "
                     f"{error.median():.3f} | {(error > 0.10).sum()} | {per_set} |")
    lines += ["", "## Every snapshot (positive class's share of the pool)", "",
              "*Pool AUROC*: the same network's ranking of the pool's scans by their hidden labels, which a user "
              "does not have: what the calibration AUROC estimates from 20-30 scans a class.", "",
              "| set | draw | round | calibration scans | calibration AUROC | pool AUROC | truth | BBSE bootstrap: "
              "refused, 90% interval | " + " | ".join(ESTIMATORS) + " |", "|---" * (8 + len(ESTIMATORS)) + "|"]
    for row in frame.to_dict("records"):
        values = " | ".join("none" if np.isnan(row[k]) else f"{row[k]:.3f}" for k in ESTIMATORS)
        lines.append(f"| {row['set']} | {row['draw']} | {row['round']} | {row['n_cal']} | {row['cal_auroc']:.3f} | "
                     f"{row['pool_auroc']:.3f} | {row['truth']:.3f} | {row['refused']:.0%}, {row['interval']} | {values} |")
    lines += pseudo_label_calls(results)
    out.write_text("\n".join(lines) + "\n")
    print(out.read_text())


PRECISION_RULES = {"point precision": 0.0, "lower bound, 80%": 0.8, "lower bound, 90%": 0.9, "lower bound, 95%": 0.95}


def pseudo_label_calls(results: Path, target: float = 0.95, min_support: int = 5) -> list[str]:
    """Markdown: at every snapshot whose pool prior is estimated, the calls self-training's proposal
    (``calibrated_proposal``) makes under each precision rule (``PRECISION_RULES``), with the share of
    them right."""
    settings = CalibrateConfig(target_precision=target, min_support=min_support)
    lines = ["", "## Pseudo-label calls under the estimated mix, by precision rule", "",
             f"What `methods.shared.calibrated_proposal` would call on each snapshot with an estimate of the pool's "
             f"prior (target precision {target}, at least {min_support} calibration scans; the snapshots' models are "
             "the Pi-model's, not self-training's): healthy calls, then positive calls, as count / % right. "
             f"The proposal holds the lower bound at {settings.precision_confidence:.0%} "
             "(`calibrate.precision_confidence`).", "",
             "| set | draw | round | calibration scans | truth | estimate | " + " | ".join(PRECISION_RULES) + " |",
             "|---" * (6 + len(PRECISION_RULES)) + "|"]
    for path in sorted(results.glob("*.npz")):
        name, draw, round_index = path.stem.split("__")
        described = results / f"{name}__{draw}.json"
        if not described.exists():
            continue
        snap = np.load(path)
        positive = json.loads(described.read_text())["positive_index"]
        subsets = {"calibration": (snap["cal_logits"], snap["cal_labels"]),
                   "unlabelled": (snap["pool_logits"], snap["pool_labels"])}
        cells, prior = [], None
        for confidence in PRECISION_RULES.values():
            proposal = calibrated_proposal(subsets.__getitem__, settings, precision_confidence=confidence)
            prior = proposal.mix
            if prior is None:
                break
            calls = []
            for k in [c for c in range(len(prior)) if c != positive] + [positive]:
                called = proposal.accepted & (proposal.predicted == k)
                calls.append(f"{called.sum()} / {(snap['pool_labels'][called] == k).mean():.0%}" if called.any() else "0")
            cells.append(", ".join(calls))
        if prior is None:
            continue
        known = snap["pool_labels"] >= 0
        lines.append(f"| {name} | {draw[4:]} | {round_index[5:]} | {len(snap['cal_labels'])} "
                     f"| {(snap['pool_labels'][known] == positive).mean():.3f} | {prior[positive]:.3f} | " + " | ".join(cells) + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--capture", action="store_true")
    parser.add_argument("--report", action="store_true")
    parser.add_argument("--sets", default="", help="comma-separated set names (default: every set present)")
    parser.add_argument("--draws", type=int, default=3)
    args = parser.parse_args(argv)
    specs = tomllib.loads(SETS.read_text())
    names = [s for s in args.sets.split(",") if s] or list(specs)
    if args.capture:
        for draw in range(args.draws):
            for name in names:
                if not (ROOT / specs[name]["scans"]).exists():
                    continue
                if any(RESULTS.glob(f"{name}__draw{draw}__round*.npz")):
                    continue
                print(f"capturing {name} draw {draw}", file=sys.stderr, flush=True)
                capture(name, specs[name], draw)
    if args.report:
        write_report(RESULTS, ROOT / "benchmarks" / "prior_estimates.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
