"""3D volumes: the synthetic MRI-like generator, volume preprocessing (orientation,
spacing, scaled int16, 4D singleton), and all stages on tiny synthetic volumes."""

import json
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.augment import BatchAugmenter
from pipeline.cli import main
from pipeline.config import AugmentConfig, PreprocessConfig, load_config
from pipeline.data import build_preprocess, cache_key, preprocess_paths
from pipeline.synth import generate_volumes, make_volume, paint_lesion

REPO = Path(__file__).resolve().parent.parent
ADRENAL = REPO.parent / "shared" / "data" / "adrenalmnist3d"
VOLUME = PreprocessConfig(spatial_size=[16, 16, 16], intensity="percentile", target_spacing=[1.0, 1.0, 1.0])


def test_generator_is_deterministic_and_writes_varied_valid_nifti(tmp_path):
    first = generate_volumes(tmp_path / "a", 12, seed=3, size=16, test_fraction=0.25, progress=False)
    second = generate_volumes(tmp_path / "b", 12, seed=3, size=16, test_fraction=0.25, progress=False)
    other = generate_volumes(tmp_path / "c", 12, seed=4, size=16, progress=False)
    labels = pd.read_csv(first)
    assert list(labels.columns) == ["file", "label", "split"]
    assert labels["label"].value_counts().to_dict() == {"healthy": 6, "abnormal": 6}
    assert (labels.groupby("label")["split"].apply(lambda s: (s == "test").sum()) == 2).all()
    assert labels.equals(pd.read_csv(second))
    codes, spacings, dtypes, slopes = set(), set(), set(), []
    for name in labels["file"]:
        a, b = nib.load(first.parent / name), nib.load(second.parent / name)
        assert np.asarray(a.dataobj.get_unscaled()).tobytes() == np.asarray(b.dataobj.get_unscaled()).tobytes()
        assert np.array_equal(a.affine, b.affine)
        assert not np.array_equal(a.get_fdata(), nib.load(other.parent / name).get_fdata()) or a.shape != nib.load(
            other.parent / name).shape
        codes.add("".join(nib.aff2axcodes(a.affine)))
        spacings.add(tuple(float(v) for v in a.header.get_zooms()))
        dtypes.add(str(a.get_data_dtype()))
        if a.get_data_dtype() == np.int16:
            slopes.append(a.dataobj.slope)
        assert a.ndim == 3 and np.isfinite(a.get_fdata()).all()
    truth = pd.read_csv(first.parent / "truth.csv")
    assert (truth.loc[truth["label"] == "abnormal", "lesions"].between(1, 3)).all()
    assert (truth.loc[truth["label"] == "healthy", "lesions"] == 0).all()
    assert (truth["hyper_lesions"] + truth["hypo_lesions"] == truth["lesions"]).all()
    assert (truth["subtle_lesions"] <= truth["lesions"]).all()
    factors = truth["lesion_contrasts"].dropna().astype(str).str.split(";").explode().astype(float)
    assert len(factors) == truth["lesions"].sum() and ((factors >= 0.25) & (factors <= 2.1) & (factors != 1)).all()
    assert len(codes) >= 2 and len(spacings) >= 2 and dtypes == {"int16", "float32"}
    assert slopes and all(s != 1.0 for s in slopes)


def test_hyper_intense_lesion_is_brighter_than_white_matter_and_hypo_darkens():
    white, grey, csf = 0.8, 0.52, 0.22
    tissue = np.array([white, grey, csf, white], dtype=np.float32)
    mask = np.array([1.0, 1.0, 1.0, 0.0], dtype=np.float32)  # the last voxel lies outside the lesion
    hyper = paint_lesion(tissue, mask, 1.6, white)
    # inside: brighter than white matter wherever it lies (generator v2 left white matter unchanged)
    assert np.allclose(hyper[:3], 1.6 * white) and hyper[3] == white
    hypo = paint_lesion(tissue, mask, 0.5, white)
    assert np.allclose(hypo[:3], 0.5 * tissue[:3]) and hypo[3] == white
    soft = paint_lesion(tissue, mask * 0.5, 1.6, white)  # the soft lesion edge blends
    assert np.allclose(soft[:3], 0.5 * tissue[:3] + 0.5 * 1.6 * white)


def test_cli_synth_volumes(tmp_path):
    assert main(["synth", "volumes", "--n", "4", "--out", str(tmp_path / "v"), "--size", "12", "--quiet"]) == 0
    assert len(list((tmp_path / "v").glob("*.nii.gz"))) == 4


def test_global_intensity_statistics_are_near_chance(tmp_path):
    """A logistic regression on global statistics must not solve the task (AUROC < 0.65)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    labels = pd.read_csv(generate_volumes(tmp_path, 240, seed=1, size=24, progress=False))
    config = PreprocessConfig(spatial_size=[24, 24, 24], intensity="percentile", target_spacing=[1.0, 1.0, 1.0])
    arrays, errors = preprocess_paths([str(tmp_path / f) for f in labels["file"]], config, workers=1, progress=False)
    assert not any(errors)
    x = np.stack(arrays).reshape(len(arrays), -1)
    features = np.column_stack([x.mean(1), x.std(1), *np.percentile(x, [1, 5, 25, 50, 75, 95, 99], axis=1),
                                (x > 0.5).mean(1)])
    y = (labels["label"] == "abnormal").to_numpy().astype(int)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    p = cross_val_predict(model, features, y, cv=5, method="predict_proba")[:, 1]
    auroc = roc_auc_score(y, p)
    print(f"global-statistics AUROC {auroc:.3f}")
    assert auroc < 0.65


def _save(path, data, affine, slope=None, inter=None):
    image = nib.Nifti1Image(data, affine, dtype=data.dtype)
    if slope is not None:
        image.header.set_slope_inter(slope, inter)
    nib.save(image, path)
    return str(path)


def test_ras_and_lps_copies_of_one_object_preprocess_identically(tmp_path):
    volume = make_volume(np.random.default_rng(7), size=16, abnormal=True, orientation="RAS",
                         spacing=(1.0, 1.0, 1.0), dtype="float32")
    ras = volume.data
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[:2, 3] = np.array(ras.shape[:2]) - 1  # voxel i of the LPS copy is voxel n-1-i of the RAS one
    lps_affine = volume.affine @ flip
    lps = np.ascontiguousarray(ras[::-1, ::-1, :])
    assert nib.aff2axcodes(lps_affine) == ("L", "P", "S")
    a = _save(tmp_path / "ras.nii.gz", ras, volume.affine)
    b = _save(tmp_path / "lps.nii.gz", lps, lps_affine)
    transform = build_preprocess(VOLUME)
    out_a, out_b = transform({"image": a})["image"], transform({"image": b})["image"]
    assert out_a.shape == (1, 16, 16, 16)
    assert torch.allclose(out_a, out_b, atol=1e-5)
    # without reorientation the two differ, so the test above means something
    raw = build_preprocess(PreprocessConfig(spatial_size=[16, 16, 16], intensity="percentile", orientation=""))
    assert not torch.allclose(raw({"image": a})["image"], raw({"image": b})["image"], atol=1e-3)


def test_anisotropic_spacing_is_resampled_to_the_target(tmp_path):
    rng_state = 11
    kwargs = dict(size=16, orientation="RAS", dtype="float32", field_of_view=(18.0, 18.0, 18.0))
    fine = make_volume(np.random.default_rng(rng_state), spacing=(1.0, 1.0, 1.0), **kwargs)
    coarse = make_volume(np.random.default_rng(rng_state), spacing=(1.0, 1.0, 2.0), **kwargs)
    assert coarse.data.shape == (18, 18, 9)
    a = _save(tmp_path / "fine.nii.gz", fine.data, fine.affine)
    b = _save(tmp_path / "coarse.nii.gz", coarse.data, coarse.affine)
    transform = build_preprocess(VOLUME)
    out_a, out_b = transform({"image": a})["image"], transform({"image": b})["image"]
    assert out_b.shape == (1, 16, 16, 16)
    correlation = np.corrcoef(out_a.flatten().numpy(), out_b.flatten().numpy())[0, 1]
    assert correlation > 0.85, correlation
    # no resampling: the 2 mm axis keeps half the voxels (padded), far from the fine copy
    plain = build_preprocess(PreprocessConfig(spatial_size=[16, 16, 16], intensity="percentile"))
    squashed = plain({"image": b})["image"]
    assert np.corrcoef(out_a.flatten().numpy(), squashed.flatten().numpy())[0, 1] < correlation - 0.15


def test_int16_with_scale_slope_is_read_scaled(tmp_path):
    stored = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    path = _save(tmp_path / "s.nii.gz", stored, np.eye(4), slope=0.5, inter=10.0)
    assert nib.load(path).dataobj.slope == 0.5  # nibabel kept the scaling on save
    config = PreprocessConfig(spatial_size=[4, 5, 6], intensity="range", intensity_range=[0.0, 100.0])
    image = build_preprocess(config)({"image": path})["image"]
    expected = (stored.astype(np.float32) * 0.5 + 10.0) / 100.0
    assert torch.allclose(image[0], torch.from_numpy(expected), atol=1e-6)


def test_4d_file_with_singleton_last_axis_and_lps_affine(tmp_path):
    volume = np.random.default_rng(0).random((6, 7, 8)).astype(np.float32)
    affine = np.diag([-2.0, -1.0, 1.0, 1.0])
    a = _save(tmp_path / "v4.nii.gz", volume[..., None], affine)
    b = _save(tmp_path / "v3.nii.gz", volume, affine)
    config = PreprocessConfig(spatial_size=[12, 7, 8], intensity="minmax", target_spacing=[1.0, 1.0, 1.0])
    transform = build_preprocess(config)
    out_a, out_b = transform({"image": a})["image"], transform({"image": b})["image"]
    assert out_a.shape == (1, 12, 7, 8) and torch.equal(out_a, out_b)


def test_a_file_of_several_sequences_is_one_scan_of_a_channel_each_scaled_on_its_own(tmp_path):
    rng = np.random.default_rng(0)
    # FLAIR-like in hundreds, ADC-like in thousands: scaled together, the first would be near 0 throughout
    sequences = np.stack([rng.normal(300, 50, (10, 12, 8)), rng.normal(3000, 500, (10, 12, 8))], axis=-1)
    path = _save(tmp_path / "BRATS_001.nii.gz", sequences.astype(np.float32), np.diag([1.0, 1.0, 2.0, 1.0]))
    config = PreprocessConfig(spatial_size=[10, 12, 16], intensity="percentile", target_spacing=[1.0, 1.0, 1.0],
                              channels=2)
    image = build_preprocess(config)({"image": path})["image"]
    assert image.shape == (2, 10, 12, 16)
    for channel in image:
        assert 0.4 < float(channel.mean()) < 0.6 and float(channel.max()) == 1.0
    (one,), (error,) = preprocess_paths([_save(tmp_path / "t1.nii.gz", sequences[..., 0].astype(np.float32),
                                                np.eye(4))], config, workers=1, progress=False)
    assert one is None and error == ("has 1 channels, the model expects 2 (a file of that many volumes: its sequences "
                                     "as channels)")
    _, (error,) = preprocess_paths([path], PreprocessConfig(spatial_size=[8, 8, 8], channels=1), workers=1,
                                   progress=False)
    assert error.startswith("2 volumes in one file (channels); this model takes 1 a scan")  # never averaged


def test_a_file_of_many_time_points_is_refused_at_ingest_naming_it(tmp_path):
    from pipeline.stages.ingest import ingest

    (tmp_path / "scans").mkdir()
    _save(tmp_path / "scans" / "fmri.nii.gz", np.random.default_rng(0).random((8, 8, 6, 40)).astype(np.float32),
          np.eye(4))
    _save(tmp_path / "scans" / "t1.nii.gz", np.random.default_rng(1).random((8, 8, 6)).astype(np.float32), np.eye(4))
    rows = ingest(tmp_path / "scans", out=tmp_path / "m.csv", workers=1).manifest.set_index("scan_id")
    assert rows.loc["fmri.nii.gz", "error"].startswith("40 volumes in one file (time points or diffusion directions?)")
    assert rows.loc["t1.nii.gz", "status"] == "ok"


def test_new_keys_leave_2d_cache_keys_unchanged():
    frame = pd.DataFrame({"scan_id": ["a"], "sha256": ["x"]})
    plain = PreprocessConfig()
    assert cache_key(frame, plain) == cache_key(frame, PreprocessConfig(orientation="", target_spacing=[2.0] * 3))
    volume = PreprocessConfig(spatial_size=[8, 8, 8])
    assert cache_key(frame, volume) != cache_key(frame, PreprocessConfig(spatial_size=[8, 8, 8], orientation=""))


def test_strong_3d_augmentation_adds_bias_and_gamma_but_2d_is_unchanged():
    images = torch.rand(3, 1, 8, 8, 8)
    plain = AugmentConfig(strong_bias_field=0.0, strong_gamma=0.0)
    a = BatchAugmenter(AugmentConfig(), 3, seed=0).strong(images)
    b = BatchAugmenter(plain, 3, seed=0).strong(images)
    assert a.shape == images.shape and torch.isfinite(a).all() and not torch.allclose(a, b)
    flat = torch.rand(3, 1, 8, 8)
    assert torch.equal(BatchAugmenter(AugmentConfig(), 2, seed=0).strong(flat),
                       BatchAugmenter(plain, 2, seed=0).strong(flat))


def test_shipped_configs_load():
    for name in ("volumes", "pneumoniamnist", "adrenalmnist3d"):
        config = load_config(REPO / "configs" / f"{name}.toml")
        assert config.data.positive_class in config.data.classes


def test_all_stages_on_tiny_synthetic_volumes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    scans = tmp_path / "vols"
    assert main(["synth", "volumes", "--n", "60", "--out", str(scans), "--size", "16", "--test-fraction", "0.2",
                 "--seed", "5", "--quiet"]) == 0
    assert main(["ingest", str(scans)]) == 0
    manifest = tmp_path / "data_manifests" / "vols.csv"
    assert (pd.read_csv(manifest, dtype=str)["status"] == "ok").all()
    overrides = [f"data.scans={scans}", f"data.manifest={manifest}", "data.dataset=", "data.split=",
                 "split.labels_per_class=5", "split.calibration_per_class=5", "preprocess.spatial_size=[16,16,16]",
                 "network.channels=[4,8]", "train.steps=6", "train.minutes=0", "train.eval_every=3", "train.batch_size=8",
                 "train.unlabelled_batch_size=8", "train.workers=1", "calibrate.min_support=1", "--quiet"]
    config = REPO / "configs" / "volumes.toml"
    assert main(["run", "--config", str(config), "method.name=supervised", *overrides]) == 0
    assert main(["run", "--config", str(config), "method.name=self_training",
                 "method.self_training.rounds=2", *overrides]) == 0
    run = Path((tmp_path / "runs" / "LATEST").read_text().strip())
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["n_test"] == 12 and summary["method"] == "self_training"
    assert (run / "calibration.json").exists()

    incoming = tmp_path / "incoming"
    generate_volumes(incoming, 4, seed=99, size=16, progress=False)
    (incoming / "labels.csv").unlink()
    (incoming / "truth.csv").unlink()
    (incoming / "generator.json").unlink()
    good = (incoming / "vol_00000.nii.gz").read_bytes()
    (incoming / "broken.nii.gz").write_bytes(good[: len(good) // 3])
    out = tmp_path / "report.csv"
    assert main(["score", str(incoming), "--out", str(out), "--quiet"]) == 0
    report = pd.read_csv(out, keep_default_na=False)
    assert len(report) == 5
    assert report.loc[report["status"] == "error", "scan_id"].tolist() == ["broken.nii.gz"]
    assert {"p_healthy", "p_abnormal"} <= set(report.columns)


@pytest.mark.skipif(not (ADRENAL / "labels.csv").exists(), reason="../shared/data/adrenalmnist3d is absent")
def test_adrenalmnist3d_files_ingest_and_preprocess(tmp_path):
    from pipeline.stages.ingest import ingest

    labels = pd.read_csv(ADRENAL / "labels.csv").groupby("label").head(3)
    subset = tmp_path / "adrenal"
    for name in labels["file"]:
        (subset / name).parent.mkdir(parents=True, exist_ok=True)
        (subset / name).write_bytes((ADRENAL / name).read_bytes())
    labels.to_csv(subset / "labels.csv", index=False)
    result = ingest(subset, out=tmp_path / "m.csv", workers=1)
    assert (result.manifest["status"] == "ok").all() and len(result.manifest) == 6
    config = load_config(REPO / "configs" / "adrenalmnist3d.toml").preprocess
    arrays, errors = preprocess_paths(list(result.manifest["path"]), config, workers=1, progress=False)
    assert not any(errors)
    stacked = np.stack(arrays)
    assert stacked.shape == (6, 1, 28, 28, 28) and stacked.min() == 0.0 and stacked.max() == 1.0


def test_prepare_data_generates_the_synthetic_set_when_missing(tmp_path, monkeypatch, caplog):
    import pipeline.synth as synth
    from pipeline.stages.run import prepare_data

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(synth, "SYNTH_VOLUMES_DATASET", {**synth.SYNTH_VOLUMES_DATASET, "n": 16, "size": 16})
    config = load_config(REPO / "configs" / "volumes.toml", [
        f"data.scans={tmp_path / 'synth'}", "data.manifest=m.csv", "data.split=s.csv",
        "split.labels_per_class=2", "split.calibration_per_class=2", "preprocess.spatial_size=[16,16,16]",
        "train.workers=1"])
    data = prepare_data(config, progress=False)
    assert (tmp_path / "synth" / "labels.csv").exists()
    assert data.images.shape == (16, 1, 16, 16, 16)
    assert len(data.labelled) == 4 and len(data.test) == 4 and data.classes == ["healthy", "abnormal"]
    assert json.loads((tmp_path / "synth" / "generator.json").read_text())["generator_version"] == synth.GENERATOR_VERSION
    monkeypatch.setattr(synth, "GENERATOR_VERSION", synth.GENERATOR_VERSION + 1)
    with caplog.at_level(logging.WARNING):
        prepare_data(config, progress=False)  # an existing set is used as it is, with a warning
    assert any("generator version" in r.getMessage() and "Delete it" in r.getMessage() for r in caplog.records)
    (tmp_path / "synth" / "generator.json").write_text("{not json")
    assert "unreadable" in synth.stale_set_warning(tmp_path / "synth")  # a warning, never a crash
