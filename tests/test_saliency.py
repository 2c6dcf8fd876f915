"""Saliency: the heatmap of a toy detection task peaks over the planted finding, in 2D and 3D,
and score puts overlays on the review page for flagged and abnormal-called scans."""

import numpy as np
import pytest
import torch

from pipeline.config import load_config
from pipeline.data import TrainingData
from pipeline.review import overlay_png
from pipeline.saliency import saliency_maps
from pipeline.trainer import Trainer


def spot_data(n: int, size: int, dims: int, seed: int = 0):
    """Noise; abnormal scans carry one bright blob at a random place. Returns data and blob centres."""
    rng = np.random.default_rng(seed)
    images = rng.random((n, 1) + (size,) * dims).astype(np.float32) * 0.5
    labels = np.arange(n) % 2
    centres = np.full((n, dims), -1)
    grid = np.stack(np.meshgrid(*[np.arange(size)] * dims, indexing="ij"))
    for i in np.flatnonzero(labels == 1):
        c = rng.integers(4, size - 4, dims)
        centres[i] = c
        blob = ((grid - c.reshape(-1, *[1] * dims)) ** 2).sum(0) <= 6
        images[i, 0][blob] = 1.0
    index = torch.arange(n)
    data = TrainingData(images=torch.from_numpy(images), labels=torch.from_numpy(labels), scan_ids=[str(i) for i in range(n)],
                        classes=["normal", "abnormal"], labelled=index[: n // 2], unlabelled=index[:0],
                        calibration=index[n // 2: 3 * n // 4], test=index[3 * n // 4:])
    return data, centres


@pytest.mark.parametrize("dims, size", [(2, 24), (3, 16)])
def test_gradcam_peaks_over_the_planted_blob(tmp_path, dims, size):
    data, centres = spot_data(240 if dims == 2 else 160, size, dims)
    config = load_config(None, [f"preprocess.spatial_size={[size] * dims}", "network.channels=[8,16,32]",
                                "network.pooling=max", "method.name=supervised", "train.steps=150",
                                "train.eval_every=150", "train.threads=2", "train.batch_size=32"])
    trainer = Trainer(config, data, tmp_path, progress=False)
    assert trainer.fit()["test_accuracy"] > 0.9
    abnormal = data.test[data.labels[data.test] == 1]
    heat = saliency_maps(trainer.method.prediction_network(), data.images[abnormal], class_index=1)
    assert heat.shape == (len(abnormal),) + (size,) * dims and 0 <= heat.min() and heat.max() <= 1
    peaks = np.array([np.unravel_index(h.argmax(), h.shape) for h in heat])
    distance = np.linalg.norm(peaks - centres[abnormal.numpy()], axis=1)
    assert np.mean(distance <= 4) >= 0.7, distance
    png = overlay_png(data.images[abnormal[0]].numpy(), heat[0])
    assert png[:4] == b"\x89PNG"


def test_a_colour_picture_is_shown_in_colour_and_a_volumes_every_channel_in_rows():
    import io

    from PIL import Image

    from pipeline.review import stack_cost, thumbnail_png

    photo = np.zeros((3, 16, 16), np.float32)
    photo[0, :8] = 1.0  # red above, blue below (a fundus photograph's red is no grey of its own)
    photo[2, 8:] = 1.0
    picture = np.asarray(Image.open(io.BytesIO(thumbnail_png(photo))).convert("RGB"))
    assert picture.shape == (96, 96, 3)
    assert tuple(picture[10, 48]) == (255, 0, 0) and tuple(picture[80, 48]) == (0, 0, 255)
    overlaid = np.asarray(Image.open(io.BytesIO(overlay_png(photo, np.zeros((16, 16), np.float32)))).convert("RGB"))
    assert tuple(overlaid[80, 48]) == (0, 0, 255)  # no heat: the colours as they are
    case = np.zeros((4, 8, 8, 8), np.float32)  # a case of four sequences: a row of three planes each
    assert Image.open(io.BytesIO(thumbnail_png(case))).size == (96, 128)
    # and its slices to page through cost the page four volumes' worth, a picture's one
    assert stack_cost(case) == 4 and stack_cost(case[:1]) == 1 and stack_cost(photo) == 1
