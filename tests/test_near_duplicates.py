"""Leakage check: re-saved and resized copies of a scan are found and kept on one side of the split."""

import io

import numpy as np
import pandas as pd
from PIL import Image

from pipeline.similarity import near_duplicate_groups, perceptual_hash
from pipeline.stages.ingest import ingest
from pipeline.stages.split import make_split


def radiograph(seed: int, size: int = 96) -> np.ndarray:
    """A smooth grey picture with a few blobs, different for every seed."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    picture = 60 + 40 * np.sin(6 * x + rng.random() * 6) * np.cos(4 * y + rng.random() * 6)
    for _ in range(6):
        cy, cx, r = rng.random(3) * [1, 1, 0.2] + [0, 0, 0.05]
        picture += 120 * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / r**2)
    return np.clip(picture + rng.normal(0, 4, picture.shape), 0, 255).astype(np.uint8)


def planted_folder(root):
    """20 distinct scans per class; scan 0 of each class re-saved as JPEG, scan 1 resized and
    stored as RGB, scan 2 both darkened and shrunk."""
    for label, offset in (("normal", 0), ("abnormal", 100)):
        for i in range(20):
            path = root / label / f"{label}{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(radiograph(offset + i)).save(path)
        first = Image.fromarray(radiograph(offset))
        first.save(root / label / f"{label}0_copy.jpg", quality=60)
        Image.fromarray(radiograph(offset + 1)).resize((150, 150)).convert("RGB").save(root / label / f"{label}1_big.png")
        darker = (radiograph(offset + 2) * 0.7).astype(np.uint8)
        Image.fromarray(darker).resize((64, 64)).save(root / label / f"{label}2_small.png")
    return root


def test_hash_is_close_for_copies_and_far_for_other_scans():
    original = radiograph(1)
    buffer = io.BytesIO()
    Image.fromarray(original).save(buffer, "JPEG", quality=50)
    copy = np.asarray(Image.open(buffer))
    resized = np.asarray(Image.fromarray(original).resize((70, 70)))
    hashes = [perceptual_hash(a) for a in (original, copy, resized, radiograph(2), radiograph(3))]
    pairs = {(i, j) for i, j, _ in near_duplicate_groups(hashes)}
    assert pairs == {(0, 1), (0, 2), (1, 2)}
    assert perceptual_hash(np.zeros((80, 80))) == ""  # a constant image has no hash, matches nothing
    assert perceptual_hash(original[:40, :40]) == ""  # nor a thumbnail too small to tell a copy from a look-alike


def test_ingest_reports_near_duplicates_and_split_keeps_each_group_on_one_side(tmp_path):
    scans = planted_folder(tmp_path / "scans")
    result = ingest(scans, class_subfolders=True, out=tmp_path / "m.csv")
    manifest = result.manifest.set_index("scan_id")
    groups = manifest.loc[manifest["duplicate_group"] != "", "duplicate_group"]
    expected = {"normal/normal0.png": "normal/normal0.png", "normal/normal0_copy.jpg": "normal/normal0.png",
                "normal/normal1.png": "normal/normal1.png", "normal/normal1_big.png": "normal/normal1.png",
                "normal/normal2.png": "normal/normal2.png", "normal/normal2_small.png": "normal/normal2.png"}
    assert {k: v for k, v in groups.items() if k.startswith("normal/")} == expected
    assert groups.nunique() == 6 and len(groups) == 12  # three pairs per class, nothing else
    near = result.problems[result.problems["source"] == "near-duplicate"]
    assert set(near["item"]) == set(groups.index)
    assert "normal/normal0.png" in near.set_index("item").loc["normal/normal0_copy.jpg", "reason"]

    for seed in range(6):
        split = pd.read_csv(make_split(tmp_path / "m.csv", out=tmp_path / f"s{seed}.csv", labels_per_class=4,
                                       calibration_per_class=4, test_fraction=0.3, selection="random", seed=seed))
        subset = split.set_index("scan_id")["subset"]
        for _, members in groups.groupby(groups):
            assert subset[members.index].nunique() == 1, f"seed {seed}: {list(members.index)} split apart"


def test_a_near_duplicate_of_a_test_scan_joins_the_test_set(tmp_path, write, caplog):
    scans = planted_folder(tmp_path / "scans")
    rows = [{"file": f"scans/{p.relative_to(scans).as_posix()}", "label": p.parent.name,
             "split": "test" if p.name in ("normal0.png", "abnormal0.png", "normal5.png") else "train"}
            for p in sorted(scans.rglob("*.*"))]
    labels = write.csv(tmp_path / "labels.csv", rows)
    ingest(scans, labels=labels, out=tmp_path / "m.csv")
    caplog.set_level("WARNING")
    split = pd.read_csv(make_split(tmp_path / "m.csv", out=tmp_path / "s.csv", labels_per_class=3,
                                   calibration_per_class=3, selection="random"))
    subset = split.set_index("scan_id")["subset"]
    assert subset["normal/normal0_copy.jpg"] == "test" and subset["abnormal/abnormal0_copy.jpg"] == "test"
    assert (subset == "test").sum() == 5
    assert "2 scans join the test set as near duplicates" in caplog.text


def test_large_chains_of_look_alike_scans_are_not_merged_and_volumes_get_no_hash(tmp_path, caplog):
    rng = np.random.default_rng(0)
    ramp = np.tile(np.linspace(0, 200, 64), (64, 1))
    for i in range(25):  # one smooth ramp, 25 times with faint noise: alike, but not copies of one scan
        Image.fromarray((ramp + rng.normal(0, 1, ramp.shape)).clip(0, 255).astype(np.uint8)).save(tmp_path / f"r{i}.png")
    caplog.set_level("WARNING")
    result = ingest(tmp_path, out=tmp_path / "m.csv")
    assert (result.manifest["duplicate_group"] == "").all()
    assert "25 scans look alike in chains of over 20" in caplog.text
    assert perceptual_hash(rng.random((8, 8, 8)), is_volume=True) == ""


def test_a_near_duplicate_in_another_class_is_reported_with_both_labels(tmp_path):
    scans = tmp_path / "scans"
    for label, seeds in (("normal", (1, 2)), ("abnormal", (3, 4))):
        (scans / label).mkdir(parents=True)
        for seed in seeds:
            Image.fromarray(radiograph(seed)).save(scans / label / f"{seed}.png")
    Image.fromarray(radiograph(1)).save(scans / "abnormal" / "1_resaved.jpg", quality=60)
    problems = ingest(scans, class_subfolders=True, out=tmp_path / "m.csv").problems.set_index("item")
    assert "labelled 'abnormal' here and 'normal' there" in problems.loc["abnormal/1_resaved.jpg", "reason"]
    assert "labelled 'normal' here and 'abnormal' there" in problems.loc["normal/1.png", "reason"]


def sector(seed: int, rows: int = 192, cols: int = 256) -> np.ndarray:
    """An ultrasound-like sector of speckle on black, brightening to the right: every one looks like
    the others once shrunk to 16x16, but no two share their speckle."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:rows, 0:cols] / rows
    radius, angle = np.hypot(x - cols / rows / 2, y + 0.1), np.arctan2(x - cols / rows / 2, y + 0.1)
    inside = (radius > 0.2) & (radius < 1.05) & (np.abs(angle) < 0.6)
    echo = 0.2 + 0.8 * x * rows / cols
    return (np.where(inside, echo * rng.rayleigh(1.0, (rows, cols)), 0) * 160).clip(0, 255).astype(np.uint8)


def test_look_alike_pictures_are_not_copies_but_their_copies_are(tmp_path, caplog):
    for seed in range(12):
        Image.fromarray(sector(seed)).save(tmp_path / f"us{seed}.png")
    Image.fromarray(sector(0)).save(tmp_path / "us0_copy.jpg", quality=60)
    Image.fromarray(sector(1)).resize((384, 288)).save(tmp_path / "us1_big.png")
    caplog.set_level("INFO")
    manifest = ingest(tmp_path, out=tmp_path / "m.csv").manifest.set_index("scan_id")
    groups = manifest.loc[manifest["duplicate_group"] != "", "duplicate_group"]
    assert groups.to_dict() == {"us0.png": "us0.png", "us0_copy.jpg": "us0.png",
                                "us1.png": "us1.png", "us1_big.png": "us1.png"}
    assert "the scans look alike" in caplog.text


def test_a_cropped_copy_among_distinct_pictures_is_still_a_near_duplicate(tmp_path):
    for seed in range(10):
        Image.fromarray(radiograph(seed, size=160)).save(tmp_path / f"r{seed}.png")
    cropped = Image.fromarray(radiograph(2, size=160)).crop((6, 6, 157, 154)).resize((150, 150))
    Image.fromarray((np.asarray(cropped) * 0.8 + 20).astype(np.uint8)).save(tmp_path / "r2_cropped.png")
    manifest = ingest(tmp_path, out=tmp_path / "m.csv").manifest.set_index("scan_id")
    groups = manifest.loc[manifest["duplicate_group"] != "", "duplicate_group"]
    assert groups.to_dict() == {"r2.png": "r2.png", "r2_cropped.png": "r2.png"}


def silhouette(seed: int, size: int = 256) -> np.ndarray:
    """A bright half-lens on black with a fine texture of its own: the same picture to a 16x16 hash
    (as mammograms of one side are), a different one to a 32x32 hash."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    inside = (x - 1) ** 2 / 0.7 + (y - 0.5) ** 2 / 0.25 < 1
    texture = 0.3 * np.sin(x * size / 3 * rng.uniform(0.8, 1.2) + rng.uniform(0, 6)) * np.cos(
        y * size / 3 * rng.uniform(0.8, 1.2) + rng.uniform(0, 6))
    return (np.where(inside, 0.9 - 0.4 * x + texture, 0) * 200 + 20).clip(0, 255).astype(np.uint8)


def test_pictures_alike_only_in_outline_are_not_copies(tmp_path):
    for seed in range(10):  # the set does not look alike: most pictures are far from one another
        Image.fromarray(radiograph(seed, size=160)).save(tmp_path / f"r{seed}.png")
    for seed in range(5):
        Image.fromarray(silhouette(seed)).save(tmp_path / f"s{seed}.png")
    Image.fromarray(silhouette(0)).save(tmp_path / "s0_copy.jpg", quality=75)
    manifest = ingest(tmp_path, out=tmp_path / "m.csv").manifest.set_index("scan_id")
    groups = manifest.loc[manifest["duplicate_group"] != "", "duplicate_group"]
    assert groups.to_dict() == {"s0.png": "s0.png", "s0_copy.jpg": "s0.png"}
