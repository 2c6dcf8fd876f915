"""Resumable training: kill -9 a training process, resume it, and finish with the full step count."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.checkpoint import CheckpointError, load_training_state
from pipeline.cli import main

STEPS = 400


def bar_folder(root: Path, n_per_class: int = 40) -> Path:
    """Two classes as subfolders: a vertical or a horizontal bright bar on noise."""
    rng = np.random.default_rng(0)
    for label in ("vertical", "horizontal"):
        for i in range(n_per_class):
            array = (rng.random((16, 16)) * 80).astype(np.uint8)
            c = 8 + int(rng.integers(-2, 3))
            if label == "vertical":
                array[2:14, c - 1:c + 1] = 230
            else:
                array[c - 1:c + 1, 2:14] = 230
            path = root / label / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(path)
    return root


def train_args(scans: Path, runs: str) -> list[str]:
    return ["--scans", str(scans), "--labels-per-class", "4", "--quiet", "plan=false", f"runs_dir=\"{runs}\"",
            "method.name=pi_model", "method.pi_model.alignment_weight=1.0", "method.pi_model.entropy_weight=0.3",
            "preprocess.spatial_size=[16,16]", "network.channels=[4,8]", "train.batch_size=8",
            "train.unlabelled_batch_size=16", "train.minutes=0", f"train.steps={STEPS}", "train.eval_every=40",
            "train.threads=1", "split.test_fraction=0.25", "train.workers=1"]


def test_kill_9_then_resume_finishes_with_the_full_step_count(tmp_path, monkeypatch):
    scans = bar_folder(tmp_path / "scans")
    monkeypatch.chdir(tmp_path)
    # Uninterrupted, for comparison.
    assert main(["train", *train_args(scans, "runs_whole")]) == 0
    whole = json.loads(next(Path("runs_whole").glob("*/train_summary.json")).read_text())
    assert whole["steps"] == STEPS

    # A slow save cadence would miss the kill; save every ~0.3 s of wall time.
    command = [sys.executable, "-m", "pipeline", "train", *train_args(scans, "runs"), "train.checkpoint_minutes=0.005"]
    child = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        state = None
        while time.time() < deadline and child.poll() is None:
            found = list(Path("runs").glob("*/resume/state.json"))
            if found:
                info = json.loads(found[0].read_text())
                if 0 < info["loop"]["step"] < STEPS * 3 // 4:
                    state = found[0]
                    break
            time.sleep(0.05)
        assert state is not None, f"no resumable state in time: {child.stderr.read() if child.poll() is not None else ''}"
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    finally:
        child.kill()
    run = state.parent.parent
    assert not (run / "train_summary.json").exists()
    saved_step = json.loads(state.read_text())["loop"]["step"]

    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    resumed = json.loads((run / "train_summary.json").read_text())
    assert resumed["steps"] == STEPS and resumed["resumed"] is True
    steps = pd.read_csv(run / "metrics.csv")["step"].tolist()
    assert steps == sorted(set(steps)) and steps[-1] == STEPS  # one curve, no repeated steps
    assert saved_step < STEPS
    print(f"uninterrupted {whole['test_accuracy']:.3f}, killed at step {saved_step}+ and resumed "
          f"{resumed['test_accuracy']:.3f}")
    assert abs(resumed["test_accuracy"] - whole["test_accuracy"]) <= 0.1
    assert not (run / "resume").exists()  # finished: nothing left to resume
    with pytest.raises(CheckpointError, match="no resumable training state"):
        load_training_state(run)


def test_resume_of_a_run_without_a_state_says_why(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "finished").mkdir(parents=True)
    assert main(["train", "--resume", str(tmp_path / "runs" / "finished"), "--quiet"]) == 2
    assert "no resumable training state" in caplog.text
