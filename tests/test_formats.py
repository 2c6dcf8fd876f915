"""TIFF and BMP through the one reading path, and system files skipped and counted, never errors."""

import numpy as np
import pytest
from PIL import Image

from pipeline.reading import ScanReadError, is_system_file, list_files, load_scan, system_files
from pipeline.stages.ingest import ingest


def test_16_bit_tiff_and_8_bit_bmp_read_like_png(tmp_path):
    wide = (np.arange(6 * 8).reshape(6, 8) * 1000).astype(np.uint16)
    Image.fromarray(wide).save(tmp_path / "xray.tif")
    small = (wide // 256).astype(np.uint8)
    Image.fromarray(small).save(tmp_path / "a.bmp")
    Image.fromarray(small).save(tmp_path / "a.png")
    tiff = load_scan(tmp_path / "xray.tif")
    assert tiff.array.dtype == np.uint16 and tiff.array.max() == 47000
    np.testing.assert_array_equal(tiff.array, wide)  # rows stay rows: same orientation as numpy
    np.testing.assert_array_equal(load_scan(tmp_path / "a.bmp").array, load_scan(tmp_path / "a.png").array)


def test_multi_page_tiff_is_an_error_that_says_so(tmp_path):
    pages = [Image.fromarray(np.full((5, 5), v, np.uint8)) for v in (10, 200)]
    pages[0].save(tmp_path / "stack.tiff", save_all=True, append_images=pages[1:])
    with pytest.raises(ScanReadError, match=r"multi-page TIFF \(2 pages\)"):
        load_scan(tmp_path / "stack.tiff")


def test_palette_cmyk_and_grey_alpha_pictures_are_read_as_their_intensities(tmp_path):
    rng = np.random.default_rng(0)
    colour = rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)
    paletted = Image.fromarray(colour).quantize(16)  # the palette's order is not its brightness
    paletted.save(tmp_path / "palette.png")
    np.testing.assert_array_equal(load_scan(tmp_path / "palette.png").array, np.asarray(paletted.convert("RGB")))
    grey = rng.integers(0, 255, (40, 48), dtype=np.uint8)
    Image.fromarray(grey).convert("LA").save(tmp_path / "grey_alpha.png")
    np.testing.assert_array_equal(load_scan(tmp_path / "grey_alpha.png").array, grey)
    Image.fromarray(colour).convert("CMYK").save(tmp_path / "print.jpg", quality=95)
    read = load_scan(tmp_path / "print.jpg").array.astype(int)
    assert read.shape == colour.shape and np.abs(read - colour).mean() < 12  # ink amounts would be inverted


def test_a_scan_whose_pixels_cannot_be_described_is_an_error_row_and_the_rest_are_kept(tmp_path, write, monkeypatch):
    import pipeline.stages.ingest as ingest_stage

    write.png(tmp_path / "scans" / "a" / "x.png", write.image(1))
    write.png(tmp_path / "scans" / "b" / "y.png", write.image(2))
    real = ingest_stage.perceptual_hash

    def fussy(array, is_volume=False):
        if array.ravel()[0] == write.image(2).ravel()[0]:
            raise ValueError("cannot reshape")
        return real(array, is_volume)

    monkeypatch.setattr(ingest_stage, "perceptual_hash", fussy)
    manifest = ingest(tmp_path / "scans", out=tmp_path / "m.csv", class_subfolders=True, workers=1).manifest
    rows = manifest.set_index("scan_id")
    assert rows.loc["a/x.png", "status"] == "ok"
    assert rows.loc["b/y.png", "status"] == "error" and "ValueError: cannot reshape" in rows.loc["b/y.png", "error"]


@pytest.mark.parametrize("relative, system", [
    (".DS_Store", True), ("sub/Thumbs.db", True), ("desktop.ini", True), ("__MACOSX/a/._x.png", True),
    (".ipynb_checkpoints/x.png", True), ("._scan.png", True), ("scan.png", False), ("a/b.nii.gz", False),
])
def test_system_files_are_recognised(relative, system):
    assert is_system_file(relative) is system


def folder_with_system_files(root, write):
    write.png(root / "yes" / "Y1.png", write.image(1))
    write.png(root / "no" / "N1.png", write.image(2))
    (root / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / "yes" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    write.png(root / "__MACOSX" / "yes" / "._Y1.png", write.image(3))
    write.png(root / ".ipynb_checkpoints" / "Y1-checkpoint.png", write.image(4))
    return root


def test_ingest_skips_and_counts_system_files(tmp_path, write):
    scans = folder_with_system_files(tmp_path / "scans", write)
    assert [p.name for p in list_files(scans)] == ["N1.png", "Y1.png"]
    assert len(system_files(scans)) == 4
    result = ingest(scans, class_subfolders=True, out=tmp_path / "m.csv")
    assert result.manifest["scan_id"].tolist() == ["no/N1.png", "yes/Y1.png"]
    assert (result.manifest["status"] == "ok").all()
    skipped = result.problems[result.problems["source"] == "skipped"]
    assert sorted(skipped["item"]) == sorted(system_files(scans))
    assert (result.problems["source"] == "skipped").sum() == len(result.problems)  # nothing else


def test_a_labels_row_naming_a_system_file_gets_a_clear_reason(tmp_path, write):
    scans = folder_with_system_files(tmp_path / "scans", write)
    labels = write.csv(tmp_path / "labels.csv", [{"file": "scans/yes/Y1.png", "label": "yes"},
                                                 {"file": "scans/yes/Thumbs.db", "label": "yes"}])
    result = ingest(scans, labels=labels, out=tmp_path / "m.csv")
    reasons = result.problems.loc[result.problems["source"] == "labels", "reason"].tolist()
    assert len(reasons) == 1 and "Thumbs.db is a system file" in reasons[0]


def test_a_picture_with_an_exif_orientation_is_read_turned_as_viewers_show_it(tmp_path):
    # A phone photo of a film: pixels stored sideways, EXIF orientation 6 (turn 90 degrees clockwise).
    stored = np.zeros((4, 6), np.uint8)
    stored[0, :] = 255  # the top row as stored
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "photo.jpg", exif=exif, quality=100)
    Image.fromarray(stored).save(tmp_path / "plain.jpg", quality=100)
    turned = load_scan(tmp_path / "photo.jpg").array
    assert turned.shape == (6, 4) and turned[:, -1].mean() > 200 and turned[:, 0].mean() < 50  # top row now right
    assert load_scan(tmp_path / "plain.jpg").array.shape == (4, 6)


@pytest.mark.parametrize("shape", [(40, 48, 1), (40, 48, 1, 1), (40, 48)])
def test_a_nifti_of_one_slice_is_a_2d_image(tmp_path, shape):
    import nibabel as nib

    values = np.random.default_rng(0).normal(100, 20, shape).astype(np.float32)
    nib.save(nib.Nifti1Image(values, np.diag([0.7, 0.7, 3.0, 1.0])), tmp_path / "slice.nii.gz")
    scan = load_scan(tmp_path / "slice.nii.gz")
    assert scan.shape == (40, 48) and not scan.is_volume and scan.spacing == pytest.approx((0.7, 0.7))
    np.testing.assert_array_equal(scan.array, values.reshape(40, 48))
    nib.save(nib.Nifti1Image(np.ones((40, 48, 2), np.float32), np.eye(4)), tmp_path / "two.nii.gz")
    assert load_scan(tmp_path / "two.nii.gz").is_volume  # two slices are a volume still
