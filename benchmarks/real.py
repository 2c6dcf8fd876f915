"""Regenerate benchmarks/real.md: the default SSL method against supervised on the real panel.

Usage: python -m benchmarks.real [--sets pneumoniamnist,covid_cxr] [--methods supervised,pi_model]
                                 [--draws 3] [--report-only] [--into FOLDER]

Every set of ``benchmarks/real_sets.toml`` whose folder exists, and every other folder of the
development panel (``../shared/data``) with a ``labels.csv``, is run the way a new user runs it,
``pipeline run --scans ... --positive ... --labels-per-class ... --seed D train.minutes=...``, with no
config: the plan stage chooses everything else. A panel folder the sets file does not list gets
what a user would know from its labels file (:func:`discovered_set`), and the page says so. Each
method trains on the same label draws (split seeds 0, 1, 2, ...), so the SSL - supervised
difference is paired. A finished
(set, method, draw) leaves ``results/real/<set>__<method>__draw<D>.json`` and is not run again;
the page is rebuilt from every result present. Runs are sequential: one training at a time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import matplotlib
import tomllib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy import stats  # noqa: E402

from benchmarks.common import HERE, RESULTS, commit, machine, markdown_table  # noqa: E402
from pipeline.io import atomic_path, write_json, write_text  # noqa: E402
from pipeline.stages.plan import DEFAULT_METHOD, MIN_UNLABELLED_FOR_SSL  # noqa: E402

SUITE = "real"
SETS_FILE = HERE / "real_sets.toml"
FIGURE = HERE / "figures" / "real_auroc.png"
BASELINE = "supervised"


PANEL = Path("../shared/data")
# What a panel folder the sets file does not list is given: the panel's usual labels and budget.
DISCOVERED_LABELS_PER_CLASS = 30
DISCOVERED_MINUTES = 3.0


def load_sets(panel: Path | None = None) -> dict[str, dict]:
    """``real_sets.toml``'s sets, then every other folder of ``panel`` (``PANEL``) with a ``labels.csv``
    (as :func:`discovered_set` reads it), so that a set added to the panel is run without an entry."""
    panel = PANEL if panel is None else panel
    sets = tomllib.loads(SETS_FILE.read_text())
    listed = {Path(spec["scans"]).resolve() for spec in sets.values()}
    folders = sorted(p for p in panel.iterdir() if (p / "labels.csv").is_file()) if panel.is_dir() else []
    for folder in folders:
        if folder.resolve() in listed or folder.name in sets:
            continue
        spec = discovered_set(folder)
        if spec is None:
            print(f"{folder.name}: its labels.csv names fewer than 2 classes or too few scans a class; skipped")
        else:
            sets[folder.name] = spec
    return sets


def discovered_set(folder: Path) -> dict | None:
    """A new user's knowledge of a labelled panel folder, read from its ``labels.csv``
    (``file,label[,split][,group]``, the panel's convention): the healthy class where exactly one
    class is named like one (``pipeline run``'s rule: every other class is screened as abnormal), else
    the rarer class as the abnormal one; 30 labels a class, fewer where a quarter of the smallest
    class outside the test scans is fewer; 3 minutes. None where that leaves under 2 labels a class."""
    from pipeline.io import read_table
    from pipeline.label_columns import name_columns
    from pipeline.labels import SPLIT_NAMES
    from pipeline.stages.run import healthy_looking

    path = folder / "labels.csv"
    try:
        labels = name_columns(read_table(path, "labels file", "file,label[,split][,group]"), path)
    except ValueError as error:
        print(f"{folder.name}: {error}")
        return None
    labels = labels[labels["label"].str.strip() != ""]
    counts = labels["label"].value_counts()
    if len(counts) < 2:
        return None
    in_test = labels["split"].str.lower().map(SPLIT_NAMES) == "test" if "split" in labels else None
    outside_test = (labels[~in_test]["label"].value_counts().reindex(counts.index, fill_value=0)
                    if in_test is not None else counts * 0.8)  # the split's own test draw takes a fifth
    per_class = min(DISCOVERED_LABELS_PER_CLASS, int(outside_test.min()) // 4)
    if per_class < 2:
        return None
    spec = {"scans": str(folder), "labels_per_class": per_class, "minutes": DISCOVERED_MINUTES}
    healthy = healthy_looking(sorted(counts.index))
    if healthy is not None and len(counts) > 2:
        spec["healthy"] = healthy
        why = f"healthy class {healthy!r} (named like one): every other class abnormal"
    elif healthy is not None:
        spec["positive"] = next(name for name in counts.index if name != healthy)
        why = f"abnormal class {spec['positive']!r}: the class other than {healthy!r}, named like the healthy one"
    else:
        spec["positive"] = str(counts.sort_values(kind="stable").index[0])
        why = f"abnormal class {spec['positive']!r}: the rarer class (no class is named like a healthy one)"
    spec["assumed"] = (f"not in real_sets.toml; {why}; {per_class} labels a class; "
                       f"{DISCOVERED_MINUTES:g} minutes")
    return spec


def run_command(spec: dict, method: str, draw: int) -> list[str]:
    """``pipeline run`` of one set's draw as a new user types it, but for the budget: ``train.minutes``, the
    training budget, where a user's ``--minutes`` is the whole command's (since 2026-12-04), so that runs
    of every commit train for as long as the page's earlier ones did.

    The ``key=value`` overrides come last, where a shared plan's (``run_one``) join them: so the command
    also parses on commits before 111da44, whose CLI refused a second run of overrides after an option."""
    screening = ["--healthy", spec["healthy"]] if "healthy" in spec else ["--positive", spec["positive"]]
    command = [sys.executable, "-m", "pipeline", "run", "--scans", spec["scans"], *screening,
               "--labels-per-class", str(spec["labels_per_class"]), "--seed", str(draw), "--quiet",
               f"train.minutes={spec['minutes']}"]
    # Named even for the default SSL method, which the plan trains on masks and volumes but not on 2D
    # pictures (there it trains the mixed baseline): the page compares the two on every set.
    return command + [f"method.name={method}"]


def result_path(name: str, method: str, draw: int, suite: str = SUITE) -> Path:
    return RESULTS / suite / f"{name}__{method}__draw{draw}.json"


def auroc_standard_error(auroc: float, n_positive: int, n_negative: int) -> float:
    """Standard error of one AUROC from its test set's size alone (Hanley & McNeil 1982).

    It says how far a run's test AUROC may move with another test set of the same size: a
    difference between methods well under it cannot be told from one test set.
    """
    if n_positive < 1 or n_negative < 1:
        return float("nan")
    a = float(auroc)
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    variance = (a * (1 - a) + (n_positive - 1) * (q1 - a * a) + (n_negative - 1) * (q2 - a * a))
    return float(np.sqrt(max(variance, 0.0) / (n_positive * n_negative)))


def fill_test_positives(sets: dict[str, dict], runs: Path = Path("runs")) -> None:
    """Add ``n_test_positive`` to results recorded before it was kept, from their run folders
    where these still exist (results are otherwise left as they were written)."""
    for path in sorted((RESULTS / SUITE).glob("*.json")):
        result = json.loads(path.read_text())
        run = runs / result["run"]
        if ("n_test_positive" in result or "positive" not in sets.get(result["set"], {})
                or not (run / "test_predictions.csv").exists()):
            continue
        labels = pd.read_csv(run / "test_predictions.csv")["label"]
        result["n_test_positive"] = int((labels == sets[result["set"]]["positive"]).sum())
        write_json(path, result)


def skip_share(frame: pd.DataFrame, positive: str, calibration: dict) -> tuple[float, float]:
    """Share of test scans (``test_predictions.csv``) below the review band (called healthy, not
    flagged: a reader may skip them), and the share of abnormal test scans among those skipped."""
    screening = calibration["screening"]
    cut = min(screening["review_low"], screening["decision"])
    skipped = frame[f"p_{positive}"] < cut
    missed = float((frame.loc[skipped, "label"] == positive).mean()) if skipped.any() else 0.0
    return float(skipped.mean()), missed


def shared_plan(planned: dict) -> list[str]:
    """A default-method run's planned settings, but for its method's, as ``key=value`` overrides.

    The baseline run of the same draw trains with them, so that both train on the same inputs,
    network, batches and precision: each run's own timing probe, minutes apart, could choose
    another size where the budget sits near a size's step target (on 0391402 one VesselMNIST3D
    draw planned 28^3 for supervised and 24^3 for the Pi-model).
    """
    return [f"{key}={json.dumps(value)}" for key, value in sorted(planned.items()) if not key.startswith("method.")]


def planned_method(plan: dict) -> str | None:
    """The method the plan chose (``plan.json``), where the run named another; None where nothing was planned."""
    entry = plan["settings"].get("method.name")
    return None if entry is None else entry.get("planned", entry["value"])


def run_one(name: str, spec: dict, method: str, draw: int, plan_from: dict | None = None,
            suite: str = SUITE, settings: tuple[str, ...] = ()) -> dict:
    """Train and calibrate one draw of ``name`` with ``method``; store and return its result.
    ``settings``: ``key=value`` overrides after the shared plan's, so they win (a variant's)."""
    command = run_command(spec, method, draw)
    if plan_from is not None:
        command += shared_plan(plan_from["plan"])
    command += list(settings)
    print(f"[{time.strftime('%H:%M:%S')}] {name} {method} draw {draw}: {' '.join(command[2:])}", flush=True)
    tick = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - tick
    if done.returncode != 0:
        raise RuntimeError(f"{name} {method} draw {draw} failed:\n{done.stderr[-3000:]}")
    run = Path(Path("runs/LATEST").read_text().strip())
    summary = json.loads((run / "train_summary.json").read_text())
    calibration = json.loads((run / "calibration.json").read_text())
    plan = json.loads((run / "plan.json").read_text())
    predictions = pd.read_csv(run / "test_predictions.csv")
    positive = calibration["screening"]["positive_class"]  # the joined classes where --healthy named one
    skipped, missed = skip_share(predictions, positive, calibration)
    test = calibration["test"]["screening"]
    # a variant's ``--set train.minutes=M`` trains for M: the budget the run had, not the set's
    minutes = plan["settings"].get("train.minutes", {}).get("value", spec["minutes"])
    result = {
        # the method asked for and trained; the one a new user's run of the set would train
        "set": name, "method": method, "trained_method": summary["method"], "draw": draw, "run": run.name,
        "planned_method": planned_method(plan),
        "test_auroc": test["auroc"], "sensitivity": test["sensitivity"], "specificity": test["specificity"],
        "review_fraction": test["review_fraction"], "skip_fraction": skipped, "abnormal_among_skipped": missed,
        "n_test": calibration["test"]["n"], "n_test_positive": int((predictions["label"] == positive).sum()),
        "steps": summary["steps"], "train_wall_s": summary["wall_seconds"],
        "minutes": minutes, "run_wall_s": round(wall, 1),
        "plan": {k: v["value"] for k, v in plan["settings"].items() if v["set_by"] == "plan"
                 or (plan_from is not None and k in plan_from["plan"])},
        "plan_from": plan_from["run"] if plan_from is not None else None,
        **({"settings": list(settings)} if settings else {}),
        "user": {k: spec[k] for k in ("positive", "healthy", "labels_per_class", "minutes", "assumed") if k in spec},
        "commit": commit(), "machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M"),
        "cpu_load_at_end": round(os.getloadavg()[0], 2),
    }
    write_json(result_path(name, method, draw, suite), result)
    print(f"    test AUROC {result['test_auroc']:.3f}, {result['steps']} steps, training {result['train_wall_s']:.0f} s "
          f"of {minutes * 60:.0f} s, whole run {wall:.0f} s", flush=True)
    return result


def rerun(method: str, names: list[str], sets: dict[str, dict], draws: int) -> None:
    """Re-run ``method``'s stored runs that another commit made, keeping each one's plan, so that a change
    to the method's code is measured against the same draws' other runs without re-running them."""
    here = commit()
    for name in names:
        for draw in range(draws):
            path = result_path(name, method, draw)
            stored = json.loads(path.read_text()) if path.exists() else None
            if stored is not None and stored["commit"] != here:
                run_one(name, sets[name], method, draw, plan_from=stored)
                write_text(HERE / "real.md", build_page(sets))


def paired_interval(differences: np.ndarray) -> tuple[float, float, float]:
    """Mean of paired differences with a two-sided 95% t interval."""
    mean = float(differences.mean())
    if len(differences) < 2:
        return mean, float("nan"), float("nan")
    half = float(stats.t.ppf(0.975, len(differences) - 1) * differences.std(ddof=1) / np.sqrt(len(differences)))
    return mean, mean - half, mean + half


def draws_for_interval(differences: np.ndarray, half_width: float = 0.03, most: int = 1000) -> float:
    """Paired draws at whose number the 95% t interval of the mean difference would be +-``half_width``,
    were the differences as spread as these: how many runs would tell a difference of the bar's size
    from none. NaN from fewer than two differences; ``most`` + 1 where even ``most`` would not."""
    if len(differences) < 2:
        return float("nan")
    sd = float(np.std(differences, ddof=1))
    for n in range(2, most + 1):
        if stats.t.ppf(0.975, n - 1) * sd / np.sqrt(n) <= half_width:
            return float(n)
    return float(most + 1)


def _pm(values: pd.Series, digits: int = 3) -> str:
    if len(values) < 2:
        return f"{values.mean():.{digits}f}"
    return f"{values.mean():.{digits}f} ± {values.std(ddof=1):.{digits}f}"


def _pooled_miss(runs: pd.DataFrame) -> str:
    """Abnormal scans among all the runs' skipped test scans, pooled: a mean of per-run shares would
    let a run that skips one abnormal scan weigh as much as one that skips hundreds."""
    skipped = (runs["skip_fraction"] * runs["n_test"]).round()
    abnormal = (skipped * runs["abnormal_among_skipped"]).round()
    if skipped.sum() == 0:
        return "- (none skipped)"
    return f"{abnormal.sum() / skipped.sum():.1%} ({abnormal.sum():.0f} of {skipped.sum():.0f})"


def _test_set_error(runs: pd.DataFrame) -> str:
    if "n_test_positive" not in runs or runs["n_test_positive"].isna().any():
        return "-"
    errors = [auroc_standard_error(r.test_auroc, int(r.n_test_positive), int(r.n_test - r.n_test_positive))
              for r in runs.itertuples()]
    return f"{np.mean(errors):.3f}"


def _rerun_note(frame: pd.DataFrame) -> list[str]:
    """A sentence per method some of whose runs were re-run (``--rerun``): a re-run's ``plan_from`` names
    an earlier run of its own method, where a first baseline run's names the default method's."""
    if "plan_from" not in frame:
        return []
    lines = []
    default_runs = frame[frame["method"] == DEFAULT_METHOD].set_index(["set", "draw"])["run"]
    first_baseline = [plan_from == default_runs.get((name, draw)) for name, draw, plan_from
                      in zip(frame["set"], frame["draw"], frame["plan_from"])]
    for method in [DEFAULT_METHOD, BASELINE, *sorted(set(frame["method"]) - {DEFAULT_METHOD, BASELINE})]:
        rerun = frame[(frame["method"] == method) & ~pd.Series(first_baseline, index=frame.index)
                      & frame["plan_from"].fillna("").str.contains(f"_{method}_", regex=False)]
        if rerun.empty:
            continue
        per_commit = ", ".join(f"{n} on {c}" for c, n in sorted(Counter(rerun["commit"]).items()))
        lines += [f"`{method}` runs re-run on a later commit ({per_commit}, {rerun['date'].min()} to "
                  f"{rerun['date'].max()}, as `--rerun {method}` does) took the settings their draw's earlier "
                  f"`{method}` run had as overrides, so they keep the inputs, network, augmentation, batches and "
                  f"precision of that draw's other run; the method's settings are planned again by that commit, "
                  f"and the method's code and the machine's speed on the day differ.", ""]
    return lines


def _borrowed_plan_note(frame: pd.DataFrame) -> list[str]:
    """A sentence where default-method runs trained with another method's run's plan (a default adopted
    after the page's runs were made, measured on their draws with ``--into``, as a baseline run is)."""
    if "plan_from" not in frame:
        return []
    runs = frame[(frame["method"] == DEFAULT_METHOD) & frame["plan_from"].notna()]
    lenders = {method: runs[runs["plan_from"].str.contains(f"_{method}_", regex=False)]
               for method in set(frame["method"]) - {DEFAULT_METHOD}}
    return [f"{len(part)} `{DEFAULT_METHOD}` runs ({part['date'].min()} to {part['date'].max()}) took as overrides "
            f"the settings their draw's `{method}` run planned (inputs, network, augmentation, batch sizes, "
            f"precision), as the baseline's runs did, so that all three of a draw train with one plan and "
            f"budget; the `{method}` rows are those runs.\n" for method, part in sorted(lenders.items()) if len(part)]


def _default_runs_with_another(frame: pd.DataFrame, column: str) -> list[tuple[str, pd.DataFrame, str]]:
    """Per set, the default-method runs whose ``column`` names another method, and those methods."""
    if column not in frame:
        return []
    runs = frame[(frame["method"] == DEFAULT_METHOD) & frame[column].notna() & (frame[column] != DEFAULT_METHOD)]
    return [(name, part, ", ".join(sorted(set(part[column])))) for name, part in runs.groupby("set", sort=False)]


def _fallback_note(frame: pd.DataFrame) -> list[str]:
    """A sentence per set some of whose default-method runs the plan trained as another method."""
    return [f"`{name}`: in {len(part)} of its `{DEFAULT_METHOD}` runs the plan trained `{others}` instead (too few "
            "unlabelled scans for the default method), so those draws' paired difference compares two such runs.\n"
            for name, part, others in _default_runs_with_another(frame, "trained_method")]


def _planned_method_note(frame: pd.DataFrame) -> list[str]:
    """A sentence per set whose default-method runs' plans would have trained another method, had the
    runs not named theirs (runs before 2026-12-08 did not record it)."""
    return [f"`{name}`: a new user's run trains `{others}` (the plan's choice in {len(part)} of its "
            f"`{DEFAULT_METHOD}` runs), not the default SSL method.\n"
            for name, part, others in _default_runs_with_another(frame, "planned_method")]


def _baseline_mixup_note(frame: pd.DataFrame) -> list[str]:
    """How many baseline runs mixed their labelled scans (the plan's setting for the baseline since
    mixup was measured for it), so that a page of older runs says it compares against the plain one."""
    key = f"method.{BASELINE}.mixup_alpha"
    runs = frame[frame["method"] == BASELINE]
    if runs.empty:
        return []
    mixed = sum(bool(plan.get(key)) or any(s.startswith(f"{key}=") and float(s.split("=")[1]) > 0
                                            for s in (settings if isinstance(settings, list) else []))
                for plan, settings in zip(runs["plan"], runs.get("settings", pd.Series([None] * len(runs)))))
    note = (f"{mixed or 'None'} of the {len(runs)} `{BASELINE}` runs mixed their labelled scans (`{key}`, which the "
            "plan sets for the baseline on 2D pictures: `benchmarks/real_variants.md`, \"Mixup for the supervised "
            "baseline\")")
    if mixed < len(runs):
        note += (f"; {'the others' if mixed else 'they'} trained on them unmixed, as the plan had them before, so "
                 f"{'their' if mixed else 'these'} paired differences are against the plain baseline")
    return [note + ".\n"]


def build_page(sets: dict[str, dict]) -> str:
    results = [json.loads(p.read_text()) for p in sorted((RESULTS / SUITE).glob("*.json"))]
    if not results:
        return "# Real-data benchmark\n\nNo results yet: run `make bench-real`.\n"
    frame = pd.DataFrame(results)
    rows, diffs = [], []
    for name in [s for s in sets if s in set(frame["set"])]:
        part = frame[frame["set"] == name]
        for method, runs in part.groupby("method", sort=False):
            rows.append({
                "set": name, "method": method, "draws": len(runs),
                "test AUROC (mean ± sd)": _pm(runs["test_auroc"]),
                "sensitivity": _pm(runs["sensitivity"], 2), "specificity": _pm(runs["specificity"], 2),
                "skippable share of test scans": _pm(runs["skip_fraction"], 2),
                "abnormal among skipped": _pooled_miss(runs),
                "steps": f"{runs['steps'].mean():.0f}",
                "training wall s / budget s": f"{runs['train_wall_s'].mean():.0f} / {runs['minutes'].iloc[0] * 60:.0f}",
            })
        pivot = part.pivot_table(index="draw", columns="method", values="test_auroc")
        if {BASELINE, DEFAULT_METHOD} <= set(pivot.columns):
            paired = pivot[[BASELINE, DEFAULT_METHOD]].dropna()
            differences = (paired[DEFAULT_METHOD] - paired[BASELINE]).to_numpy()
            mean, low, high = paired_interval(differences)
            needed = draws_for_interval(differences)
            diffs.append({"set": name, "paired draws": len(paired),
                          f"{DEFAULT_METHOD} - {BASELINE} test AUROC": f"{mean:+.3f}",
                          "95% interval": f"[{low:+.3f}, {high:+.3f}]" if np.isfinite(low) else "(one draw)",
                          "per draw": ", ".join(f"{d:+.3f}" for d in differences),
                          "one run's test-set SE": _test_set_error(part[part["method"] == DEFAULT_METHOD]),
                          "draws for a ±0.03 interval": f"{needed:.0f}" if np.isfinite(needed) else "-",
                          "met +0.03": "yes" if mean >= 0.03 else "no"})
    _figure(frame, sets)
    plans = [{"set": name, **plan_summary(frame[(frame["set"] == name) & (frame["method"] == DEFAULT_METHOD)])}
             for name in sets if name in set(frame["set"])]
    commits = sorted(set(frame["commit"]))
    return "\n".join([
        "# Real-data benchmark: the default SSL method against supervised, as a new user runs it",
        "",
        "Regenerate: `make bench-real` (every set of `benchmarks/real_sets.toml` whose folder exists and every "
        "other folder of `../shared/data` with a `labels.csv`, 3 label draws each; finished runs in "
        "`benchmarks/results/real/` are kept, so it resumes). Each run is "
        "`pipeline run --scans S --positive P --labels-per-class N --seed D train.minutes=M` with no config "
        "(M is the training budget: a user's `--minutes` is the whole command's, ingest to calibration, "
        "which the bench leaves out so that its runs stay comparable across commits; each run's whole wall "
        "time is in its result file as `run_wall_s`); "
        "and `method.name` naming its method (the plan trains the default SSL method where the pool holds "
        f"{MIN_UNLABELLED_FOR_SSL} scans or more, except on 2D pictures, where it trains the mixed baseline); "
        f"`{BASELINE}` runs after `{DEFAULT_METHOD}` in each draw and adds, as "
        f"overrides, the settings `{DEFAULT_METHOD}`'s run planned (inputs, network, augmentation, batch sizes, "
        "precision), so that both train with one plan and budget whatever each run's timing probe saw. "
        "Draw D seeds the split (which scans are labelled) and training.",
        "",
        f"Machine: {frame['machine'].iloc[0]}. Commits: {', '.join(commits)}. "
        f"Dates: {frame['date'].min()} to {frame['date'].max()}.",
        "",
        *_rerun_note(frame),
        *_borrowed_plan_note(frame),
        *[f"`{name}`: {sets[name]['assumed']}.\n" for name in sets if "assumed" in sets[name] and name in set(frame["set"])],
        *_fallback_note(frame),
        *_planned_method_note(frame),
        *_baseline_mixup_note(frame),
        "Sensitivity and specificity are on the test scans at the operating point calibrated for 95% "
        "sensitivity on the calibration scans. *Skippable*: test scans below the review band, called healthy "
        "and not flagged, which a reader could leave to the model; *abnormal among skipped* is the price "
        "(all draws' skipped test scans pooled: abnormal of skipped).",
        "",
        markdown_table(rows),
        "",
        "## Paired difference (same label draws)",
        "",
        markdown_table(diffs) if diffs else "No set has both methods yet.",
        "",
        "*One run's test-set SE*: the standard error of a single test AUROC of the default method from the "
        "size of its test set alone (Hanley & McNeil 1982; mean over draws). Both methods of a draw score the "
        "same test scans, so their paired difference varies less than this, but a set whose SE is above "
        "0.03 cannot show a 0.03 difference reliably in 3 draws. *Draws for a ±0.03 interval*: how many "
        "paired draws, as spread as these, make the 95% interval of the mean difference ±0.03 wide: about as "
        "many as it takes to tell a difference of the bar's size from none.",
        "",
        "## What the plan chose",
        "",
        markdown_table(plans) if plans else "",
        "",
        f"![test AUROC per set and draw]({FIGURE.relative_to(HERE).as_posix()})",
        "",
    ])


PLAN_COLUMNS = {  # column: how to show a run's planned settings
    "spatial size": lambda p: "x".join(map(str, p.get("preprocess.spatial_size", []))),
    "intensity": lambda p: str(p.get("preprocess.intensity", "")),
    "channels": lambda p: str(p.get("preprocess.channels", "")),
    "network": lambda p: str(p.get("network.channels", "")),
    "stem": lambda p: str(p.get("network.stem_stride", "")),
    "batches": lambda p: f"{p.get('train.batch_size', '')} + {p.get('train.unlabelled_batch_size', '')}",
    "precision": lambda p: str(p.get("train.precision", "")),
}


def plan_summary(runs: pd.DataFrame) -> dict[str, str]:
    """What one set's runs (rows with ``draw`` and ``plan``) planned, per column of ``PLAN_COLUMNS``:
    the value where every draw planned the same, else each value with its draws, since a time-based
    plan can choose another size on a slower machine."""
    summary = {}
    for column, show in PLAN_COLUMNS.items():
        draws: dict[str, list[int]] = {}
        for _, run in runs.sort_values("draw").iterrows():
            draws.setdefault(show(run["plan"]), []).append(int(run["draw"]))
        if len(draws) == 1:
            summary[column] = next(iter(draws))
        else:
            summary[column] = "; ".join(f"{value} (draw{'s' if len(d) > 1 else ''} {', '.join(map(str, d))})"
                                        for value, d in draws.items())
    return summary


def _figure(frame: pd.DataFrame, sets: dict[str, dict]) -> None:
    names = [s for s in sets if s in set(frame["set"])]
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.4), squeeze=False)
    for ax, name in zip(axes[0], names):
        part = frame[frame["set"] == name]
        pivot = part.pivot_table(index="draw", columns="method", values="test_auroc")
        methods = [m for m in (BASELINE, DEFAULT_METHOD) if m in pivot.columns]
        for _, row in pivot.iterrows():
            ax.plot(range(len(methods)), [row[m] for m in methods], "o-", color="0.6", alpha=0.8)
        for i, m in enumerate(methods):
            ax.plot(i, pivot[m].mean(), "D", color="C3", markersize=9)
        ax.set_xticks(range(len(methods)), methods)
        ax.set_xlim(-0.4, len(methods) - 0.6)
        ax.set_title(name)
        ax.set_ylabel("test AUROC")
        ax.grid(alpha=0.3)
    fig.suptitle("Test AUROC per label draw (grey, paired) and mean (red)")
    fig.tight_layout()
    FIGURE.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(FIGURE) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", help="comma-separated set names (default: all in real_sets.toml and every other "
                                       "panel folder with a labels.csv)")
    parser.add_argument("--methods", default=f"{BASELINE},{DEFAULT_METHOD}")
    parser.add_argument("--draws", type=int, default=3)
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--into", metavar="FOLDER", default=SUITE,
                        help="store the runs under benchmarks/results/FOLDER and leave real.md alone: a method "
                             "tried against the page's runs, each draw trained with the stored default-method "
                             "run's plan")
    parser.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="settings",
                        help="with --into: a setting every run of the variant gets, over the stored plan's "
                             "(e.g. train.unlabelled_batch_size=32); repeat for more")
    parser.add_argument("--rerun", metavar="METHOD", default="",
                        help="re-run METHOD's stored runs (of --sets, draws below --draws) made on another commit, "
                             "each with its own planned settings as overrides so it keeps its draw's plan")
    args = parser.parse_args(argv)
    sets = load_sets()
    chosen = args.sets.split(",") if args.sets else list(sets)
    unknown = sorted(set(chosen) - set(sets))
    if unknown:
        raise SystemExit(f"unknown set(s) {unknown}; known: {', '.join(sets)}")
    fill_test_positives(sets)
    if args.settings and args.into == SUITE:
        parser.error("--set makes a variant: store its runs apart with --into FOLDER (real.md's runs are the "
                     "plan's own)")
    if malformed := [item for item in args.settings if "=" not in item]:
        parser.error(f"--set takes KEY=VALUE, as `pipeline run` overrides do; got {', '.join(malformed)}")
    if args.into != SUITE:
        for draw in range(args.draws):
            for name in chosen:
                for method in args.methods.split(","):
                    planner = result_path(name, DEFAULT_METHOD, draw)
                    if not result_path(name, method, draw, args.into).exists():
                        run_one(name, sets[name], method, draw,
                                json.loads(planner.read_text()) if planner.exists() else None, args.into,
                                tuple(args.settings))
        return 0
    if args.rerun:
        rerun(args.rerun, chosen, sets, args.draws)
    elif not args.report_only:
        for draw in range(args.draws):
            for name in chosen:
                if not Path(sets[name]["scans"]).is_dir():
                    print(f"{name}: {sets[name]['scans']} is missing; skipped")
                    continue
                # The default method plans first; the others of the draw train with its plan.
                methods = sorted(args.methods.split(","), key=lambda m: m != DEFAULT_METHOD)
                for method in methods:
                    if not result_path(name, method, draw).exists():
                        planner = result_path(name, DEFAULT_METHOD, draw)
                        plan_from = (json.loads(planner.read_text())
                                     if method != DEFAULT_METHOD and planner.exists() else None)
                        run_one(name, sets[name], method, draw, plan_from)
                    write_text(HERE / "real.md", build_page(sets))
    write_text(HERE / "real.md", build_page(sets))
    print(HERE / "real.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
