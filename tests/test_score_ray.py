"""Scoring on Ray (a local instance, 2 CPUs, 2 actors) gives the local engine's report row for row."""

import json
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.score_ray import import_ray
from pipeline.stages.score import score

from toy import calibrated_toy_run, toy_images

TOY = ["preprocess.spatial_size=[16,16]", "network.channels=[8,16]", "train.steps=20", "train.eval_every=20",
       "train.threads=1", "calibrate.min_support=3", "calibrate.bootstrap=0", "method.name=supervised"]


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return calibrated_toy_run(tmp_path_factory.mktemp("run"), TOY)


def test_ray_engine_writes_the_local_report(local_ray, run, tmp_path):
    scans = tmp_path / "scans"
    (scans / "sub").mkdir(parents=True)
    images, _ = toy_images(10, seed=4)
    for i, image in enumerate(images):
        folder = scans / "sub" if i % 3 == 0 else scans
        Image.fromarray((image[0].numpy() * 255).round().astype(np.uint8)).save(folder / f"s{i:02d}.png")
    (scans / "empty.png").write_bytes(b"")
    (scans / "notes.txt").write_text("not a scan\n")

    local = score(scans, run, out=tmp_path / "local.csv", workers=1, progress=False)
    on_ray = score(scans, run, out=tmp_path / "ray.csv", workers=2, progress=False, engine="ray")

    expected = pd.read_csv(local, keep_default_na=False)
    got = pd.read_csv(on_ray, keep_default_na=False)
    assert list(got.columns) == list(expected.columns)
    assert len(got) == len(expected) == 12
    text = ["scan_id", "path", "prediction", "needs_review", "status", "error"]
    pd.testing.assert_frame_equal(got[text], expected[text])
    numbers = [c for c in expected.columns if c == "confidence" or c.startswith("p_")]
    ok = expected["status"] == "ok"
    assert ok.sum() == 10 and set(expected.loc[~ok, "scan_id"]) == {"empty.png", "notes.txt"}
    np.testing.assert_allclose(got.loc[ok, numbers].astype(float), expected.loc[ok, numbers].astype(float),
                               rtol=1e-5, atol=1e-6)
    assert (got.loc[~ok, numbers] == "").all().all()
    for suffix in (".meta.json", ".summary.txt", ".html"):
        assert on_ray.with_suffix(suffix).stat().st_size > 0
    meta = json.loads(on_ray.with_suffix(".meta.json").read_text())
    assert meta["engine"] == "ray"
    def counts(summary: dict) -> dict:  # what was found, not how long the saliency maps took
        return {k: v for k, v in summary.items() if not k.endswith("_seconds")}

    assert counts(meta["summary"]) == counts(json.loads(local.with_suffix(".meta.json").read_text())["summary"])
    assert local_ray.is_initialized()  # the engine used the test's instance and left it running


def test_missing_ray_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what an environment without the extra sees
    with pytest.raises(RuntimeError, match=r"pip install 'ssl-screening-pipeline\[ray\]'"):
        import_ray()
