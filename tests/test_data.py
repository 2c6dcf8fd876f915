"""Preprocessing: one MONAI chain for training and scoring, with clear errors per file."""

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from pipeline.config import PreprocessConfig
from pipeline.data import build_preprocess, build_training_data, load_images, preprocess_paths


def test_png_keeps_row_column_orientation(tmp_path):
    array = np.zeros((28, 28), dtype=np.uint8)
    array[2, 20] = 255
    Image.fromarray(array).save(tmp_path / "a.png")
    image = build_preprocess(PreprocessConfig())({"image": str(tmp_path / "a.png")})["image"]
    assert image.shape == (1, 28, 28)
    assert image[0, 2, 20] == 1.0 and image.sum() == 1.0


def test_colour_png_is_averaged_to_one_channel(tmp_path):
    array = np.zeros((10, 12, 3), dtype=np.uint8)
    array[..., 0] = 255
    Image.fromarray(array).save(tmp_path / "rgb.png")
    config = PreprocessConfig(spatial_size=[10, 12])
    image = build_preprocess(config)({"image": str(tmp_path / "rgb.png")})["image"]
    assert image.shape == (1, 10, 12)
    assert torch.allclose(image, torch.full_like(image, 1 / 3), atol=1e-5)


def test_a_grey_picture_given_to_a_colour_model_is_grey_in_each_colour(tmp_path):
    grey = np.random.default_rng(0).integers(0, 256, (10, 12), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "grey.png")  # one grey scan among dermoscopy photos, say
    config = PreprocessConfig(spatial_size=[10, 12], channels=3)
    image = build_preprocess(config)({"image": str(tmp_path / "grey.png")})["image"]
    assert image.shape == (3, 10, 12)
    for channel in image:
        assert torch.allclose(channel, torch.from_numpy(grey / 255.0).float(), atol=1e-6)


def test_pad_crop_and_resize_reach_the_configured_shape(tmp_path):
    Image.fromarray(np.arange(800).reshape(20, 40).astype(np.uint8)).save(tmp_path / "wide.png")
    for mode in ("pad_crop", "resize"):
        config = PreprocessConfig(spatial_size=[28, 28], resize=mode)
        assert build_preprocess(config)({"image": str(tmp_path / "wide.png")})["image"].shape == (
            1,
            28,
            28,
        )


def test_volume_with_singleton_fourth_axis_is_squeezed(tmp_path):
    volume = np.random.default_rng(0).random((8, 9, 10, 1)).astype(np.float32)
    nib.save(nib.Nifti1Image(volume, np.eye(4)), tmp_path / "v.nii.gz")
    config = PreprocessConfig(spatial_size=[8, 9, 10], intensity="minmax")
    image = build_preprocess(config)({"image": str(tmp_path / "v.nii.gz")})["image"]
    assert image.shape == (1, 8, 9, 10)


def test_dimension_mismatches_and_bad_values_are_errors_naming_the_reason(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.float32), np.eye(4)), tmp_path / "vol.nii.gz")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "flat.png")
    nan = np.zeros((8, 8, 8), np.float32)
    nan[1, 1, 1] = np.nan
    nib.save(nib.Nifti1Image(nan, np.eye(4)), tmp_path / "nan.nii.gz")
    (tmp_path / "broken.png").write_text("not a png")
    paths = [str(tmp_path / n) for n in ("vol.nii.gz", "flat.png", "nan.nii.gz", "broken.png")]
    _, errors_2d = preprocess_paths(
        paths[:1], PreprocessConfig(spatial_size=[8, 8]), workers=1, progress=False
    )
    assert "3D volume given to a 2D model" in errors_2d[0]
    _, errors_3d = preprocess_paths(
        paths[1:], PreprocessConfig(spatial_size=[8, 8, 8]), workers=1, progress=False
    )
    assert "2D image" in errors_3d[0]
    assert "NaN" in errors_3d[1]
    assert "cannot decode" in errors_3d[2]


def test_cache_is_reused_and_keyed_on_content(tmp_path, monkeypatch):
    paths = []
    for i in range(3):
        Image.fromarray((np.arange(784).reshape(28, 28) * (i + 1) % 256).astype(np.uint8)).save(tmp_path / f"{i}.png")
        paths.append(str(tmp_path / f"{i}.png"))
    frame = pd.DataFrame(
        {
            "scan_id": ["0", "1", "2"],
            "path": paths,
            "sha256": ["x", "y", "z"],
            "label": ["a", "b", ""],
            "subset": ["labelled", "calibration", "unlabelled"],
        }
    )
    first = load_images(frame, PreprocessConfig(), tmp_path / "cache", workers=1)
    import pipeline.data as data_module

    def no_reading(*args, **kwargs):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(data_module, "preprocess_paths", no_reading)
    data = build_training_data(frame, ["a", "b"], PreprocessConfig(), tmp_path / "cache", workers=1)
    assert torch.equal(first, data.images)
    assert data.labels.tolist() == [0, 1, -1]
    assert data.labelled.tolist() == [0] and data.unlabelled.tolist() == [2]
    changed = frame.assign(sha256=["x", "y", "changed"])
    with pytest.raises(AssertionError, match="cache"):
        load_images(changed, PreprocessConfig(), tmp_path / "cache", workers=1)


def test_labels_outside_the_configured_classes_are_rejected(tmp_path):
    frame = pd.DataFrame(
        {
            "scan_id": ["0"],
            "path": ["x"],
            "sha256": ["x"],
            "label": ["zebra"],
            "subset": ["labelled"],
        }
    )
    with pytest.raises(ValueError, match="zebra"):
        build_training_data(frame, ["a", "b"], PreprocessConfig(), tmp_path, workers=1)


def test_percentile_scaling_matches_monai_and_padcrop_skips_only_when_shape_matches():
    from monai.transforms import ResizeWithPadOrCropd, ScaleIntensityRangePercentilesd

    from pipeline.data import PadOrCropd, PercentileScaled

    volume = {"image": torch.from_numpy(np.random.default_rng(0).gamma(2.0, 50.0, (1, 9, 11, 7)).astype(np.float32))}
    ours = PercentileScaled("image", 0.5, 99.5)(volume)["image"]
    monai = ScaleIntensityRangePercentilesd("image", 0.5, 99.5, 0.0, 1.0, clip=True)(volume)["image"]
    torch.testing.assert_close(torch.as_tensor(ours), torch.as_tensor(monai), rtol=0, atol=1e-5)
    assert float(ours.min()) == 0.0 and float(ours.max()) == 1.0
    for shape in ((1, 9, 11, 7), (1, 12, 5, 7)):
        image = {"image": torch.rand(*shape)}
        ours = PadOrCropd("image", [9, 11, 7])(image)["image"]
        monai = ResizeWithPadOrCropd("image", [9, 11, 7])(image)["image"]
        assert torch.equal(torch.as_tensor(ours), torch.as_tensor(monai)) and tuple(ours.shape) == (1, 9, 11, 7)
