"""TIFF and BMP through the one reading path, and system files skipped and counted, never errors."""

import numpy as np
import pytest
from PIL import Image

from pipeline.reading import (
    ScanReadError,
    is_scan_file,
    is_system_file,
    list_files,
    load_scan,
    system_files,
)
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


@pytest.mark.parametrize("name, options", [("x.webp", {"lossless": True}), ("x.jp2", {"irreversible": False}),
                                           ("mdb001.pgm", {}), ("x.PPM", {})])  # Netpbm: mini-MIAS's .pgm
def test_webp_jpeg_2000_and_netpbm_pictures_read_like_png(tmp_path, name, options):
    grey = np.random.default_rng(4).integers(0, 256, (20, 24), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / name, **options)
    read = load_scan(tmp_path / name).array
    assert is_scan_file(tmp_path / name)
    if read.ndim == 3:  # WebP has no grey mode: grey is stored as RGB, as the plan reads it
        assert (read == read[..., :1]).all()
        read = read[..., 0]
    np.testing.assert_array_equal(read, grey)  # lossless: the same values
    frames = [Image.fromarray(np.full((8, 8), v, np.uint8)) for v in (10, 200)]
    frames[0].save(tmp_path / "moving.webp", save_all=True, append_images=frames[1:])
    with pytest.raises(ScanReadError, match=r"animated picture \(2 pages\)"):
        load_scan(tmp_path / "moving.webp")


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
    real = ingest_stage.perceptual_hashes

    def fussy(array, is_volume=False):
        if array.ravel()[0] == write.image(2).ravel()[0]:
            raise ValueError("cannot reshape")
        return real(array, is_volume)

    monkeypatch.setattr(ingest_stage, "perceptual_hashes", fussy)
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


def volume_in_every_format(folder, values, affine):
    """``values`` saved as NIfTI, Analyze, MGH, MetaImage (one file and two) and NRRD (one file and two)."""
    import nibabel as nib
    import SimpleITK as sitk

    folder.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(values, affine), folder / "v.nii.gz")
    nib.save(nib.AnalyzeImage(values, affine), folder / "v.hdr")
    nib.save(nib.MGHImage(values, affine), folder / "v.mgz")
    image = sitk.ReadImage(str(folder / "v.nii.gz"))
    for name in ("v.mha", "v_mhd.mhd", "v.nrrd", "v_nhdr.nhdr"):
        sitk.WriteImage(image, str(folder / name))
    return ["v.nii.gz", "v.hdr", "v.mgz", "v.mha", "v_mhd.mhd", "v.nrrd", "v_nhdr.nhdr"]


def test_every_volume_format_reads_as_its_nifti_does(tmp_path):
    values = np.random.default_rng(0).normal(100, 20, (10, 12, 14)).astype(np.float32)
    # axes swapped and flipped, uneven voxels, an origin: orientation and spacing must survive each format
    affine = np.array([[0, -1.5, 0, 3], [1.2, 0, 0, -4], [0, 0, 2, 5], [0, 0, 0, 1]], dtype=float)
    names = volume_in_every_format(tmp_path, values, affine)
    assert {path.name for path in list_files(tmp_path)} == set(names)  # the voxel files go with their headers
    for name in names:
        scan = load_scan(tmp_path / name)
        assert scan.is_volume, name
        np.testing.assert_array_equal(scan.array, values, err_msg=name)
        assert scan.spacing == pytest.approx((1.2, 1.5, 2.0)), name
        if name != "v.hdr":  # Analyze keeps voxel sizes and no rotation
            np.testing.assert_allclose(scan.affine, affine, atol=1e-5, err_msg=name)


def test_metaimage_of_one_slice_is_2d_and_a_colour_or_damaged_one_an_error(tmp_path):
    import SimpleITK as sitk

    flat = np.random.default_rng(1).normal(100, 20, (40, 48)).astype(np.float32)
    sitk.WriteImage(sitk.GetImageFromArray(flat), str(tmp_path / "slice.mha"))
    scan = load_scan(tmp_path / "slice.mha")
    assert not scan.is_volume and scan.shape == (48, 40)  # (x, y), as a NIfTI of one slice reads
    np.testing.assert_array_equal(scan.array, flat.T)
    colour = np.random.default_rng(2).integers(0, 255, (40, 48, 3), dtype=np.uint8)
    sitk.WriteImage(sitk.GetImageFromArray(colour, isVector=True), str(tmp_path / "colour.mha"))
    with pytest.raises(ScanReadError, match="3 values per voxel"):
        load_scan(tmp_path / "colour.mha")
    (tmp_path / "broken.nrrd").write_bytes(b"NRRD0004\ntype: short\ndimension: 3\nsizes: 4 4 4\nencoding: raw\n\n")
    with pytest.raises(ScanReadError, match="cannot decode as NRRD .*endian.*the header may be damaged"):
        load_scan(tmp_path / "broken.nrrd")


def test_ingest_of_two_file_volumes_labels_hashes_and_problems(tmp_path, write):
    import nibabel as nib

    rng = np.random.default_rng(3)
    scans = tmp_path / "scans"
    for subject in ("OAS1_0001_MR1", "OAS1_0002_MR1"):  # headers alike, voxels not: not duplicates
        (scans / subject).mkdir(parents=True)
        nib.save(nib.AnalyzeImage(rng.normal(100, 20, (8, 8, 8)).astype(np.float32), np.eye(4)),
                 scans / subject / "t88.hdr")
    assert (scans / "OAS1_0001_MR1" / "t88.hdr").read_bytes() == (scans / "OAS1_0002_MR1" / "t88.hdr").read_bytes()
    (scans / "orphan.raw").write_bytes(b"\0" * 64)
    labels = write.csv(tmp_path / "labels.csv", [{"file": "scans/OAS1_0001_MR1/t88.img", "label": "0"},
                                                 {"file": "scans/OAS1_0002_MR1/t88.hdr", "label": "1"}])
    result = ingest(scans, labels=labels, out=tmp_path / "m.csv")
    rows = result.manifest.set_index("scan_id")
    assert sorted(rows.index) == ["OAS1_0001_MR1/t88.hdr", "OAS1_0002_MR1/t88.hdr"]
    assert (rows["status"] == "ok").all() and rows["label"].tolist() == ["0", "1"]
    assert rows["sha256"].nunique() == 2 and rows.loc["OAS1_0001_MR1/t88.hdr", "shape"] == "8x8x8"
    problems = result.problems.set_index("item")
    assert problems["reason"].tolist() == [problems.loc["orphan.raw", "reason"]]
    assert "not a scan file" in problems.loc["orphan.raw", "reason"]


def test_numpy_arrays_are_pictures_or_volumes_by_their_shape_and_never_unpickled(tmp_path):
    rng = np.random.default_rng(0)
    grey, colour = rng.integers(0, 255, (20, 24), np.uint8), rng.integers(0, 255, (20, 24, 3), np.uint8)
    knee = rng.normal(80, 20, (18, 32, 32)).astype(np.float32)  # MRNet: (slices, rows, columns)
    for name, values in (("grey.npy", grey), ("colour.npy", colour), ("knee.npy", knee),
                         ("slice.npy", grey[None]), ("three.npy", knee[:3])):
        np.save(tmp_path / name, values)
    assert not load_scan(tmp_path / "grey.npy").is_volume and load_scan(tmp_path / "grey.npy").shape == (20, 24)
    assert load_scan(tmp_path / "slice.npy").shape == (20, 24)  # a singleton axis dropped
    read = load_scan(tmp_path / "colour.npy")
    assert not read.is_volume and read.shape == (20, 24, 3)
    read = load_scan(tmp_path / "knee.npy")
    assert read.is_volume and read.spacing == (1.0, 1.0, 1.0) and read.source_dtype == "float32"
    np.testing.assert_array_equal(read.array, knee)
    assert load_scan(tmp_path / "three.npy").is_volume  # three slices of 32 columns: not RGB
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ScanReadError, match="Python objects.*unpickling can run code"):
        load_scan(tmp_path / "objects.npy")
    np.save(tmp_path / "series.npy", rng.normal(size=(2, 3, 8, 8, 8)))
    with pytest.raises(ScanReadError, match=r"shape \(2, 3, 8, 8, 8\)"):
        load_scan(tmp_path / "series.npy")
    (tmp_path / "bad.npy").write_bytes(b"not numpy")
    with pytest.raises(ScanReadError, match="cannot decode as a NumPy array"):
        load_scan(tmp_path / "bad.npy")
    result = ingest(tmp_path, out=tmp_path / "m.csv")
    assert dict(zip(result.manifest["scan_id"], result.manifest["shape"]))["knee.npy"] == "18x32x32"
    assert set(result.manifest.loc[result.manifest["status"] == "error", "scan_id"]) == {
        "objects.npy", "series.npy", "bad.npy"}


def test_a_model_of_volumes_refuses_a_colour_picture_however_its_array_looks(tmp_path):
    # a screenshot in a study of MR series: (64, 64, 3) is a picture's colours, not a volume's slices
    from pipeline.data import LoadScand

    pixels = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "screen.png")
    with pytest.raises(ScanReadError, match="expected a 3D volume, got a 2D colour picture of shape"):
        LoadScand(keys=["image"], spatial_dims=3, channels=1)({"image": str(tmp_path / "screen.png")})
    np.save(tmp_path / "volume.npy", pixels[..., :2])  # (64, 64, 2): a volume of two slices
    assert LoadScand(keys=["image"], spatial_dims=3, channels=1)({"image": str(tmp_path / "volume.npy")})[
        "image"].shape == (1, 64, 64, 2)
