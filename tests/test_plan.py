"""Plan stage: the fingerprint of tiny 2D and 3D sets, the rules that turn it into settings, the
user's values winning, and a no-config run through every stage."""

import json
import logging
import math
import re

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline import fingerprint as fingerprinting
from pipeline.cli import main
from pipeline.config import ConfigError, PreprocessConfig, load_config
from pipeline.data import build_preprocess, input_channels
from pipeline.stages import plan as planning
from pipeline.stages.run import check_positive_class, planned_config

from clock import RunClock


def split_frame(rows, subsets=None):
    """Manifest-like rows (path, shape, spacing, label) with a subset column."""
    frame = pd.DataFrame(rows)
    frame["status"] = "ok"
    frame["subset"] = subsets if subsets is not None else ["unlabelled"] * len(frame)
    return frame


def jpeg_folder(root, write):
    """Grey X-ray-like pictures of mixed sizes, some stored as RGB or RGBA, as JPEG and PNG."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(24):
        h, w = [(300, 240), (512, 432), (420, 512), (256, 256)][i % 4]
        grey = (rng.random((h, w)) * 200).astype(np.uint8)
        mode = ["L", "RGB", "RGBA"][i % 3]
        picture = Image.fromarray(grey).convert(mode)
        suffix = ".png" if mode == "RGBA" else ".jpg"
        path = root / f"{'ab' if i % 2 else 'no'}" / f"x{i}{suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        picture.save(path)
        shape = f"{h}x{w}" + ("" if mode == "L" else f"x{len(mode)}")
        rows.append({"path": str(path), "shape": shape, "spacing": "", "label": path.parent.name})
    return rows


def test_mixed_size_rgb_and_grey_jpeg_folder_gets_one_sensible_plan(tmp_path, write):
    rows = jpeg_folder(tmp_path, write)
    subsets = ["labelled"] * 8 + ["unlabelled"] * 16
    fp = fingerprinting.fingerprint(split_frame(rows, subsets), ["ab", "no"])
    assert fp["spatial_dims"] == 2 and not fp["all_same_size"]
    assert fp["colour_fraction"] == 0  # grey content saved as RGB is not colour
    assert fp["intensity"]["kind"] == "8bit_picture"
    assert fp["size"]["min"] == [256, 240] and fp["size"]["max"] == [512, 512]
    plan = planning.make_plan(fp, minutes=5, probe=False)
    s = plan.settings
    assert s["preprocess.channels"] == 1
    assert s["preprocess.intensity"] == "range" and s["preprocess.intensity_range"] == [0.0, 255.0]
    assert s["preprocess.resize"] == "resize"
    side = s["preprocess.spatial_size"]
    assert side[0] == side[1] and 28 <= side[0] <= 128  # downsampled, square, not above the cap
    assert s["network.stem_stride"] == (2 if side[0] >= 96 else 1)
    assert s["augment.strong_bias_field"] == 0.0
    assert s["method.name"] == "supervised"  # 16 unlabelled scans are too few for SSL terms
    assert s["method.supervised.mixup_alpha"] == planning.BASELINE_MIXUP_ALPHA > 0  # pictures: mixed
    assert all(plan.reasons[k] for k in s)  # every value has its reason


def test_pictures_with_a_large_pool_train_the_mixed_baseline_and_masks_the_default_method(tmp_path, write):
    rows = jpeg_folder(tmp_path, write)
    fp = fingerprinting.fingerprint(split_frame(rows, ["labelled"] * 8 + ["unlabelled"] * 16), ["ab", "no"])
    fp["counts"]["unlabelled"] = {"(unlabelled)": 5000}
    pictures = planning.make_plan(fp, minutes=5, probe=False)
    assert pictures.settings["method.name"] == "supervised"
    assert pictures.settings["method.supervised.mixup_alpha"] == planning.BASELINE_MIXUP_ALPHA > 0
    assert "2D pictures" in pictures.reasons["method.name"] and "5,000 unlabelled" in pictures.reasons["method.name"]
    assert not [key for key in pictures.settings if key.startswith(f"method.{planning.DEFAULT_METHOD}.")]
    # a user who asks for the default SSL method on pictures gets it with its tested settings, unmixed
    asked = planning.make_plan(fp, minutes=5, probe=False, method=planning.DEFAULT_METHOD).settings
    assert {key.rsplit(".", 1)[1]: asked[key] for key in asked
            if key.startswith(f"method.{planning.DEFAULT_METHOD}.")} == planning.DEFAULT_METHOD_PARAMS
    assert "method.supervised.mixup_alpha" not in asked
    # the same pool of binary mask volumes trains the default SSL method
    masks = planning.make_plan(mask_volumes_with_a_large_pool(tmp_path / "masks", write), minutes=5, probe=False)
    assert masks.settings["method.name"] == planning.DEFAULT_METHOD
    assert "method.supervised.mixup_alpha" not in masks.settings


def test_a_pool_larger_than_memory_is_loaded_in_part(tmp_path, write, monkeypatch):
    rows = jpeg_folder(tmp_path, write)
    fp = fingerprinting.fingerprint(split_frame(rows, ["labelled"] * 8 + ["unlabelled"] * 16), ["ab", "no"])
    roomy = planning.make_plan(fp, minutes=5, probe=False).settings
    assert "train.max_unlabelled" not in roomy
    fp["counts"]["unlabelled"] = {"(unlabelled)": 40_000}  # tens of thousands of unlabelled X-rays
    monkeypatch.setattr(planning, "machine_memory", lambda: 4 * 2**30)
    plan = planning.make_plan(fp, minutes=5, probe=False)
    per_scan = 4 * math.prod(plan.settings["preprocess.spatial_size"])
    cap = plan.settings["train.max_unlabelled"]
    assert 0 < cap < 40_000 and (cap + 8) * per_scan <= 2**30 < (cap + 9) * per_scan  # a quarter of 4 GiB
    assert "40,008 scans of" in plan.reasons["train.max_unlabelled"]


def test_the_pool_cap_loads_a_seeded_part_of_the_unlabelled_scans():
    from pipeline.data import capped_pool

    frame = pd.DataFrame({"scan_id": [f"s{i}" for i in range(30)],
                          "subset": ["labelled"] * 5 + ["unlabelled"] * 20 + ["test"] * 5})
    capped = capped_pool(frame, 8, seed=3)
    assert (capped["subset"] == "unlabelled").sum() == 8 and (capped["subset"] != "unlabelled").sum() == 10
    assert capped["scan_id"].tolist() == capped_pool(frame, 8, seed=3)["scan_id"].tolist()
    assert capped["scan_id"].tolist() != capped_pool(frame, 8, seed=4)["scan_id"].tolist()
    assert capped_pool(frame, 0, seed=3) is frame and capped_pool(frame, 20, seed=3) is frame


def test_a_fingerprint_reads_a_random_sample_cut_short_by_time(tmp_path, write):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(50):  # grey pictures first, colour ones after
        picture = (rng.random((8, 8, 3) if i >= 25 else (8, 8)) * 255).astype(np.uint8)
        path = write.png(tmp_path / f"p{i:02d}.png", picture)
        rows.append({"path": str(path), "shape": "8x8x3" if i >= 25 else "8x8", "spacing": "", "label": "a"})
    whole = fingerprinting.fingerprint(split_frame(rows), ["a"])
    assert whole["intensity"]["sampled"] == 50 and whole["colour_fraction"] == 0.5
    cut = fingerprinting.fingerprint(split_frame(rows), ["a"], seconds=0.0)
    assert cut["intensity"]["sampled"] == fingerprinting.FINGERPRINT_MIN_SAMPLE
    assert 0 < cut["colour_fraction"] < 1  # drawn from both halves, not the first rows read in order


def test_a_few_16_bit_pictures_among_8_bit_ones_are_never_clipped_at_255_though_unsampled(tmp_path, write):
    rows = []
    for i in range(40):
        wide = i == 39  # one 16-bit radiograph among 8-bit ones: 0-255 would clip it white
        array = (np.random.default_rng(i).random((32, 32)) * (60000 if wide else 250)).astype(
            np.uint16 if wide else np.uint8)
        path = write.png(tmp_path / f"x{i}.png", array)
        rows.append({"path": str(path), "shape": "32x32", "spacing": "", "label": "a",
                     "dtype": str(array.dtype)})
    frame = split_frame(rows)
    assert fingerprinting.fingerprint(frame.iloc[:39], ["a"])["intensity"]["kind"] == "8bit_picture"
    fp = fingerprinting.fingerprint(frame, ["a"], sample=10, seconds=0.0)  # the 16-bit one is not among those read
    assert fp["dtypes"] == {"uint8": 10} and fp["stored_dtypes"] == {"uint8": 39, "uint16": 1}
    plan = planning.make_plan(fp, probe=False)
    assert plan.settings["preprocess.intensity"] == "percentile"
    assert plan.reasons["preprocess.intensity"].endswith("stored as 1 uint16, 39 uint8: no one range fits them all")


def test_colour_pictures_keep_three_channels(tmp_path):
    rng = np.random.default_rng(1)
    rows = []
    for i in range(6):
        colour = (rng.random((40, 40, 3)) * 255).astype(np.uint8)
        path = tmp_path / f"c{i}.png"
        Image.fromarray(colour).save(path)
        rows.append({"path": str(path), "shape": "40x40x3", "spacing": "", "label": "a"})
    fp = fingerprinting.fingerprint(split_frame(rows), ["a"])
    assert fp["colour_fraction"] == 1.0
    assert planning.make_plan(fp, probe=False).settings["preprocess.channels"] == 3


def sequences_folder(root, n_per_class=10, sequences=4):
    """Two classes of multi-sequence MRI-like NIfTI files (a lesion in the second sequence only), as the
    Medical Segmentation Decathlon stores its brain tumours: a file a case, the sequences on a fourth axis."""
    rng = np.random.default_rng(0)
    for label in ("normal", "tumour"):
        for i in range(n_per_class):
            volume = rng.normal(300, 40, (16, 16, 12, sequences)).astype(np.float32) * np.arange(1, sequences + 1)
            if label == "tumour":
                volume[4:10, 4:10, 3:8, 1] += 400
            path = root / label / f"BRATS_{label}{i:03d}.nii.gz"
            path.parent.mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(volume, np.diag([1.5, 1.5, 2.5, 1.0])), path)
    return root


def test_files_of_several_sequences_are_planned_a_channel_each_and_train_and_score(tmp_path, monkeypatch):
    scans = sequences_folder(tmp_path / "scans")
    odd = np.random.default_rng(1).random((16, 16, 12, 2)).astype(np.float32)  # two sequences of four
    nib.save(nib.Nifti1Image(odd, np.eye(4)), scans / "normal" / "odd.nii.gz")
    monkeypatch.chdir(tmp_path)
    run = tiny_run(tmp_path, scans, "tumour")
    channels = json.loads((run / "plan.json").read_text())["settings"]["preprocess.channels"]
    assert channels["value"] == 4 and channels["reason"].startswith("4 volumes a file (sequences of one region)")
    assert "files holding another number are left out (20 of 4 volumes, 1 of 2 volumes)" in channels["reason"]
    assert json.loads((run / "checkpoint.json").read_text())["in_channels"] == 4
    new = sequences_folder(tmp_path / "new", n_per_class=2)
    assert main(["score", str(new), "--model", str(run), "--out", str(tmp_path / "new.csv"), "--quiet"]) == 0
    report = pd.read_csv(tmp_path / "new.csv")
    assert (report["status"] == "ok").all() and len(report) == 4


def test_3d_binary_masks_with_one_spacing_keep_geometry_and_skip_intensity_augmentation(tmp_path, write):
    rows = []
    for i in range(10):
        mask = (np.random.default_rng(i).random((28, 28, 28)) > 0.7).astype(np.uint8) * 255
        path = write.nifti(tmp_path / f"m{i}.nii.gz", mask)
        rows.append({"path": str(path), "shape": "28x28x28", "spacing": "1x1x1", "label": "a"})
    fp = fingerprinting.fingerprint(split_frame(rows, ["labelled"] * 4 + ["unlabelled"] * 6), ["a", "b"])
    assert fp["spatial_dims"] == 3 and fp["intensity"]["kind"] == "binary_mask"
    s = planning.make_plan(fp, probe=False).settings
    assert s["preprocess.target_spacing"] == []
    assert s["preprocess.spatial_size"] == [28, 28, 28] and s["preprocess.resize"] == "pad_crop"
    assert s["preprocess.intensity"] == "minmax"
    assert s["augment.strong_bias_field"] == s["augment.strong_gamma"] == 0.0


def mri_like_volumes_of_mixed_spacing(tmp_path, write, shape):
    """Fingerprint of four MRI-like volumes of ``shape`` voxels with four different spacings."""
    rows = []
    for i, spacing in enumerate([(1.0, 1.0, 1.0), (0.8, 0.8, 2.0), (1.2, 1.2, 1.2), (1.0, 1.0, 3.0)]):
        volume = np.random.default_rng(i).normal(300, 80, shape).astype(np.float32)
        path = write.nifti(tmp_path / f"v{i}.nii.gz", volume, spacing)
        rows.append({"path": str(path), "shape": "x".join(map(str, shape)), "spacing": "x".join(map(str, spacing)),
                     "label": "a"})
    return fingerprinting.fingerprint(split_frame(rows), ["a"])


def test_3d_mri_like_volumes_of_mixed_spacing_are_resampled(tmp_path, write):
    fp = mri_like_volumes_of_mixed_spacing(tmp_path, write, (40, 40, 30))
    assert fp["intensity"]["kind"] == "mri_like"
    s = planning.make_plan(fp, probe=False).settings
    assert s["preprocess.intensity"] == "percentile"
    # Isotropic, at the resolution the input needs: the shortest side of the median field of view
    # (40 voxels of 1 mm) across the input, never finer than the median voxel.
    side = s["preprocess.spatial_size"][0]
    assert s["preprocess.target_spacing"] == [round(40 / side, 3)] * 3 and 40 / side >= 1.0
    assert "resampled" in planning.make_plan(fp, probe=False).reasons["preprocess.target_spacing"]
    assert len(s["preprocess.spatial_size"]) == 3
    assert "preprocess.intensity_range" not in s


def test_ct_like_intensities_are_recognised_and_read_through_the_radiologists_windows(tmp_path, write):
    stats = [{"binary": False, "dtype": "int16", "min": -1024.0}] * 3
    assert fingerprinting.intensity_kind(stats) == "ct_like"
    rows = []
    for i in range(3):  # a head: air, brain, blood 40 HU above it, skull
        volume = np.full((20, 20, 10), -1000.0, np.float32)
        volume[4:16, 4:16] = 35.0
        volume[8:10, 8:10] = 75.0
        volume[3, 3:17], volume[16, 3:17] = 1200.0, 1200.0
        path = write.nifti(tmp_path / f"ct{i}.nii.gz", volume)
        rows.append({"path": str(path), "shape": "20x20x10", "spacing": "1x1x1", "label": "a"})
    fp = fingerprinting.fingerprint(split_frame(rows), ["a"])
    plan = planning.make_plan(fp, probe=False)
    assert fp["intensity"]["kind"] == "ct_like" and plan.settings["preprocess.intensity"] == "ct_window_channels"
    assert "brain, soft-tissue, lung and bone windows, a channel each" in plan.reasons["preprocess.intensity"]
    assert fingerprinting.planned_input_channels(fp) == 4 and plan.settings["preprocess.channels"] == 1
    config = PreprocessConfig(spatial_size=[20, 20, 10], intensity="ct_windows", resize="pad_crop")
    image = build_preprocess(config)({"image": rows[0]["path"]})["image"][0]
    brain, blood, air, bone = (float(image[x, y, 5]) for x, y in ((5, 5), (8, 8), (0, 0), (3, 5)))
    assert air < 0.1 < brain < blood < bone and bone > 0.95 and blood - brain > 0.1  # per-scan percentiles: < 0.02
    percentile = build_preprocess(PreprocessConfig(spatial_size=[20, 20, 10], intensity="percentile",
                                                   resize="pad_crop"))({"image": rows[0]["path"]})["image"][0]
    assert float(percentile[8, 8, 5] - percentile[5, 5, 5]) < 0.02


def ct_heads(root, n_per_class=10):
    """Two classes of CT-like head volumes in Hounsfield units (air, brain, skull; a bleed 40 HU above
    the brain in the second)."""
    rng = np.random.default_rng(0)
    for label in ("normal", "bleed"):
        for i in range(n_per_class):
            volume = np.full((16, 16, 10), -1000.0, np.float32)
            volume[3:13, 3:13] = rng.normal(35, 5, (10, 10, 10))
            volume[2, 2:14], volume[13, 2:14] = 1200.0, 1200.0
            if label == "bleed":
                volume[6:10, 6:10, 3:7] += 40
            path = root / label / f"head{i:03d}.nii.gz"
            path.parent.mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(volume, np.eye(4)), path)
    return root


def test_ct_is_planned_a_channel_a_window_and_trains_and_scores(tmp_path, monkeypatch):
    scans = ct_heads(tmp_path / "scans")
    config = PreprocessConfig(spatial_size=[16, 16, 10], intensity="ct_window_channels", resize="pad_crop")
    assert input_channels(config) == 4 and input_channels(PreprocessConfig(intensity="ct_windows")) == 1
    image = build_preprocess(config)({"image": str(scans / "bleed" / "head000.nii.gz")})["image"]
    assert image.shape == (4, 16, 16, 10)
    brain_window = image[0]
    assert float(brain_window[7, 7, 5] - brain_window[4, 4, 5]) > 0.3  # 40 HU: half the brain window's width
    assert float(image[3, 0, 0, 0]) == 0.0 and float(image[3, 2, 5, 5]) > 0.9  # the bone window: air, skull
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--scans", str(scans), "--positive", "bleed", "--labels-per-class", "3", "--quiet",
                 "train.minutes=0.05", "split.test_fraction=0.3", "network.channels=[4,8]"]) == 0
    run = tmp_path / (tmp_path / "runs" / "LATEST").read_text().strip()
    assert json.loads((run / "plan.json").read_text())["settings"]["preprocess.intensity"]["value"] == "ct_window_channels"
    assert json.loads((run / "checkpoint.json").read_text())["in_channels"] == 4
    new = ct_heads(tmp_path / "new", n_per_class=2)
    assert main(["score", str(new), "--model", str(run), "--out", str(tmp_path / "new.csv"), "--quiet"]) == 0
    report = pd.read_csv(tmp_path / "new.csv")
    assert (report["status"] == "ok").all() and len(report) == 4


def test_16_bit_radiographs_are_scaled_per_scan_and_named_for_what_they_are(tmp_path, write):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(4):
        path = tmp_path / f"x{i}.png"
        Image.fromarray((rng.random((30, 26)) * 3000 + 1000).astype(np.uint16)).save(path)
        rows.append({"path": str(path), "shape": "30x26", "spacing": "", "label": "a"})
    fp = fingerprinting.fingerprint(split_frame(rows), ["a"])
    assert fp["intensity"]["kind"] == "high_bit_picture"
    plan = planning.make_plan(fp, probe=False)
    assert plan.settings["preprocess.intensity"] == "percentile"
    assert plan.reasons["preprocess.intensity"].startswith("12- or 16-bit pictures (radiographs) have no fixed range")


def test_probe_times_steps_and_keeps_the_size_when_the_target_fits(tmp_path, monkeypatch):
    fp = {"spatial_dims": 2, "colour_fraction": 0.0, "classes": ["a", "b"],
          "counts": {"labelled": {"a": 4, "b": 4}, "unlabelled": {"(unlabelled)": 500}}}
    size, (scale, batches), probes = planning._choose_size([28], 2, "8bit_picture", fp, minutes=60, probe=True)
    assert (size, scale, batches) == (28, 1.0, (8, 16))
    assert probes[0]["seconds_per_step"] > 0 and probes[0]["steps_in_budget"] > 0
    # With no time at all: the smallest size with the smallest batches, each size's smallest batches having
    # been timed (by a stand-in whose cost is not proportional to the images in a step) and none larger:
    # a step of more scans cannot fit where fewer do not.
    timed = []

    def stand_in(size, dims, fp, method, batches, precision="float32"):
        timed.append((size, list(batches)))
        return 1e-4 * size**2 * (sum(batches) + 20)

    monkeypatch.setattr(planning, "time_step", stand_in)
    size, (scale, batches), probes = planning._choose_size([32, 28], 2, "8bit_picture", fp, minutes=1e-4,
                                                           probe=True)
    assert size == 28 and timed == [(p["size"], p["batches"]) for p in probes] == [(32, [8, 16]), (28, [8, 16])]
    assert probes[-1]["seconds_per_step"] == round(1e-4 * 28**2 * 44, 4)
    assert batches == (8, 16)  # never below 8 labelled scans a batch, the unlabelled batch twice it
    # Where the smallest batches fit, the larger ones are timed from the largest down: the largest that fits.
    # (9,000 labelled scans: a labelled batch of at most 16, a 512th of them rounded down to a power of two.)
    timed.clear()
    more = {**fp, "counts": {**fp["counts"], "labelled": {"a": 4500, "b": 4500}}}
    size, (scale, batches), probes = planning._choose_size([28], 2, "8bit_picture", more, minutes=110, probe=True)
    assert timed == [(28, [8, 16]), (28, [16, 32])] and (size, batches) == (28, (8, 16))
    assert [p["steps_in_budget"] >= planning.TARGET_STEPS for p in probes] == [True, False]


def test_a_budget_no_size_fits_gets_the_largest_size_with_enough_steps_at_its_most_steps(monkeypatch):
    fp = {"spatial_dims": 3, "colour_fraction": 0.0, "classes": ["a", "b"],
          "counts": {"labelled": {"a": 8200, "b": 8200}, "unlabelled": {"(unlabelled)": 1000}}}
    # A stand-in probe whose step grows with the voxels in it: 8 + 16 at 28^3 gets ~1,025 steps in
    # 3 minutes, 16 + 32 ~512, at 24^3 8 + 16 ~1,627.
    monkeypatch.setattr(planning, "time_step", lambda size, dims, fp, method, batches, precision="float32":
                        3e-7 * size**3 * sum(batches))
    assert [b for _, b in planning._batch_options((32, 64))] == [(32, 64), (16, 32), (8, 16)]
    assert planning._choose_size([24, 28], 3, "binary_mask", fp, minutes=3, probe=True)[:2] == (24, (0.25, (8, 16)))
    size, (scale, batches), probes = planning._choose_size([24, 28], 3, "binary_mask", fp, minutes=1.8, probe=True)
    assert (size, batches) == (28, (8, 16))
    assert max(p["steps_in_budget"] for p in probes) < planning.TARGET_STEPS
    # at each size only the smallest batches were timed: they give the most steps, and miss the target
    assert [(p["size"], p["batches"]) for p in probes] == [(28, [8, 16]), (24, [8, 16])]
    assert probes[0]["steps_in_budget"] >= planning.MIN_STEPS
    # Where the batches with the most steps give enough but not the target: those.
    size, (scale, batches), probes = planning._choose_size([28], 3, "binary_mask", fp, minutes=4, probe=True)
    assert [p["steps_in_budget"] >= planning.MIN_STEPS for p in probes] == [True]
    assert (size, batches) == (28, (8, 16))


def test_precision_is_bfloat16_only_where_the_probe_shows_it_faster(monkeypatch):
    fp = {"spatial_dims": 2, "colour_fraction": 0.0, "classes": ["a", "b"],
          "counts": {"labelled": {"a": 4, "b": 4}, "unlabelled": {"(unlabelled)": 500}}}
    for bfloat16_seconds, expected in ((0.5, "bfloat16"), (0.9, "float32"), (2.0, "float32")):
        monkeypatch.setattr(planning, "time_step", lambda *a, precision, t=bfloat16_seconds, **k:
                            t if precision == "bfloat16" else 1.0)
        precision, reason, rows = planning._choose_precision(64, 2, fp, probe=True)
        assert precision == expected, (bfloat16_seconds, reason)
        assert {r["precision"] for r in rows} == {"float32", "bfloat16"}
    assert planning._choose_precision(64, 2, fp, probe=False)[0] == "float32"
    # Timed over several steps of the smallest batches the size probe tries, where steps are short.
    volumes = {"spatial_dims": 3, "colour_fraction": 0.0, "classes": ["a", "b"],
               "counts": {"labelled": {"a": 8200, "b": 8200}, "unlabelled": {"(unlabelled)": 500}}}
    timed = []
    monkeypatch.setattr(planning, "time_step", lambda *a, precision, **k: timed.append((a[4], k["repeats"])) or 1.0)
    planning._choose_precision(28, 3, volumes, probe=True)
    assert planning._batch_sizes(28, 3, volumes) == (32, 64)
    assert timed == [((8, 16), planning.PRECISION_REPEATS)] * 2
    # A real step in each precision runs (whichever is faster on this machine).
    monkeypatch.undo()
    assert planning.time_step(16, 2, fp, planning.DEFAULT_METHOD, (8, 8), repeats=1, precision="bfloat16") > 0


def test_volumes_downsample_earlier_than_pictures():
    assert planning._architecture(64, 2)["stem_stride"] == 1
    assert planning._architecture(64, 3)["stem_stride"] == 2
    assert planning._architecture(32, 3)["stem_stride"] == 1


def class_folder(root, n_per_class=12, size=20, seed=0):
    """Two classes as subfolders: a bright square (abnormal) or not, grey PNGs."""
    rng = np.random.default_rng(seed)
    for label in ("normal", "abnormal"):
        for i in range(n_per_class):
            array = (rng.random((size, size)) * 60).astype(np.uint8)
            if label == "abnormal":
                array[6:14, 6:14] = 230
            path = root / label / f"{label}{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(path)
    return root


def test_user_values_win_over_the_plan_and_are_marked(tmp_path, monkeypatch):
    scans = class_folder(tmp_path / "scans")
    monkeypatch.chdir(tmp_path)
    overrides = [f"data.scans=\"{scans}\"", "data.class_subfolders=true", "split.labels_per_class=3",
                 "split.calibration_per_class=3", "split.test_fraction=0.25",
                 "preprocess.spatial_size=[24,24]", "network.channels=[4,8]"]
    config, record = planned_config(None, overrides, probe=False, progress=False)
    assert config.preprocess.spatial_size == [24, 24] and config.network.channels == [4, 8]
    entry = record["settings"]["preprocess.spatial_size"]
    assert entry["set_by"] == "user" and entry["value"] == [24, 24] and entry["planned"] == [24, 24]
    network = record["settings"]["network.channels"]  # planned for the user's size, then the user's own
    assert network["set_by"] == "user" and network["value"] == [4, 8] and network["planned"] == [32, 64, 128]
    assert record["settings"]["preprocess.intensity"]["set_by"] == "plan"
    assert config.preprocess.intensity == "range"  # planned, as the user left it unset
    assert record["fingerprint"]["counts"]["labelled"] == {"abnormal": 3, "normal": 3}


def test_few_labels_get_a_labelled_batch_of_at_most_a_512th_of_them(tmp_path, write):
    assert [planning.few_labels_batch(n) for n in (1, 100, 1200, 3124, 4095, 4096, 8191, 8192, 16384, 40000)] == [
        8, 8, 8, 8, 8, 8, 8, 16, 32, 64]
    fp = fingerprinting.fingerprint(split_frame(jpeg_folder(tmp_path, write)), ["ab", "no"])
    at_28 = {"preprocess.spatial_size": [28, 28]}
    for per_class, batches, capped in ((50, (8, 16), True), (2100, (8, 16), True), (4200, (16, 32), True),
                                       (17000, (64, 128), False)):
        fp["counts"] = {"labelled": {"ab": per_class, "no": per_class}, "unlabelled": {"(unlabelled)": 5000}}
        plan = planning.make_plan(fp, minutes=5, probe=False, fixed=at_28)
        assert (plan.settings["train.batch_size"], plan.settings["train.unlabelled_batch_size"]) == batches
        assert (f"a 512th of the {2 * per_class:,} labelled scans" in plan.reasons["train.batch_size"]) == capped
    # Scaled down where too few steps fit, the unlabelled batch stays twice the labelled one: no 8 + 8.
    assert [b for _, b in planning._batch_options((16, 32))] == [(16, 32), (8, 16)]
    assert [b for _, b in planning._batch_options((8, 0))] == [(8, 0)]


def test_a_user_set_size_gets_a_network_and_batches_planned_for_it(tmp_path, write):
    fp = fingerprinting.fingerprint(split_frame(jpeg_folder(tmp_path, write)), ["ab", "no"])
    own = planning.make_plan(fp, minutes=5, probe=False)
    assert own.settings["preprocess.spatial_size"] == [128, 128] and len(own.settings["network.channels"]) == 5
    small = planning.make_plan(fp, minutes=5, probe=False, fixed={"preprocess.spatial_size": [28, 28]})
    s = small.settings
    # five stages after a stride-2 stem would pool a 28x28 input away to nothing
    assert s["preprocess.spatial_size"] == [28, 28] and len(s["network.channels"]) == 3 and s["network.stem_stride"] == 1
    assert "28x28" in small.reasons["train.batch_size"] and "user" in small.reasons["preprocess.spatial_size"]
    wide = planning.make_plan(fp, minutes=5, probe=False, fixed={"preprocess.spatial_size": [256, 32]})
    assert wide.settings["network.channels"] == planning._architecture(32, 2)["channels"]  # the short side decides


def test_a_network_too_deep_for_its_input_is_refused_naming_the_keys():
    from pipeline.config import NetworkConfig
    from pipeline.networks import network_factory

    deep = NetworkConfig(channels=[32, 64, 128, 192, 256], stem_stride=2)
    with pytest.raises(ValueError, match=r"network.channels has 5 stages.*28x28 input \(preprocess.spatial_size\)"):
        network_factory(deep, 1, [28, 28], 2)
    network_factory(deep, 1, [32, 32], 2)  # one voxel left at the last stage is enough


def test_a_class_named_like_healthy_is_pointed_out_where_no_abnormal_class_is_given(tmp_path, monkeypatch, caplog):
    scans = class_folder(tmp_path / "scans")  # normal/ and abnormal/
    monkeypatch.chdir(tmp_path)
    overrides = [f"data.scans=\"{scans}\"", "data.class_subfolders=true", "split.labels_per_class=3",
                 "split.calibration_per_class=3", "split.test_fraction=0.25"]
    planned_config(None, overrides, probe=False, progress=False)
    assert "'normal' looks like the healthy class: --healthy \"normal\"" in caplog.text
    caplog.clear()
    planned_config(None, [*overrides, "data.positive_class=\"abnormal\""], probe=False, progress=False)
    assert "looks like the healthy class" not in caplog.text


def test_plan_false_keeps_every_config_value(tmp_path, monkeypatch):
    scans = class_folder(tmp_path / "scans")
    monkeypatch.chdir(tmp_path)
    overrides = ["plan=false", f"data.scans=\"{scans}\"", "data.class_subfolders=true",
                 "split.labels_per_class=3", "split.calibration_per_class=3"]
    config, record = planned_config(None, overrides, probe=False, progress=False)
    assert config.preprocess.intensity == "range" and config.network.channels == [32, 64, 128]  # defaults
    assert record["settings"] == {} and record["fingerprint"]["spatial_dims"] == 2


def tiny_run(tmp_path, scans, positive, option="--positive", settings=()):
    """``pipeline run`` on ``scans`` in a few seconds (3 labels a class, a tiny network, any more
    ``settings``); its run folder."""
    code = main(["run", "--scans", str(scans), option, positive, "--labels-per-class", "3", "--quiet",
                 "train.minutes=0.05", "split.test_fraction=0.3", "network.channels=[4,8]", *settings])
    assert code == 0
    return tmp_path / (tmp_path / "runs" / "LATEST").read_text().strip()


def test_no_config_run_trains_and_calibrates_a_folder_of_class_subfolders(tmp_path, monkeypatch, capsys):
    scans = class_folder(tmp_path / "scans", n_per_class=14)
    monkeypatch.chdir(tmp_path)
    # Its steps cost 0.05 s on a clock of their own, far more than the plan's probe timed: told to evaluate
    # as often as the plan would then have had it, the run times its end before it comes.
    RunClock(monkeypatch)
    run = tiny_run(tmp_path, scans, "abnormal", settings=["train.eval_every=20"])
    plan = json.loads((run / "plan.json").read_text())
    assert plan["settings"]["data.positive_class"]["set_by"] == "user"
    # what the options imply, not what the user typed, says so: the split's counts, not fractions
    implied = plan["settings"]["split.labelled_fraction"]
    assert implied["set_by"] == "command line" and implied["reason"].startswith("--labels-per-class 3")
    assert plan["settings"]["split.labels_per_class"]["set_by"] == "user"
    assert plan["settings"]["network.channels"]["set_by"] == "user"  # typed as network.channels=[4,8]
    assert plan["settings"]["preprocess.spatial_size"]["value"] == [28, 28]
    split = plan["settings"]["data.split"]  # named after the data: the file it names is said
    assert split["value"] == "" and re.fullmatch(r"data_manifests/scans\.[0-9a-f]{8}\.3per-class\.seed0\.split\.csv",
                                                 split["resolved"])
    assert (run / "config.toml").read_text().count("positive_class = \"abnormal\"") == 1
    calibration = json.loads((run / "calibration.json").read_text())
    assert calibration["screening"]["positive_class"] == "abnormal"
    test = calibration["test"]["screening"]
    printed = capsys.readouterr().out  # the run's last lines: what a screening team reads first
    assert f"screening on {test['n_positive'] + test['n_negative']} test scans: AUROC {test['auroc']:.3f}" in printed
    summary = json.loads((run / "train_summary.json").read_text())
    assert 0.8 * 3.0 <= summary["wall_seconds"] <= 3.0
    # the draw is in the split file's name: another --seed never reuses it
    assert (tmp_path / split["resolved"]).exists()


def test_a_split_drawn_before_scans_were_ingested_says_it_leaves_them_out(tmp_path, monkeypatch, caplog):
    scans = class_folder(tmp_path / "scans")
    monkeypatch.chdir(tmp_path)
    run = tiny_run(tmp_path, scans, "abnormal")
    assert "in no subset" not in caplog.text
    class_folder(tmp_path / "more", seed=1)  # scans added, and the manifest deleted to ingest them: the split kept
    for path in (tmp_path / "more").rglob("*.png"):
        path.rename(path.parent.parent.parent / "scans" / path.parent.name / f"new_{path.name}")
    manifest = json.loads((run / "plan.json").read_text())["settings"]["data.manifest"]["value"]
    (tmp_path / manifest).unlink()
    tiny_run(tmp_path, scans, "abnormal")
    assert "24 usable scans of data_manifests/scans." in caplog.text and "are in no subset" in caplog.text


def test_unlabelled_scans_of_a_labelled_patient_that_the_split_leaves_out_are_no_stale_split(tmp_path, monkeypatch,
                                                                                                 caplog):
    # each patient has a labelled scan and an unlabelled one; those of patients drawn for labelled, calibration
    # or test the split leaves out on purpose, which the train stage's second look at the split must not call
    # scans "ingested after the split was drawn"
    rng = np.random.default_rng(0)
    scans, rows = tmp_path / "scans", ["file,label"]
    for k in range(24):
        label = "abnormal" if k % 2 else "normal"
        for name in ("x", "y"):
            array = (rng.random((20, 20)) * 60).astype(np.uint8)
            if label == "abnormal":
                array[6:14, 6:14] = 230
            (scans / f"patient{k}").mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(scans / f"patient{k}" / f"{name}.png")
        rows.append(f"patient{k}/x.png,{label}")
    (scans / "labels.csv").write_text("\n".join(rows) + "\n")
    monkeypatch.chdir(tmp_path)
    run = tiny_run(tmp_path, scans, "abnormal")
    split = json.loads((run / "plan.json").read_text())["settings"]["data.split"]["resolved"]
    left_out = json.loads((tmp_path / split).with_suffix(".json").read_text())["unlabelled_left_out_scans"]
    assert left_out and all(scan.endswith("/y.png") for scan in left_out)
    assert "unlabelled scans left out of the split" in caplog.text and "in no subset" not in caplog.text
    # a damaged record beside the split costs the check its exceptions, not the run
    from pipeline.stages.run import scans_in_no_subset

    (tmp_path / split).with_suffix(".json").write_text("{not json")
    manifest = json.loads((run / "plan.json").read_text())["settings"]["data.manifest"]["value"]
    assert scans_in_no_subset(tmp_path / manifest, tmp_path / split) == sorted(left_out)


def test_minutes_bound_the_whole_command_and_training_gets_what_is_left(tmp_path, monkeypatch):
    import pipeline.stages.run

    scans = class_folder(tmp_path / "scans", n_per_class=14)
    monkeypatch.chdir(tmp_path)
    # the command's clock: ingest and split cost 4 s each time they are asked for (the train stage asks
    # again), calibration 5 s, a step 0.05 s, so far more than the plan's probe timed that the run is told to
    # evaluate as often as the plan would have had it (which times the predictions calibration will make)
    clock = RunClock(monkeypatch)
    clock.charge(pipeline.stages.run, "prepare_split", lambda *args: 4.0)
    clock.charge(pipeline.stages.run, "calibrate", lambda *args: 5.0)
    budget, started = 0.4, clock.now
    assert main(["run", "--scans", str(scans), "--positive", "abnormal", "--minutes", str(budget),
                 "--labels-per-class", "3", "--quiet", "split.test_fraction=0.3", "network.channels=[4,8]",
                 "train.eval_every=20"]) == 0
    wall = clock.now - started
    run = tmp_path / (tmp_path / "runs" / "LATEST").read_text().strip()
    settings = json.loads((run / "plan.json").read_text())["settings"]
    assert (settings["train.run_minutes"]["value"], settings["train.run_minutes"]["set_by"]) == (budget, "user")
    planned = settings["train.minutes"]
    assert planned["set_by"] == "plan" and "0.4 minutes for the whole run: 4 s went to" in planned["reason"]
    record = json.loads((run / "plan.json").read_text())
    assert record["preprocess_seconds_foreseen"] is not None  # timed on the scans: the budget pays for it
    assert planned["value"] == pytest.approx((budget * 60 - 4) / 60, abs=0.001)  # what ingest and split left
    summary = json.loads((run / "train_summary.json").read_text())
    # the 24 s less both splits' 4 s and calibration's 9 (wall_seconds is rounded to 0.1 s)
    assert summary["wall_seconds"] <= budget * 60 - 4 - 4 - 9 + 0.05
    assert 0.8 * budget * 60 <= wall <= budget * 60  # the whole command, calibration included
    assert (run / "calibration.json").exists()


def test_minutes_spent_before_training_are_refused_and_nothing_trains(tmp_path, monkeypatch, caplog):
    from pipeline.stages.run import left_for_training

    assert left_for_training(2.0, time_now() - 30) == pytest.approx((120 - 30) / 60, abs=0.01)
    with pytest.raises(ValueError, match="budget of 0.5 minutes leaves 0.0 s for training, under the 10 s a model "
                                         "needs: 40 s went to ingest"):
        left_for_training(0.5, time_now() - 40)
    scans = class_folder(tmp_path / "scans", n_per_class=14)
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--scans", str(scans), "--positive", "abnormal", "--minutes", "0.02", "--quiet"]) == 2
    assert "budget of 0.02 minutes leaves 0.0 s for training" in caplog.text and "give more minutes" in caplog.text
    assert not (tmp_path / "runs").exists()


def time_now() -> float:
    import time

    return time.monotonic()


def test_another_labels_file_for_the_same_folder_gets_its_own_manifest_and_split(tmp_path, monkeypatch):
    import argparse

    from pipeline.cli import own_data_overrides

    scans = class_folder(tmp_path / "scans", n_per_class=4)
    first, second = tmp_path / "first.csv", tmp_path / "second.csv"
    first.write_text("file,label\nnormal/normal0.png,normal\nabnormal/abnormal0.png,abnormal\n")
    second.write_text("file,label\nnormal/normal1.png,normal\nabnormal/abnormal1.png,abnormal\n")

    def manifest(labels, label_column=None, folder=scans, include=None, overrides=(), config=None):
        args = argparse.Namespace(scans=str(folder), labels=labels, labels_per_class=None, extra_labels=None,
                                  positive=None, minutes=None, seed=None, label_column=label_column,
                                  include=include, overrides=list(overrides), config=config)
        return next(o for o in own_data_overrides(args)[0] if o.startswith("data.manifest="))

    assert manifest(str(first)) != manifest(str(second))  # an existing manifest is reused only for its labels
    assert manifest(str(first)) == manifest(str(first))
    assert manifest(str(first), label_column="label") != manifest(str(first))  # and the columns chosen
    for labels in (str(first), None):  # and the scans kept, by --include or data.include=
        assert manifest(labels, include="*0.png") != manifest(labels)
        assert manifest(labels, include="*0.png") == manifest(labels, overrides=['data.include="*0.png"'])
        (tmp_path / "config.toml").write_text('[data]\ninclude = "*0.png"\n')  # or written in a config file
        assert manifest(labels, include="*0.png") == manifest(labels, config=str(tmp_path / "config.toml"))
    assert manifest(None).startswith('data.manifest="data_manifests/scans.')  # class subfolders, no labels file
    monkeypatch.chdir(tmp_path)  # a relative --scans is kept absolute: calibrate or score may start elsewhere
    relative = argparse.Namespace(scans="scans", labels=None, labels_per_class=None, extra_labels=None,
                                  positive=None, minutes=None, seed=None, label_column=None)
    assert f"data.scans={json.dumps(str(scans.resolve()))}" in own_data_overrides(relative)[0]
    # another set's folder of the same name (every set has a train/) never shares its manifest
    other = class_folder(tmp_path / "other" / "scans", n_per_class=4)
    assert manifest(None, folder=other) != manifest(None) and manifest(None) == manifest(None)
    assert manifest(str(first), folder=other) != manifest(str(first))


def test_run_with_a_missing_scan_folder_names_it(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--scans", str(tmp_path / "nowhere"), "--quiet"]) == 2
    assert "nowhere" in caplog.text
    # MedMNIST's download: one archive of arrays, not a folder of scans
    np.savez(tmp_path / "breastmnist.npz", train_images=np.zeros((2, 28, 28), np.uint8))
    caplog.clear()
    assert main(["run", "--scans", str(tmp_path / "breastmnist.npz"), "--quiet"]) == 2
    assert "breastmnist.npz is a file, an archive of arrays" in caplog.text and "takes the folder" in caplog.text


def mask_volumes_with_a_large_pool(tmp_path, write):
    """Fingerprint of ten 28^3 binary masks, 4 labelled, counted as if 1,000 were unlabelled."""
    rows = []
    for i in range(10):
        mask = (np.random.default_rng(i).random((28, 28, 28)) > 0.7).astype(np.uint8) * 255
        rows.append({"path": str(write.nifti(tmp_path / f"m{i}.nii.gz", mask)), "shape": "28x28x28",
                     "spacing": "1x1x1", "label": "a"})
    fp = fingerprinting.fingerprint(split_frame(rows, ["labelled"] * 4 + ["unlabelled"] * 6), ["a", "b"])
    fp["counts"]["unlabelled"] = {"(unlabelled)": 1000}
    return fp


def test_the_pi_model_warms_up_only_where_few_steps_fit(tmp_path, write, monkeypatch):
    fp = mask_volumes_with_a_large_pool(tmp_path, write)
    # The stand-in probe of test_a_budget_no_size_fits_...: at 24^3, 8 + 16 fit ~1,627 steps in 3 minutes.
    monkeypatch.setattr(planning, "time_step", lambda size, dims, fp, method, batches, precision="float32", **_:
                        3e-7 * size**3 * sum(batches))
    roomy = planning.make_plan(fp, minutes=10, probe=True, method="pi_model")
    short = planning.make_plan(fp, minutes=1.5, probe=True, method="pi_model")
    assert roomy.settings["method.name"] == short.settings["method.name"] == planning.DEFAULT_METHOD
    assert roomy.settings["method.pi_model.warmup"] == 0.0
    assert short.settings["method.pi_model.warmup"] == planning.SHORT_RUN_WARMUP > 0
    assert "labelled scans alone" in short.reasons["method.pi_model.warmup"]
    # the rule was measured for the Pi-model: the default trains without one however short its run
    default = planning.make_plan(fp, minutes=1.5, probe=True)
    assert planning.DEFAULT_METHOD != "pi_model" and not any(key.endswith(".warmup") for key in default.settings)


def test_steps_are_planned_for_what_foreseen_preprocessing_leaves_of_a_whole_run_budget(tmp_path, write,
                                                                                       monkeypatch):
    fp = mask_volumes_with_a_large_pool(tmp_path, write)
    monkeypatch.setattr(planning, "time_step", lambda size, dims, fp, method, batches, precision="float32", **_:
                        3e-7 * size**3 * sum(batches))
    asked = []

    def preprocessing(settings):
        asked.append(settings)
        return 30.0

    # 3 minutes fit over 1,500 steps at 24^3, batches 8 + 16: no warm-up. With half a minute of them foreseen
    # for preprocessing, the steps are planned for the 2.5 minutes left, too few: the warm-up.
    roomy = planning.make_plan(fp, minutes=3, probe=True, method="pi_model")
    short = planning.make_plan(fp, minutes=3, probe=True, preprocessing=preprocessing, method="pi_model")
    assert roomy.settings["method.pi_model.warmup"] == 0.0 and roomy.preprocess_seconds is None
    assert short.settings["method.pi_model.warmup"] == planning.SHORT_RUN_WARMUP and short.preprocess_seconds == 30.0
    probe = short.probe[-1]
    assert probe["steps_in_budget"] == pytest.approx(planning._steps_in_budget(2.5, probe["seconds_per_step"]), abs=2)
    assert "what is left after ~30 s to preprocess" in short.reasons["preprocess.spatial_size"]
    # asked once, with the planned preprocessing at the largest size considered
    assert len(asked) == 1 and asked[0]["spatial_size"] == [28, 28, 28] and asked[0]["intensity"] == "minmax"
    # Preprocessing foreseen to take the whole budget leaves the steps a tenth of it (the trainer refuses a
    # run with no time left, not the plan).
    spent = planning.make_plan(fp, minutes=3, probe=True, preprocessing=lambda settings: 1000.0)
    assert spent.probe[-1]["steps_in_budget"] == pytest.approx(
        planning._steps_in_budget(0.3, spent.probe[-1]["seconds_per_step"]), abs=2)


def test_resampled_volumes_are_timed_at_the_spacing_of_the_largest_size(tmp_path, write, monkeypatch):
    fp = mri_like_volumes_of_mixed_spacing(tmp_path, write, (60, 60, 60))
    monkeypatch.setattr(planning, "time_step", lambda size, dims, fp, method, batches, precision="float32", **_:
                        1e-9 * size**3 * sum(batches))
    asked = []
    plan = planning.make_plan(fp, minutes=3, probe=True, preprocessing=lambda s: asked.append(s) or 1.0)
    assert asked[0]["spatial_size"] == [48] * 3 and asked[0]["intensity"] == "percentile"
    # the median scan's 60 mm field of view across 48 voxels; the plan's own choice is the same here
    assert asked[0]["target_spacing"] == [1.25] * 3 == plan.settings["preprocess.target_spacing"]


def test_preprocessing_is_foreseen_from_scans_timed(tmp_path, write, monkeypatch):
    import itertools
    import types

    from pipeline import data
    from pipeline.config import PreprocessConfig

    rng = np.random.default_rng(0)
    paths = [str(write.png(tmp_path / f"p{i}.png", (rng.random((64, 64)) * 255).astype(np.uint8))) for i in range(4)]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a picture")
    config = PreprocessConfig(spatial_size=[32, 32], resize="resize")
    assert data.seconds_to_preprocess(paths, 10, config) > 0
    # A clock that moves 0.1 s at each reading: every scan timed takes 0.1 s.
    clock = itertools.count(0.0, 0.1)
    monkeypatch.setattr(data, "time", types.SimpleNamespace(perf_counter=lambda: next(clock)))
    # fewer than 64 scans are preprocessed in this process, more by the workers after they start
    assert data.seconds_to_preprocess(paths, 10, config) == pytest.approx(10 * 0.1)
    assert data.seconds_to_preprocess([str(broken), *paths], 1000, config, workers=2) == pytest.approx(
        data.POOL_START_SECONDS + 1000 * 0.1 / 2)
    assert data.seconds_to_preprocess([str(broken)], 1000, config) == 0.0  # nothing timed, nothing foreseen
    # the time is the user's: timing stops once it has taken max_seconds
    timed = []
    transform = data.build_preprocess(config)
    monkeypatch.setattr(data, "build_preprocess", lambda config: lambda item: timed.append(item) or transform(item))
    data.seconds_to_preprocess(paths * 50, 1000, config, max_seconds=1.0)
    assert 2 <= len(timed) <= 6


def test_a_user_set_size_batches_or_precision_is_timed_for_the_warm_up(tmp_path, write, monkeypatch):
    fp = mask_volumes_with_a_large_pool(tmp_path, write)

    def stand_in(size, dims, fp, method, batches, precision="float32", network=None, **_):
        width = sum((network or {}).get("channels", [16, 32, 64])) / 112  # wider networks take longer
        return 3e-7 * size**3 * sum(batches) * (2 if precision == "float32" else 1) * width

    monkeypatch.setattr(planning, "time_step", stand_in)
    own = planning.make_plan(fp, minutes=3, probe=True, method="pi_model")
    # its own choice, 28^3 with 8 + 8 in bfloat16, fits ~1,540 steps: no warm-up
    assert own.settings["train.precision"] == "bfloat16" and own.settings["method.pi_model.warmup"] == 0.0
    fixed = {"preprocess.spatial_size": [28, 28, 28], "train.precision": "float32", "train.batch_size": 8}
    forced = planning.make_plan(fp, minutes=3, probe=True, fixed=fixed, method="pi_model")
    user_row = forced.probe[-1]
    assert user_row["set_by"] == "user" and user_row["batches"] == [8, 16] and user_row["precision"] == "float32"
    assert user_row["steps_in_budget"] < planning.TARGET_STEPS  # ~510 steps fit the run the user asked for
    assert forced.settings["method.pi_model.warmup"] == planning.SHORT_RUN_WARMUP
    assert f"~512 steps of {planning.DEFAULT_METHOD}" in forced.reasons["method.pi_model.warmup"]
    same = planning.make_plan(fp, minutes=3, probe=True, fixed={"train.precision": "bfloat16"}, method="pi_model")
    assert not any(row.get("set_by") == "user" for row in same.probe)  # the plan's own run: nothing more timed
    wide = planning.make_plan(fp, minutes=3, probe=True, fixed={"network.channels": [64, 128, 256]},
                              method="pi_model")
    assert wide.probe[-1]["set_by"] == "user" and wide.settings["method.pi_model.warmup"] == planning.SHORT_RUN_WARMUP


def test_the_default_methods_settings_go_with_the_default_method_whoever_chose_it(tmp_path, write):
    fp = mask_volumes_with_a_large_pool(tmp_path, write)
    baseline = planning.make_plan(fp, minutes=3, method="supervised", probe=False).settings
    assert not [key for key in baseline if key.startswith(f"method.{planning.DEFAULT_METHOD}.")]
    assert baseline["preprocess.spatial_size"] == planning.make_plan(fp, minutes=3, probe=False).settings[
        "preprocess.spatial_size"]  # a baseline trains on the inputs the default method would
    fp["counts"]["unlabelled"] = {"(unlabelled)": planning.MIN_UNLABELLED_FOR_SSL - 1}
    small_pool = planning.make_plan(fp, minutes=3, probe=False).settings
    assert small_pool["method.name"] == "supervised"
    assert not [key for key in small_pool if key.startswith(f"method.{planning.DEFAULT_METHOD}.")]
    # the baseline, asked for or chosen for a small pool, does not mix masks (pictures: the JPEG test)
    for settings in (baseline, small_pool):
        assert {key: settings[key] for key in settings if key.startswith("method.supervised.")} == {
            "method.supervised.mixup_alpha": 0.0}
    asked = planning.make_plan(fp, minutes=3, method=planning.DEFAULT_METHOD, probe=False).settings
    assert "method.supervised.mixup_alpha" not in asked  # the default method's plan holds none
    assert {key.rsplit(".", 1)[1]: asked[key] for key in asked
            if key.startswith(f"method.{planning.DEFAULT_METHOD}.")} == planning.DEFAULT_METHOD_PARAMS
    # the Pi-model, the default before, keeps the settings it was measured with when a user asks for it
    pi = planning.make_plan(fp, minutes=3, method="pi_model", probe=False).settings
    assert {key.rsplit(".", 1)[1]: pi[key] for key in pi
            if key.startswith("method.pi_model.")} == planning.TESTED_PARAMS["pi_model"]
    assert not [key for key in pi if key.startswith(f"method.{planning.DEFAULT_METHOD}.")]


def test_a_positive_class_the_data_lacks_is_refused_before_training(tmp_path, monkeypatch, caplog, write):
    monkeypatch.chdir(tmp_path)
    for index, folder in enumerate(["Tumour", "Normal"]):
        for i in range(12):
            write.png(tmp_path / "scans" / folder / f"{i}.png", write.image(100 * index + i))
    assert main(["run", "--scans", str(tmp_path / "scans"), "--positive", "tumour", "train.minutes=0.05", "--quiet"]) == 2
    assert "'tumour' is not one of the classes 'Normal', 'Tumour' (did you mean 'Tumour'?)" in caplog.text
    assert not (tmp_path / "runs").exists()  # nothing trained


def three_class_folder(root):
    """benign, malignant and normal class folders of 14 scans each."""
    scans = class_folder(root, n_per_class=14)
    (scans / "abnormal").rename(scans / "benign")
    rng = np.random.default_rng(1)
    for i in range(14):  # a bright bar: another finding
        array = (rng.random((20, 20)) * 60).astype(np.uint8)
        array[4:16, 8:12] = 230
        (scans / "malignant").mkdir(exist_ok=True)
        Image.fromarray(array).save(scans / "malignant" / f"m{i}.png")
    return scans


def test_several_abnormal_classes_are_screened_as_one(tmp_path, monkeypatch):
    scans = three_class_folder(tmp_path / "scans")
    monkeypatch.chdir(tmp_path)
    run = tiny_run(tmp_path, scans, "benign, malignant")
    checkpoint = json.loads((run / "checkpoint.json").read_text())
    assert checkpoint["classes"] == ["benign+malignant", "normal"]
    calibration = json.loads((run / "calibration.json").read_text())
    assert calibration["screening"]["positive_class"] == "benign+malignant"
    assert calibration["screening"]["n_positive"] == 6  # 3 calibration scans drawn from each joined class
    predictions = pd.read_csv(run / "test_predictions.csv")
    assert set(predictions["label"]) == {"benign+malignant", "normal"} and "p_benign+malignant" in predictions
    assert main(["score", str(scans / "malignant"), "--model", str(run), "--out", "report.csv", "--quiet"]) == 0
    report = pd.read_csv(tmp_path / "report.csv")
    assert len(report) == 14 and set(report["prediction"]) <= {"benign+malignant", "normal"}
    assert '"positive":"benign+malignant"' in (tmp_path / "report.html").read_text()


def test_naming_the_healthy_class_screens_every_other_class_as_one(tmp_path, monkeypatch):
    scans = three_class_folder(tmp_path / "scans")
    monkeypatch.chdir(tmp_path)
    run = tiny_run(tmp_path, scans, "normal", option="--healthy")
    assert json.loads((run / "checkpoint.json").read_text())["classes"] == ["benign+malignant", "normal"]
    planned = json.loads((run / "plan.json").read_text())["settings"]["data.positive_class"]
    assert planned["value"] == "benign+malignant" and planned["set_by"] == "plan"
    assert "every class but the healthy one, 'normal'" in planned["reason"]
    calibration = json.loads((run / "calibration.json").read_text())
    assert calibration["screening"]["positive_class"] == "benign+malignant"


def test_a_positive_class_of_any_finding_screens_every_class_but_the_healthy_one(tmp_path, monkeypatch):
    # RSNA intracranial haemorrhage: its "any" column is left out by ingest, the healthy scans are "no finding"
    scans = three_class_folder(tmp_path / "scans")
    (scans / "normal").rename(scans / "no finding")
    monkeypatch.chdir(tmp_path)
    run = tiny_run(tmp_path, scans, "any")
    assert json.loads((run / "checkpoint.json").read_text())["classes"] == ["benign+malignant", "no finding"]
    settings = json.loads((run / "plan.json").read_text())["settings"]
    assert settings["data.positive_class"]["value"] == "benign+malignant"
    assert settings["data.positive_class"]["reason"].startswith("--positive 'any': not a class, so every class but "
                                                                "the healthy one, 'no finding'")
    assert settings["data.healthy_class"]["value"] == "no finding"
    assert json.loads((run / "calibration.json").read_text())["screening"]["positive_class"] == "benign+malignant"
    # a knee's planes scored: a row per case beside the row per scan
    import shutil

    for plane in ("axial", "coronal"):
        (tmp_path / "knees" / plane).mkdir(parents=True)
        shutil.copy(scans / "malignant" / "m0.png", tmp_path / "knees" / plane / "0001.png")
    assert main(["score", str(tmp_path / "knees"), "--model", str(run), "--out", "knees.csv", "--quiet"]) == 0
    cases = pd.read_csv(tmp_path / "knees.cases.csv", dtype={"case": str})
    assert cases["case"].tolist() == ["0001"] and cases["views"].tolist() == [2]
    assert cases["view_names"].tolist() == ["axial|coronal"] and "p_benign+malignant" in cases
    assert "cases seen in several views" in (tmp_path / "knees.html").read_text()  # the review page says so too


def test_a_positive_finding_counts_every_scan_whose_labels_list_it(tmp_path, monkeypatch):
    from pipeline.stages.run import listed_with

    classes = ["Atelectasis|Effusion", "Effusion", "Effusion|Nodule", "No Finding", "Nodule"]
    assert listed_with("Effusion", classes) == ["Effusion", "Atelectasis|Effusion", "Effusion|Nodule"]
    assert listed_with("Atelectasis", classes) == ["Atelectasis|Effusion"]  # listed only with others
    assert listed_with("No Finding", classes) == [] and listed_with("Hernia", classes) == []
    check_positive_class("Atelectasis", classes)  # a finding the labels list is no unknown class
    # NIH's Finding Labels: a scan with Effusion and Nodule has Effusion; screening Effusion counts it.
    scans = three_class_folder(tmp_path / "scans")
    lines = ["file,label"] + [f"normal/normal{i}.png,No Finding" for i in range(14)]
    lines += [f"benign/abnormal{i}.png,Effusion" for i in range(14)]
    lines += [f"malignant/m{i}.png,Effusion|Nodule" for i in range(14)]
    (scans / "labels.csv").write_text("\n".join(lines) + "\n")
    monkeypatch.chdir(tmp_path)
    run = tiny_run(tmp_path, scans, "Effusion")
    assert json.loads((run / "checkpoint.json").read_text())["classes"] == ["No Finding", "with Effusion"]
    planned = json.loads((run / "plan.json").read_text())["settings"]["data.positive_class"]
    assert planned["value"] == "with Effusion" and planned["set_by"] == "command line"
    assert planned["reason"].startswith("--positive 'Effusion': every scan whose findings include 'Effusion'")
    calibration = json.loads((run / "calibration.json").read_text())
    assert calibration["screening"]["n_positive"] == 6  # 3 calibration scans drawn from each
    # widened before the split is drawn: one split, named for the screening, that training reuses
    [split] = (tmp_path / "data_manifests").glob("*.split.csv")
    assert ".screen-" in split.name and json.loads((run / "inputs.json").read_text())["split"]["path"].endswith(
        split.name)
    # a scored folder's labels: a combination training never saw is still a scan with Effusion
    (scans / "labels.csv").write_text("\n".join(lines).replace("m0.png,Effusion|Nodule", "m0.png,Effusion|Hernia")
                                      .replace("m1.png,Effusion|Nodule", "m1.png,Hernia") + "\n")
    assert main(["score", str(scans), "--model", str(run), "--out", "report.csv", "--quiet"]) == 0
    report = pd.read_csv(tmp_path / "report.csv", keep_default_na=False).set_index("scan_id")
    assert report.loc["malignant/m0.png", "folder_label"] == "with Effusion"
    assert report.loc["malignant/m1.png", "folder_label"] == ""  # Hernia alone: neither class of the model
    assert report.loc["malignant/m2.png", "folder_label"] == "with Effusion"
    assert report.loc["normal/normal0.png", "folder_label"] == "No Finding"


def test_small_classes_beside_a_positive_one_are_trained_as_one(tmp_path, monkeypatch):
    from pipeline.stages.split import OTHER_CLASSES

    scans = class_folder(tmp_path / "scans", n_per_class=14)
    rng = np.random.default_rng(2)
    lines = ["file,label"] + [f"{c}/{c}{i}.png,{c}" for c in ("normal", "abnormal") for i in range(14)]
    for k, finding in enumerate(["cyst", "scar", "stent"]):  # 4 scans each: too few for 3 + 3 once tested
        for i in range(4):
            (scans / "misc").mkdir(exist_ok=True)
            Image.fromarray((rng.random((20, 20)) * 60 + 40 * k).astype(np.uint8)).save(scans / "misc" / f"{finding}{i}.png")
            lines.append(f"misc/{finding}{i}.png,{finding}")
    (scans / "labels.csv").write_text("\n".join(lines) + "\n")
    monkeypatch.chdir(tmp_path)
    run = tiny_run(tmp_path, scans, "abnormal")
    assert json.loads((run / "checkpoint.json").read_text())["classes"] == [OTHER_CLASSES, "abnormal", "normal"]
    calibration = json.loads((run / "calibration.json").read_text())
    assert calibration["screening"]["positive_class"] == "abnormal"
    predictions = pd.read_csv(run / "test_predictions.csv", keep_default_na=False)
    assert OTHER_CLASSES in set(predictions["label"])  # the small classes' test scans, under their one class
    # scoring the labelled folder: a scan labelled 'cyst' is checked against the class it was trained as
    assert main(["score", str(scans), "--model", str(run), "--out", "report.csv", "--quiet"]) == 0
    report = pd.read_csv(tmp_path / "report.csv", keep_default_na=False).set_index("scan_id")
    assert report.loc["misc/cyst0.png", "folder_label"] == OTHER_CLASSES


def test_a_healthy_class_beside_many_findings_screens_them_as_not_healthy(tmp_path, monkeypatch):
    # VinDr-CXR with --healthy "No finding": 34 finding lists, whose names joined would take 1,000 characters.
    scans = three_class_folder(tmp_path / "scans")
    findings = {"benign": "Aortic enlargement|Cardiomegaly", "malignant": "Pleural thickening|Pulmonary fibrosis"}
    lines = ["file,label"] + [f"normal/normal{i}.png,No finding" for i in range(14)]
    lines += [f"{folder}/{stem}{i}.png,{label}" for (folder, label), stem in zip(findings.items(), ("abnormal", "m"))
              for i in range(14)]
    (scans / "labels.csv").write_text("\n".join(lines) + "\n")
    monkeypatch.chdir(tmp_path)
    run = tiny_run(tmp_path, scans, "No finding", option="--healthy")
    assert json.loads((run / "checkpoint.json").read_text())["classes"] == ["No finding", "not No finding"]
    planned = json.loads((run / "plan.json").read_text())["settings"]["data.positive_class"]
    assert planned["value"] == "not No finding" and "their names joined would take 69 characters" in planned["reason"]
    assert json.loads((run / "calibration.json").read_text())["screening"]["positive_class"] == "not No finding"
    # scoring a labelled folder: a finding training never saw is not "No finding"
    (scans / "labels.csv").write_text("\n".join(lines).replace("m0.png,Pleural thickening|Pulmonary fibrosis",
                                                               "m0.png,Nodule/Mass") + "\n")
    assert main(["score", str(scans), "--model", str(run), "--out", "report.csv", "--quiet"]) == 0
    report = pd.read_csv(tmp_path / "report.csv", keep_default_na=False).set_index("scan_id")
    assert report.loc["malignant/m0.png", "folder_label"] == "not No finding"
    assert report.loc["normal/normal0.png", "folder_label"] == "No finding"
    assert set(report["prediction"]) <= {"No finding", "not No finding"} and "p_not No finding" in report


def test_a_healthy_class_joins_the_parts_of_a_class_already_joined():
    from types import SimpleNamespace

    from pipeline.stages.run import healthy_screening

    data = SimpleNamespace(healthy_class="normal", positive_class="")
    classes = ["benign", "benign+malignant", "malignant", "normal"]  # a reviewer's verdicts say "benign+malignant"
    assert healthy_screening(SimpleNamespace(data=data), classes)[0] == "benign+malignant"
    many = [f"finding {k}" for k in range(8)] + ["not normal"]  # the long name, and a verdict of it
    assert healthy_screening(SimpleNamespace(data=data), [*many, "normal"])[0] == "not normal"


def test_a_healthy_class_listed_with_other_findings_is_pointed_out(caplog):
    from types import SimpleNamespace

    from pipeline.stages.run import healthy_screening

    data = SimpleNamespace(healthy_class="No Finding", positive_class="")
    classes = ["Edema", "Edema|Pleural Effusion", "No Finding", "No Finding|Support Devices"]  # CheXpert's findings
    with caplog.at_level("WARNING", logger="pipeline"):
        assert healthy_screening(SimpleNamespace(data=data), classes)[0] == "not No Finding"
    assert "1 class lists 'No Finding' with other findings (No Finding|Support Devices): screened abnormal" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="pipeline"):
        healthy_screening(SimpleNamespace(data=data), ["Edema", "No Finding"])
    assert not caplog.text


def test_several_positive_findings_are_screened_over_every_label_listing_one():
    from types import SimpleNamespace

    from pipeline.manifest import screened_members
    from pipeline.stages.run import findings_screening

    classes = ["Edema", "Edema|Pleural Effusion", "No Finding", "Pleural Effusion|Pneumonia", "Pneumonia",
               "Pleural Effusion"]
    data = SimpleNamespace(positive_class="Edema+Pneumonia", healthy_class="")
    # joined as classes, Edema|Pleural Effusion would be screened healthy
    positive, why = findings_screening(SimpleNamespace(data=data), classes)
    assert positive == "with Edema or Pneumonia"
    assert why == ("every scan whose findings include 'Edema' or 'Pneumonia': 4 labels list them ('Edema', "
                   "'Edema|Pleural Effusion', 'Pneumonia', ...)")
    assert screened_members(positive, classes) == ["Edema", "Edema|Pleural Effusion", "Pleural Effusion|Pneumonia",
                                                   "Pneumonia"]
    check_positive_class(positive, classes)
    data.positive_class = "No Finding+Edema"  # one listed with others is enough: both screened over every label
    assert findings_screening(SimpleNamespace(data=data), classes)[0] == "with No Finding or Edema"
    # classes no label lists with others: joined as ever
    assert findings_screening(SimpleNamespace(data=SimpleNamespace(positive_class="benign+malignant")),
                              ["benign", "malignant", "normal"]) is None


def test_a_healthy_class_the_data_lacks_or_given_with_a_positive_one_is_refused(tmp_path, monkeypatch, caplog):
    scans = three_class_folder(tmp_path / "scans")
    monkeypatch.chdir(tmp_path)
    base = ["run", "--scans", str(scans), "train.minutes=0.05", "--quiet"]
    assert main([*base, "--healthy", "Normal"]) == 2
    assert "data.healthy_class 'Normal' is not one of the classes 'benign', 'malignant', 'normal' (did you mean " \
           "'normal'?)" in caplog.text
    assert main([*base, "--healthy", "normal", "--positive", "benign"]) == 2
    assert "give --positive (the abnormal classes) or --healthy (the healthy class), not both" in caplog.text
    with pytest.raises(ConfigError, match="'normal' is also in data.positive_class"):
        load_config(None, ['data.healthy_class="normal"', 'data.positive_class="benign+normal"'])
    assert not (tmp_path / "runs").exists()


def test_joined_classes_are_only_classes_the_data_has():
    from pipeline.manifest import joined_classes

    assert joined_classes("benign+malignant", ["benign", "malignant", "normal"]) == ["benign", "malignant"]
    assert joined_classes("benign", ["benign", "normal"]) == []
    assert joined_classes("benign+cyst", ["benign", "malignant"]) == []
    with pytest.raises(ValueError, match="joins 'malignnt', which is not one of the classes"):
        check_positive_class("benign+malignnt", ["benign", "malignant", "normal"])


def test_the_classes_a_screened_class_takes_in():
    from pipeline.manifest import screened_members

    classes = ["Atelectasis|Effusion", "Effusion", "Effusion|Nodule", "No Finding", "Nodule"]
    assert screened_members("with Effusion", classes) == ["Atelectasis|Effusion", "Effusion", "Effusion|Nodule"]
    assert screened_members("not No Finding", classes) == ["Atelectasis|Effusion", "Effusion", "Effusion|Nodule",
                                                           "Nodule"]
    assert screened_members("with Hernia", classes) == [] and screened_members("not Hernia", classes) == []
    assert screened_members("Effusion", classes) == [] and screened_members("Effusion+Nodule", classes) == [
        "Effusion", "Nodule"]
    # a reviewer's verdict of the screened class is one of its classes
    assert screened_members("not normal", ["benign", "normal", "not normal"]) == ["benign", "not normal"]
    assert screened_members("with Effusion", ["Effusion|Nodule", "No Finding", "with Effusion"]) == [
        "Effusion|Nodule", "with Effusion"]
    # a literal class "with contrast" no other label lists is one class
    assert screened_members("with contrast", ["plain", "with contrast"]) == []


def test_a_positive_class_written_as_another_number_is_pointed_to():
    from pipeline.stages.run import check_positive_class

    with pytest.raises(ValueError, match="'1' is not one of the classes '0.0', '1.0' \\(did you mean '1.0'\\?\\)"):
        check_positive_class("1", ["0.0", "1.0"])
    with pytest.raises(ValueError, match="'x' is not one of the classes '0.0', '1.0'; set"):
        check_positive_class("x", ["0.0", "1.0"])


@pytest.mark.parametrize("classes, healthy", [
    (["Normal", "Tumour"], "Normal"),
    (["Bengin cases", "Malignant cases", "Normal cases"], "Normal cases"),  # IQ-OTH/NCCD lung CT
    (["healthy_controls", "patients"], "healthy_controls"),
    (["normal-cecum", "normal-pylorus", "polyps"], None),  # Kvasir: several look healthy, none is said
    (["abnormal", "normal"], "normal"),  # "abnormal" is not a word for healthy
    (["normal"], None),
    (["0", "1"], "0"), (["1.0", "0.0"], "0.0"), (["False", "True"], "False"),  # a target coded 0/1
    (["0", "2"], None), (["1", "2"], None), (["0", "1", "2"], None),  # grades, not a finding's absence
])
def test_the_class_that_looks_healthy(classes, healthy):
    from pipeline.stages.run import healthy_looking

    assert healthy_looking(classes) == healthy


def test_a_screening_run_whose_calibration_lacks_a_class_stops_before_training(tmp_path, monkeypatch, caplog):
    # the abnormal class's one patient outside the test set is drawn whole for training: calibration can hold none
    # of it, and calibrate, which chooses the operating point on both classes, would stop only after training
    scans = class_folder(tmp_path / "scans", n_per_class=12)
    rows = [f"normal/normal{i}.png,normal,n{i},{'test' if i < 3 else ''}" for i in range(12)]
    rows += [f"abnormal/abnormal{i}.png,abnormal,{'pa' if i < 6 else 'pb'},{'test' if i < 6 else ''}" for i in range(12)]
    (tmp_path / "labels.csv").write_text("file,label,group,split\n" + "\n".join(rows) + "\n")
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.ERROR, logger="pipeline"):
        assert main(["run", "--scans", str(scans), "--labels", str(tmp_path / "labels.csv"), "--positive", "abnormal",
                     "--quiet", "train.minutes=0.05"]) == 2
    assert "holds no 'abnormal' scan (of 2), and the screening operating point is chosen on both" in caplog.text
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").glob("*/checkpoint.json"))
