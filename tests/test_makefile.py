"""The Makefile's own-data and loop targets give the pipeline commands they say (dry runs, nothing trained)."""

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from pipeline.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def pipeline_command(*make_args: str) -> list[str]:
    """The pipeline command line ``make -n`` prints for ``make_args``, as arguments."""
    # the stamp is made new so that make prints no set-up steps
    printed = subprocess.run(["make", "-n", "-o", ".venv/.installed", *make_args], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout
    line = next(line for line in printed.splitlines() if "/pipeline " in line)
    return shlex.split(line)[1:]


def test_make_train_with_verdicts_retrains_with_them_and_make_suggest_names_the_run():
    argv = pipeline_command("train", "SCANS=my scans", "HEALTHY=no finding", "VERDICTS=verdicts.csv", "MINUTES=2")
    args = build_parser().parse_args(argv)
    assert (args.scans, args.healthy, args.extra_labels, args.minutes) == ("my scans", "no finding", "verdicts.csv", 2)
    args = build_parser().parse_args(pipeline_command("suggest", "MODEL=runs/a run", "N=5"))
    assert (args.command, args.run, args.n) == ("suggest", "runs/a run", 5)
    args = build_parser().parse_args(pipeline_command("suggest"))
    assert args.run is None and args.n == 20  # the latest run
