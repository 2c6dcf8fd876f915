"""Command line: ``pipeline <stage> ...`` (also ``python -m pipeline``)."""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import sys
import time
from pathlib import Path

import pandas as pd

from pipeline.config import ConfigError, load_config


def _add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="TOML config file (default: built-in defaults)")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value",
                        help="override config keys, e.g. method.name=supervised train.steps=500")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    own = parser.add_argument_group("your own data, no config needed (the plan chooses the rest)")
    own.add_argument("--scans", help="folder of scans (sets data.scans)")
    own.add_argument("--labels", help="labels CSV file,label[,split][,group] (default: <scans>/labels.csv, "
                     "else the first-level subfolder names are the classes, or the ones inside first-level "
                     "split folders such as Training/ and Testing/)")
    own.add_argument("--positive", help="the abnormal class of a screening task (data.positive_class); several "
                     "joined by ',' or '+' (benign,malignant) are screened as one abnormal class")
    own.add_argument("--healthy", help="the healthy class of a screening task, instead of --positive: every other "
                     "class is screened as one abnormal class (data.healthy_class)")
    own.add_argument("--minutes", type=float, help="budget of the whole command in minutes of wall time, ingest to "
                     "calibration: training gets what is left (train.run_minutes)")
    own.add_argument("--labels-per-class", type=int,
                     help="label this many scans per class, and as many for calibration; the other "
                          "labelled scans join the unlabelled pool (default: use every label)")
    own.add_argument("--seed", type=int, help="seed of the label draw and of training")
    own.add_argument("--include", metavar="PATTERN", help=INCLUDE_HELP)
    _add_column_arguments(own)
    own.add_argument("--extra-labels", metavar="VERDICTS_CSV",
                     help="verdicts exported from a review page (file,label,verdict,reviewed_at, files relative "
                          "to --scans): merged into a new labels file with each label's provenance, then used")


INCLUDE_HELP = ("only the scans whose path below --scans matches this glob, case and -, _ and space ignored "
                "('*flair*'; a word without wildcards matches any path holding it; several joined by ',', and '!' "
                "before those to leave out: 'flair,!mpr'): one kind of file among several (data.include); score "
                "reads a new folder so")


def _include_of(args) -> str:
    """The scans a run keeps: ``--include``, else ``data.include`` as the config file and overrides set it."""
    from pipeline.config import user_settings

    set_by_user = user_settings(getattr(args, "config", None), getattr(args, "overrides", None) or [])
    return getattr(args, "include", None) or str(set_by_user.get("data", {}).get("include", "") or "")


def _add_column_arguments(parser) -> None:
    for role, what in (("file", "file names"), ("label", "labels"), ("group", "patient (group) ids")):
        parser.add_argument(f"--{role}-column", metavar="NAME",
                            help=f"the labels file's column of {what}, by its name or its number from 1, where "
                                 f"its usual names do not say (data.{role}_column)")


def _named_columns(args) -> dict[str, str]:
    return {role: name for role in ("file", "label", "group") if (name := getattr(args, f"{role}_column", None))}


def _add_resume_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--resume", nargs="?", const="LATEST", metavar="RUN",
                        help="carry on a stopped or killed run from its last resumable state "
                             "(default: the latest run)")


def _report(run_dir) -> int:
    from pipeline import distributed

    if not distributed.launched_as_main():  # torchrun's other processes: rank 0 reports
        return 0
    summary = json.loads((run_dir / "train_summary.json").read_text())
    print(f"run folder: {run_dir}")
    print(f"test accuracy: {summary['test_accuracy']:.4f} ({summary['method']}, {summary['steps']} steps, "
          f"{summary['wall_seconds']:.0f} s training, {summary['n_labelled']} labels)")
    calibration = run_dir / "calibration.json"
    test = json.loads(calibration.read_text()).get("test", {}).get("screening") if calibration.exists() else None
    if test and test.get("auroc") is not None:  # what a screening team reads first
        print(f"screening on {test['n_positive'] + test['n_negative']} test scans: AUROC {test['auroc']:.3f}; at the "
              f"calibrated operating point sensitivity {test['sensitivity']:.3f}, specificity {test['specificity']:.3f}")
    return 0


def own_data_overrides(args) -> tuple[list[str], dict[str, str]]:
    """``section.key=value`` overrides for the ``--scans ...`` options (before the user's own), and
    for the settings these options imply rather than state (the fractions of every label used where
    no ``--labels-per-class`` is given, the manifest's name), why each is so: ``plan.json`` marks
    them ``command line``, not ``user``."""
    from pathlib import Path

    out, implied, implied_overrides = [], {}, set()

    def imply(why: str, *overrides: str) -> None:
        out.extend(overrides)
        implied_overrides.update(overrides)
        implied.update(dict.fromkeys((o.split("=", 1)[0] for o in overrides), why))

    if args.scans:
        scans = Path(args.scans)
        if scans.is_file():
            what = ("an archive of arrays (MedMNIST ships its sets so): save each image as a PNG or NIfTI file, "
                    "or each array with numpy.save as a .npy file, in a folder" if scans.suffix.lower() == ".npz"
                    else "an archive: unpack it" if scans.suffix.lower() in (".zip", ".tar", ".gz", ".tgz", ".7z")
                    else "one scan")
            raise ValueError(f"--scans {scans} is a file, {what}; --scans takes the folder the scans are in")
        if not scans.is_dir():
            raise FileNotFoundError(f"--scans {scans}: no such folder")
        name = scans.resolve().name
        labels_file = Path(args.labels) if args.labels else scans / "labels.csv"
        # An existing manifest is used as it is: one made from another folder of the same name (every
        # set has its train/) or from other labels must not be, so the folder's place and the labels
        # file's content name it (and the splits named after it).
        where = str(scans.resolve()).encode()
        # the scans kept are part of what the manifest lists
        include = _include_of(args)
        include = b"\0include=" + include.encode() if include else b""
        manifest = f"data_manifests/{name}.{hashlib.sha256(where + include).hexdigest()[:8]}.csv"
        if labels_file.is_file():
            # the columns chosen are part of what the labels say
            named = _named_columns(args)
            chosen = json.dumps(named, sort_keys=True).encode() if named else b""
            digest = hashlib.sha256(where + b"\0" + labels_file.read_bytes() + chosen + include).hexdigest()
            manifest = f"data_manifests/{name}.labels-{digest[:8]}.csv"
        # absolute: a run's later stages (calibrate reads DICOM studies' headers) may start elsewhere
        out.append(f"data.scans={json.dumps(str(scans.resolve()))}")
        if getattr(args, "include", None):
            out.append(f"data.include={json.dumps(args.include)}")
        imply("--scans: your own data, named after its folder, with a random draw of labels", f"name={json.dumps(name)}",
              "data.dataset=\"\"", f"data.manifest={json.dumps(manifest)}", "data.split=\"\"",
              "split.selection=\"random\"", "data.classes=[]", "data.healthy_class=\"\"")
        if not getattr(args, "healthy", None):  # with --healthy the plan sets it, from the classes found
            imply("--scans: no abnormal class unless --positive names one", "data.positive_class=\"\"")
        if not args.labels and not (scans / "labels.csv").exists():
            imply("--scans without a labels file: the subfolders are the classes", "data.class_subfolders=true")
        if args.labels_per_class is None:
            imply("--scans without --labels-per-class: every label used, 75% to train, the rest to calibrate",
                  "split.labelled_fraction=0.75", "split.calibration_fraction=0.99")
    if getattr(args, "extra_labels", None):
        if not args.scans:
            raise ValueError("--extra-labels needs --scans: the folder the verdicts' files are relative to")
        from pipeline.verdicts import merge_verdicts

        merged = merge_verdicts(args.scans, args.extra_labels, "data_manifests", labels=args.labels,
                                columns=_named_columns(args))
        logging.getLogger("pipeline").info("verdicts merged into %s", merged)
        stem = merged.name[: -len(".labels.csv")]
        imply("--extra-labels: the labels with the verdicts merged", f"data.labels={json.dumps(str(merged))}",
              "data.class_subfolders=false", f"data.manifest={json.dumps(f'data_manifests/{stem}.csv')}")
    elif args.labels:
        out.append(f"data.labels={json.dumps(args.labels)}")
    if not getattr(args, "extra_labels", None):  # the merged file has the usual columns
        out += [f"data.{role}_column={json.dumps(name)}" for role, name in _named_columns(args).items()]
    if args.positive and getattr(args, "healthy", None):
        raise ValueError("give --positive (the abnormal classes) or --healthy (the healthy class), not both")
    if args.positive:  # "benign,malignant" screens either as abnormal: the classes joined by "+"
        joined = "+".join(part.strip() for part in args.positive.replace("+", ",").split(","))
        out.append(f"data.positive_class={json.dumps(joined)}")
    if getattr(args, "healthy", None):
        out.append(f"data.healthy_class={json.dumps(args.healthy.strip())}")
    if args.minutes is not None:
        out.append(f"train.run_minutes={args.minutes}")
    if args.labels_per_class is not None:
        n = args.labels_per_class
        out += [f"split.labels_per_class={n}", f"split.calibration_per_class={n}"]
        imply(f"--labels-per-class {n}: counts per class, not fractions", "split.labelled_fraction=0.0",
              "split.calibration_fraction=0.0")
    if args.seed is not None:
        out += [f"seed={args.seed}", f"split.seed={args.seed}"]
    # The last word on a key decides: --positive states what --scans had only reset.
    last = {override.split("=", 1)[0]: override for override in out}
    return out, {key: why for key, why in implied.items() if last[key] in implied_overrides}


def _unless_typed(implied: dict[str, str], args) -> dict[str, str]:
    """The implied settings the user did not also type as ``section.key=value``."""
    typed = {override.split("=", 1)[0].strip() for override in args.overrides}
    return {key: why for key, why in implied.items() if key not in typed}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pipeline", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("fetch", help="download a public data set (offline fallbacks included)")
    p.add_argument("dataset", help="data set name (mnist)")
    p.add_argument("--root", default="data")
    p.add_argument("--no-scans", action="store_true", help="do not write the scan folder of PNGs")

    p = sub.add_parser("synth", help="write a synthetic data set (volumes: MRI-like head phantoms)")
    p.add_argument("kind", choices=["volumes"])
    p.add_argument("--n", type=int, required=True, help="number of volumes")
    p.add_argument("--out", required=True, help="folder for the NIfTI files and labels.csv")
    p.add_argument("--abnormal-fraction", type=float, default=0.5)
    p.add_argument("--test-fraction", type=float, default=0.0, help="share of each class marked split=test")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=32, help="field of view in voxels at 1 mm (about)")
    p.add_argument("--quiet", action="store_true")

    p = sub.add_parser("ingest", help="scan folder (+ labels file) -> manifest CSV")
    _add_scans_argument(p)
    p.add_argument("--labels", help="CSV file,label[,split][,group] (default: <scans>/labels.csv)")
    p.add_argument("--class-subfolders", action="store_true", help="label = first-level subfolder name (the second "
                   "level where the first-level folders name splits: Training/, Testing/); the default where "
                   "there is no labels file")
    p.add_argument("--classes", help="comma-separated allowed labels")
    _add_column_arguments(p)
    p.add_argument("--include", metavar="PATTERN", default="", help=INCLUDE_HELP)
    p.add_argument("--name")
    p.add_argument("--out")
    p.add_argument("--workers", type=int, default=2)

    p = sub.add_parser("split", help="manifest -> labelled/unlabelled/calibration/test split file")
    p.add_argument("manifest")
    p.add_argument("--labels-per-class", type=int)
    p.add_argument("--labelled-fraction", type=float)
    p.add_argument("--calibration-per-class", type=int, default=0)
    p.add_argument("--calibration-fraction", type=float)
    p.add_argument("--test-fraction", type=float, default=0.2)
    p.add_argument("--selection", choices=["first", "random"], default="first")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out")

    p = sub.add_parser("train", help="train a model (runs fetch/ingest/split/plan first when their files are "
                       "missing); under 'torchrun --nproc_per_node N -m pipeline train ...' on N processes with DDP")
    _add_config_arguments(p)
    _add_resume_argument(p)

    p = sub.add_parser("plan", help="fingerprint the data and plan every setting the config leaves unset "
                       "(runs ingest and split first when their files are missing)")
    _add_config_arguments(p)
    p.add_argument("--out", help="plan.json path (default: data_manifests/<manifest stem>.plan.json)")
    p.add_argument("--no-probe", action="store_true", help="plan without timing training steps")

    p = sub.add_parser("calibrate", help="temperature scaling and thresholds for a run folder")
    p.add_argument("run", help="run folder (default: the latest run)", nargs="?")

    p = sub.add_parser("check-labels", help="rank a run's labelled and calibration scans by how likely their "
                       "label is wrong (cleanlab on cross-validated predictions); label_issues.csv and .html")
    p.add_argument("run", nargs="?", help="run folder (default: the latest run)")
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds over the labelled scans")
    p.add_argument("--steps", type=int, default=300, help="training steps of each fold's supervised model")

    p = sub.add_parser("suggest", help="the unlabelled scans to label next (uncertain and diverse): "
                       "to_label.csv and a labelling page")
    p.add_argument("run", nargs="?", help="run folder (default: the latest run)")
    p.add_argument("--n", type=int, default=20, help="how many scans (default 20)")
    p.add_argument("--out", help="CSV path (default: <run>/to_label.csv)")

    p = sub.add_parser("score", help="folder of scans -> CSV report")
    _add_scans_argument(p)
    p.add_argument("--model", help="run folder (default: the latest run)")
    p.add_argument("--out", help="report CSV path")
    p.add_argument("--workers", type=int, default=2,
                   help="preprocessing processes (local engine) or Ray actors (ray engine)")
    p.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="local: worker processes on this machine; ray: Ray Data on a Ray cluster "
                        "(needs pip install 'ssl-screening-pipeline[ray]')")
    p.add_argument("--address", help="Ray cluster to connect to (default: start a local one); only with --engine ray")
    p.add_argument("--resume", action="store_true", help="carry on from the rows a killed run left")
    p.add_argument("--chunk-size", type=int, default=512, help="scans scored between two appends")
    p.add_argument("--labels", help="labels file of the scans, to check the predictions against (default: "
                   "<scans>/labels.csv, else class subfolders, where there are)")
    p.add_argument("--quiet", action="store_true")

    p = sub.add_parser("sample", help="PNG grid of images generated by a generative run (vae_m2)")
    p.add_argument("run", help="run folder")
    p.add_argument("--label", required=True, help="class to generate (a class name of the run, or its index)")
    p.add_argument("--n", type=int, default=64, help="number of images (default 64)")
    p.add_argument("--out", help="PNG path (default: <run>/samples_<label>.png)")
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("validate", help="check a folder before any work; list every bad file at once")
    _add_scans_argument(p)
    p.add_argument("--model", help="also check against this run's preprocessing (2D/3D, channels)")
    p.add_argument("--out", help="write the table as CSV")
    p.add_argument("--workers", type=int, default=2)

    p = sub.add_parser("run", help="all stages: fetch, ingest, split, plan, train, calibrate (what 'make train' runs)")
    _add_config_arguments(p)
    _add_resume_argument(p)
    return parser


def process_started() -> float:
    """The ``time.monotonic()`` at which this process started (Linux), else now: a command's budget
    (``--minutes``) counts the interpreter's start and imports too."""
    now = time.monotonic()
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return now
    return now - age if 0 <= age < 3600 else now


def _add_scans_argument(p: argparse.ArgumentParser) -> None:
    """The scan folder, given as ``FOLDER`` or, as ``pipeline run`` takes it, ``--scans FOLDER``."""
    p.add_argument("scans", nargs="?", help="folder of scans (or --scans FOLDER)")
    p.add_argument("--scans", dest="scans_option", metavar="FOLDER", help=argparse.SUPPRESS)


def _resolve_scans(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if not hasattr(args, "scans_option"):
        return
    if args.scans and args.scans_option and args.scans != args.scans_option:
        parser.error(f"two scan folders given, {args.scans} and --scans {args.scans_option}: give one")
    args.scans = args.scans or args.scans_option
    if not args.scans:
        parser.error(f"{args.command} needs the folder of scans: pipeline {args.command} FOLDER")


OVERRIDE = re.compile(r"[A-Za-z_][\w-]*(\.[A-Za-z_][\w-]*)*=")


def parse_arguments(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """The command line, with ``section.key=value`` overrides wherever they stand.

    argparse gives a positional list the first run of them only, so ``run --scans S a.b=1 --seed 0
    c.d=2`` would refuse ``c.d=2``; the later runs join the first, in the order typed (the last wins).
    """
    args, extra = parser.parse_known_args(argv)
    if extra and hasattr(args, "overrides") and all(OVERRIDE.match(token) for token in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: list[str] | None = None) -> int:
    # A command's budget counts from the process's start; called as a function, from the call.
    started = process_started() if argv is None else time.monotonic()
    parser = build_parser()
    args = parse_arguments(parser, argv)
    _resolve_scans(parser, args)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return _dispatch(args, started)
    except (ConfigError, ValueError, FileNotFoundError, RuntimeError) as error:
        logging.getLogger("pipeline").error("%s", error)
        return 2


def _dispatch(args, started: float) -> int:
    from pipeline import distributed
    from pipeline.checkpoint import latest_run
    from pipeline.manifest import manifest_path
    from pipeline.stages import run as workflow

    if args.command == "fetch":
        from pipeline.stages.fetch import fetch, materialise_mnist

        print(fetch(args.dataset, root=args.root))
        if args.dataset == "mnist" and not args.no_scans:
            print(materialise_mnist(args.root))
    elif args.command == "synth":
        from pipeline.synth import generate_volumes

        print(generate_volumes(args.out, args.n, abnormal_fraction=args.abnormal_fraction, seed=args.seed,
                               size=args.size, test_fraction=args.test_fraction, progress=not args.quiet))
    elif args.command == "ingest":
        from pathlib import Path

        from pipeline.stages.ingest import ingest

        # As `pipeline run` does: without a labels file, the subfolders are the classes.
        by_folder = args.class_subfolders or (not args.labels and not (Path(args.scans) / "labels.csv").is_file())
        result = ingest(args.scans, labels=args.labels, out=args.out, name=args.name,
                        classes=args.classes.split(",") if args.classes else None,
                        class_subfolders=by_folder, workers=args.workers, columns=_named_columns(args),
                        include=args.include)
        print(result.manifest_path)
    elif args.command == "split":
        from pipeline.stages.split import make_split

        print(make_split(args.manifest, out=args.out, labels_per_class=args.labels_per_class,
                         labelled_fraction=args.labelled_fraction,
                         calibration_per_class=args.calibration_per_class,
                         calibration_fraction=args.calibration_fraction, test_fraction=args.test_fraction,
                         selection=args.selection, seed=args.seed))
    elif args.command == "plan":
        from pipeline.io import write_json

        own, implied = own_data_overrides(args)
        config, plan = workflow.planned_config(args.config, own + args.overrides, probe=not args.no_probe,
                                               progress=not args.quiet, implied=_unless_typed(implied, args),
                                               started=started)
        out = args.out or manifest_path(config).with_suffix(".plan.json")
        write_json(out, plan)
        for key, entry in plan["settings"].items():
            print(f"{key} = {json.dumps(entry['value'])}  [{entry['set_by']}] {entry.get('reason', '')}")
        print(out)
    elif args.command in ("train", "run") and args.resume:
        if args.config or args.overrides or args.scans:
            raise ValueError("--resume carries on with the run's own config; give no --config, --scans or overrides")
        run = latest_run() if args.resume == "LATEST" else args.resume
        from pipeline.stages.train import resumable_config

        config = resumable_config(run)
        stage = workflow.run_all if args.command == "run" else workflow.train
        run_dir = stage(config, progress=not args.quiet, run_dir=run, resume=True)
        return _report(run_dir)
    elif args.command in ("train", "run"):
        own, implied = own_data_overrides(args)
        overrides = own + args.overrides
        if not distributed.under_torchrun():
            config, plan = workflow.planned_config(args.config, overrides, progress=not args.quiet,
                                                   implied=_unless_typed(implied, args), started=started)
        else:  # every torchrun process would plan (and ingest) at once: the config is used as it is
            config, plan = load_config(args.config, overrides), None
        stage = workflow.run_all if args.command == "run" else workflow.train
        deadline = started + config.train.run_minutes * 60 if config.train.run_minutes > 0 else None
        run_dir = stage(config, progress=not args.quiet, plan=plan, deadline=deadline)
        return _report(run_dir)
    elif args.command == "calibrate":
        from pipeline.stages.calibrate import calibrate

        result = calibrate(args.run or latest_run())
        print(json.dumps({k: v for k, v in result.items() if k != "class_thresholds"}, indent=2))
    elif args.command == "check-labels":
        from pipeline.stages.check_labels import check_labels

        out = check_labels(args.run or latest_run(), folds=args.folds, steps=args.steps)
        issues = pd.read_csv(out)
        for row in issues[issues["is_issue"]].head(20).itertuples(index=False):
            print(f"{row.rank:4d}  {row.scan_id}: labelled {row.given_label}, looks like {row.suggested_label} "
                  f"(quality {row.label_quality:.3f})")
        print(f"{int(issues['is_issue'].sum())} of {len(issues)} labels look wrong; all ranked in {out}")
    elif args.command == "suggest":
        from pipeline.stages.suggest import suggest

        print(suggest(args.run or latest_run(), n=args.n, out=args.out))
    elif args.command == "score":
        from pipeline.stages.score import score

        if args.address and args.engine != "ray":
            raise ValueError("--address names a Ray cluster; use it with --engine ray")
        print(score(args.scans, args.model or latest_run(), out=args.out, workers=args.workers,
                    progress=not args.quiet, resume=args.resume, chunk_size=args.chunk_size,
                    engine=args.engine, address=args.address, labels=args.labels))
    elif args.command == "sample":
        from pipeline.stages.sample import sample

        print(sample(args.run, args.label, n=args.n, out=args.out, seed=args.seed))
    elif args.command == "validate":
        from pipeline.io import write_csv
        from pipeline.stages.validate import validate

        table = validate(args.scans, args.model, workers=args.workers)
        bad = table[table["status"] == "error"]
        for row in bad.itertuples(index=False):
            print(f"{row.file}: {row.reason}")
        skipped = int((table["status"] == "skipped").sum())
        print(f"{len(table)} files, {len(table) - len(bad) - skipped} ok, {len(bad)} bad"
              + (f", {skipped} skipped (masks or metadata beside their scans, the folder's labels file)" if skipped
                 else ""))
        if args.out:
            write_csv(args.out, table)
        return 1 if len(bad) else 0
    return 0
