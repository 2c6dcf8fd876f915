"""Scoring that never loses a scan: kill -9 mid-run, resume, exactly one row per scan;
the HTML review page lists every flagged scan."""

import json
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.stages.score import score

from toy import calibrated_toy_run, toy_images

TOY = ["preprocess.spatial_size=[16,16]", "network.channels=[8,16]", "train.steps=40", "train.eval_every=40",
       "train.threads=1", "calibrate.min_support=3", "method.name=supervised"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return calibrated_toy_run(tmp_path_factory.mktemp("run"), TOY)


def write_folder(folder, n, seed=3):
    folder.mkdir(parents=True, exist_ok=True)
    images, _ = toy_images(n, seed=seed)
    for i, image in enumerate(images):
        Image.fromarray((image[0].numpy() * 255).round().astype(np.uint8)).save(folder / f"s{i:05d}.png")


def test_killed_scoring_resumes_with_exactly_one_row_per_scan(run, tmp_path):
    scans = tmp_path / "scans"
    write_folder(scans, 1500)
    (scans / "broken.png").write_text("no")
    out = tmp_path / "report.csv"
    partial = tmp_path / "report.csv.partial"
    command = [sys.executable, "-m", "pipeline", "score", str(scans), "--model", str(run), "--out", str(out),
               "--chunk-size", "50", "--workers", "1", "--quiet"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until some chunks are on disk, then kill -9
        if partial.exists() and partial.read_text().count("\n") > 150:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not out.exists(), "the run finished before it could be killed; make the folder bigger"
    rows_before = partial.read_text().count("\n") - 1
    assert 0 < rows_before < 1501
    with open(partial, "a") as handle:  # a row cut off mid-write by the kill
        handle.write("s99999.png,/x,a,0.9")
    result = score(scans, run, out=out, resume=True, chunk_size=200, workers=1, progress=False)
    report = pd.read_csv(result, keep_default_na=False)
    assert len(report) == 1501
    assert report["scan_id"].is_unique
    assert set(report["scan_id"]) == {f"s{i:05d}.png" for i in range(1500)} | {"broken.png"}
    assert (report.loc[report["scan_id"] == "broken.png", "status"] == "error").all()
    assert not partial.exists()
    import json

    assert json.loads(out.with_suffix(".meta.json").read_text())["resumed_from"] == rows_before


def test_without_resume_a_leftover_partial_is_discarded(run, tmp_path):
    scans = tmp_path / "scans"
    write_folder(scans, 5)
    out = tmp_path / "r.csv"
    (tmp_path / "r.csv.partial").write_text("scan_id\nstale\n")
    report = pd.read_csv(score(scans, run, out=out, workers=1, progress=False))
    assert len(report) == 5 and "stale" not in set(report["scan_id"])


def test_review_page_lists_flagged_scans_first_with_thumbnails(run, tmp_path):
    scans = tmp_path / "scans"
    write_folder(scans, 30, seed=11)
    (scans / "empty.png").write_bytes(b"")
    out = score(scans, run, out=tmp_path / "r.csv", workers=1, progress=False)
    page = out.with_suffix(".html").read_text()
    report = pd.read_csv(out, keep_default_na=False)
    flagged = report[report["needs_review"].astype(str) == "True"]["scan_id"]
    data = json.loads(re.search(r'<script id="data" type="application/json">(.*?)</script>', page, re.S).group(1))
    order = [row["id"] for row in data["rows"]]
    assert sorted(order) == sorted(report["scan_id"])  # every scan, once
    assert order[0] == "empty.png"  # errors first, then the flagged scans
    assert set(order[1:1 + len(flagged) - 1]) == set(flagged) - {"empty.png"}
    assert len(data["thumbs"]) == 30 and all(v.startswith("iVBOR") for v in data["thumbs"].values())  # PNGs
    assert "http://" not in page and "https://" not in page  # no external assets
