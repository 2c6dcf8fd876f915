"""The review page opens in headless Chromium from disk, with no console errors, and shows
every flagged scan. CI installs Debian's chromium (.ci/run) and sets REQUIRE_BROWSER=1."""

import os
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.config import load_config
from pipeline.stages.calibrate import calibrate
from pipeline.stages.score import score
from pipeline.trainer import Trainer

from toy import toy_images, toy_training_data

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-logging=stderr", "--v=0"]


@pytest.fixture
def browser():
    if CHROMIUM is None:
        if os.environ.get("REQUIRE_BROWSER"):
            pytest.fail("REQUIRE_BROWSER is set but no chromium binary is on PATH")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return CHROMIUM


def test_review_page_loads_without_console_errors_and_shows_flagged_scans(browser, tmp_path):
    data = toy_training_data()
    run = tmp_path / "run"
    config = load_config(None, ["preprocess.spatial_size=[16,16]", "network.channels=[8,16]", "train.steps=15",
                                "train.eval_every=15", "train.threads=1", "calibrate.min_support=3"])
    Trainer(config, data, run, progress=False).fit()
    calibrate(run, data=data)
    scans = tmp_path / "scans"
    scans.mkdir()
    images, _ = toy_images(25, seed=21)
    for i, image in enumerate(images):
        Image.fromarray((image[0].numpy() * 255).round().astype(np.uint8)).save(scans / f"s{i:02d}.png")
    (scans / "broken.png").write_text("x")
    out = score(scans, run, out=tmp_path / "report.csv", workers=1, progress=False)
    page = out.with_suffix(".html")
    result = subprocess.run([browser, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
                             page.as_uri()], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    dom = result.stdout
    console_errors = [line for line in result.stderr.splitlines()
                      if "CONSOLE" in line and re.search(r"error|uncaught", line, re.I)]
    assert not console_errors, console_errors
    report = pd.read_csv(out, keep_default_na=False)
    flagged = report.loc[report["needs_review"].astype(str) == "True", "scan_id"]
    assert len(flagged) >= 1  # the broken file at least
    for scan_id in flagged:
        assert f">{scan_id}<" in dom, scan_id
    assert dom.count("<img") == 25
    shot = tmp_path / "page.png"
    subprocess.run([browser, *FLAGS, f"--user-data-dir={tmp_path / 'profile2'}", f"--screenshot={shot}",
                    "--window-size=1000,800", page.as_uri()], capture_output=True, timeout=120, check=True)
    assert shot.stat().st_size > 5000
