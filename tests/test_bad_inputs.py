"""Every kind of bad file becomes an error row with a reason; the batch always completes."""

import gzip
import os

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.cli import main
from pipeline.config import load_config
from pipeline.stages.calibrate import calibrate
from pipeline.stages.score import score
from pipeline.stages.validate import validate
from pipeline.trainer import Trainer

from toy import toy_images, toy_training_data

VOLUME = ["preprocess.spatial_size=[8,8,8]", "preprocess.intensity=minmax", "network.channels=[4,8]",
          "train.steps=10", "train.eval_every=10", "train.threads=1", "calibrate.min_support=2",
          "method.name=supervised", "preprocess.max_file_mb=0.05"]


@pytest.fixture(scope="module")
def volume_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("run3d")
    data = toy_training_data(n=200, size=8, dims=3, n_calibration=30, n_test=30)
    Trainer(load_config(None, VOLUME), data, run, progress=False).fit()
    calibrate(run, data=data)
    return run


def save_nifti(path, array):
    nib.save(nib.Nifti1Image(array, np.eye(4)), path)


@pytest.fixture
def hospital_folder(tmp_path):
    """Good volumes plus one of every kind of bad file."""
    folder = tmp_path / "incoming"
    folder.mkdir()
    images, _ = toy_images(4, size=8, dims=3, seed=4)
    for i, image in enumerate(images):
        save_nifti(folder / f"good{i}.nii.gz", image[0].numpy())
    good = (folder / "good0.nii.gz").read_bytes()
    (folder / "truncated.nii.gz").write_bytes(good[: len(good) // 2])
    (folder / "corrupt.nii").write_bytes(b"\x00" * 100 + b"garbage" * 20)
    (folder / "empty.nii.gz").write_bytes(b"")
    (folder / "text.nii.gz").write_bytes(gzip.compress(b"just some text, not a volume"))
    save_nifti(folder / "series4d.nii.gz", np.random.default_rng(0).random((8, 8, 8, 3)).astype(np.float32))
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).save(folder / "flat2d.png")
    jpeg = folder / "photo.jpg"
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).save(jpeg)
    jpeg.write_bytes(jpeg.read_bytes()[:30])
    nan = np.random.default_rng(1).random((8, 8, 8)).astype(np.float32)
    nan[2, 2, 2] = np.nan
    save_nifti(folder / "nan.nii.gz", nan)
    inf = np.random.default_rng(2).random((8, 8, 8)).astype(np.float32)
    inf[1, 1, 1] = np.inf
    save_nifti(folder / "inf.nii.gz", inf)
    save_nifti(folder / "constant.nii.gz", np.full((8, 8, 8), 7, np.float32))
    save_nifti(folder / "huge.nii", np.random.default_rng(3).random((40, 40, 40)).astype(np.float32))  # 256 kB
    os.symlink(folder / "loop_b.nii.gz", folder / "loop_a.nii.gz")
    os.symlink(folder / "loop_a.nii.gz", folder / "loop_b.nii.gz")
    (folder / "locked.nii.gz").write_bytes(good)
    os.chmod(folder / "locked.nii.gz", 0)
    (folder / "=cmd|calc.nii.gz").write_bytes(good)
    return folder


EXPECTED = {
    "truncated.nii.gz": "cannot decode", "corrupt.nii": "cannot decode", "empty.nii.gz": "empty",
    "text.nii.gz": "cannot decode", "series4d.nii.gz": "3 volumes in one file (channels); this model takes 1", "flat2d.png": "2D image",
    "photo.jpg": "cannot decode", "nan.nii.gz": "NaN", "inf.nii.gz": "infinite",
    "constant.nii.gz": "constant", "huge.nii": "size limit", "loop_a.nii.gz": "link loop",
    "loop_b.nii.gz": "link loop", "locked.nii.gz": "permission denied",
}


@pytest.fixture
def unreadable(monkeypatch):
    """Root reads every file whatever its mode, so present 'locked' as unreadable."""
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, *a, **k: False if "locked" in str(p) else real(p, mode, *a, **k))


def test_score_gives_every_bad_file_an_error_row_and_scores_the_rest(volume_run, hospital_folder, tmp_path,
                                                                    unreadable):
    out = score(hospital_folder, volume_run, out=tmp_path / "r.csv", workers=1, progress=False)
    report = pd.read_csv(out, keep_default_na=False).set_index("scan_id")
    assert len(report) == 4 + len(EXPECTED) + 1
    for name, reason in EXPECTED.items():
        assert report.loc[name, "status"] == "error", name
        assert reason in report.loc[name, "error"], (name, report.loc[name, "error"])
    good = [f"good{i}.nii.gz" for i in range(4)] + ["'=cmd|calc.nii.gz"]
    assert (report.loc[good, "status"] == "ok").all()


def test_validate_lists_every_bad_file_at_once(volume_run, hospital_folder, unreadable):
    table = validate(hospital_folder, volume_run, workers=1, progress=False).set_index("file")
    bad = set(table.index[table["status"] == "error"])
    assert bad == set(EXPECTED)
    without_model = validate(hospital_folder, None).set_index("file")
    # Without a model the dimensionality checks cannot apply; the rest still do.
    assert set(EXPECTED) - {"series4d.nii.gz", "flat2d.png", "huge.nii"} <= set(
        without_model.index[without_model["status"] == "error"])


def test_validate_command_exits_non_zero_and_prints_each_file(hospital_folder, capsys, unreadable):
    assert main(["validate", str(hospital_folder)]) == 1
    printed = capsys.readouterr().out
    assert "constant.nii.gz: constant image" in printed and "empty.nii.gz: empty" in printed


def test_a_scan_given_where_a_folder_is_read_says_so(volume_run, hospital_folder, tmp_path, caplog):
    scan = hospital_folder / "good0.nii.gz"
    with pytest.raises(FileNotFoundError, match="good0.nii.gz is a file: the stages read a folder of scans"):
        score(scan, volume_run, out=tmp_path / "r.csv", workers=1, progress=False)
    assert main(["validate", str(scan)]) != 0 and "give the folder it is in" in caplog.text
    assert not (tmp_path / "r.csv").exists()


def test_a_2d_model_refuses_volumes(tmp_path):
    from pipeline.config import PreprocessConfig
    from pipeline.data import preprocess_paths

    save_nifti(tmp_path / "v.nii.gz", np.random.default_rng(0).random((8, 8, 8)).astype(np.float32))
    _, errors = preprocess_paths([str(tmp_path / "v.nii.gz")], PreprocessConfig(spatial_size=[8, 8]), workers=1,
                                 progress=False)
    assert "3D volume given to a 2D model" in errors[0]
