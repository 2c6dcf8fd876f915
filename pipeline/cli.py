"""Command line: ``pipeline <stage> ...`` (also ``python -m pipeline``)."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from pipeline.config import ConfigError, load_config


def _add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="TOML config file (default: built-in defaults)")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value",
                        help="override config keys, e.g. method.name=supervised train.steps=500")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pipeline", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("fetch", help="download a public data set (offline fallbacks included)")
    p.add_argument("dataset", help="data set name (mnist)")
    p.add_argument("--root", default="data")
    p.add_argument("--no-scans", action="store_true", help="do not write the scan folder of PNGs")

    p = sub.add_parser("ingest", help="scan folder (+ labels file) -> manifest CSV")
    p.add_argument("scans")
    p.add_argument("--labels", help="CSV file,label[,split][,group] (default: <scans>/labels.csv)")
    p.add_argument("--class-subfolders", action="store_true", help="label = first-level subfolder name")
    p.add_argument("--classes", help="comma-separated allowed labels")
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

    p = sub.add_parser("train", help="train a model (runs fetch/ingest/split first when their files are missing)")
    _add_config_arguments(p)

    p = sub.add_parser("calibrate", help="temperature scaling and thresholds for a run folder")
    p.add_argument("run", help="run folder (default: the latest run)", nargs="?")

    p = sub.add_parser("score", help="folder of scans -> CSV report")
    p.add_argument("scans")
    p.add_argument("--model", help="run folder (default: the latest run)")
    p.add_argument("--out", help="report CSV path")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--quiet", action="store_true")

    p = sub.add_parser("run", help="all stages: fetch, ingest, split, train, calibrate (what 'make train' runs)")
    _add_config_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return _dispatch(args)
    except (ConfigError, ValueError, FileNotFoundError, RuntimeError) as error:
        logging.getLogger("pipeline").error("%s", error)
        return 2


def _dispatch(args) -> int:
    from pipeline import workflow

    if args.command == "fetch":
        from pipeline.fetch import fetch, materialise_mnist

        print(fetch(args.dataset, root=args.root))
        if args.dataset == "mnist" and not args.no_scans:
            print(materialise_mnist(args.root))
    elif args.command == "ingest":
        from pipeline.ingest import ingest

        result = ingest(args.scans, labels=args.labels, out=args.out, name=args.name,
                        classes=args.classes.split(",") if args.classes else None,
                        class_subfolders=args.class_subfolders, workers=args.workers)
        print(result.manifest_path)
    elif args.command == "split":
        from pipeline.split import make_split

        print(make_split(args.manifest, out=args.out, labels_per_class=args.labels_per_class,
                         labelled_fraction=args.labelled_fraction,
                         calibration_per_class=args.calibration_per_class,
                         calibration_fraction=args.calibration_fraction, test_fraction=args.test_fraction,
                         selection=args.selection, seed=args.seed))
    elif args.command in ("train", "run"):
        config = load_config(args.config, args.overrides)
        stage = workflow.run_all if args.command == "run" else workflow.train_stage
        run_dir = stage(config, progress=not args.quiet)
        summary = json.loads((run_dir / "train_summary.json").read_text())
        print(f"run folder: {run_dir}")
        print(f"test accuracy: {summary['test_accuracy']:.4f} ({summary['method']}, "
              f"{summary['train_seconds']:.0f} s training, {summary['n_labelled']} labels)")
    elif args.command == "calibrate":
        from pipeline.calibrate import calibrate

        result = calibrate(args.run or workflow.latest_run())
        print(json.dumps({k: v for k, v in result.items() if k != "class_thresholds"}, indent=2))
    elif args.command == "score":
        from pipeline.score import score

        print(score(args.scans, args.model or workflow.latest_run(), out=args.out, workers=args.workers,
                    progress=not args.quiet))
    return 0
