"""The batched views' geometry: the sampling grid warps as MONAI's affine layer does, only faster."""

import pytest
import torch
import torch.nn.functional as F
from monai.networks.layers import AffineTransform

from pipeline.augment import random_affine_matrices, sampling_grid


@pytest.mark.parametrize("shape", [(3, 2, 20, 24, 28), (4, 1, 24, 28), (2, 3, 17, 9)])
def test_sampling_grid_warps_as_monai_affine_transform(shape):
    generator = torch.Generator().manual_seed(0)
    theta = random_affine_matrices(shape[0], len(shape) - 2, 25.0, 0.2, 0.25, 0.15, generator)
    images = torch.rand(shape, generator=generator)
    expected = AffineTransform(normalized=True, padding_mode="zeros", align_corners=False)(images, theta)
    warped = F.grid_sample(images, sampling_grid(theta, shape[2:]), align_corners=False)
    assert torch.allclose(warped, expected, atol=1e-4)


def test_translation_along_the_first_array_axis_moves_rows_not_columns():
    image = torch.zeros(1, 1, 8, 8)
    image[0, 0, 2, 5] = 1.0
    theta = torch.tensor([[[1.0, 0.0, -0.5], [0.0, 1.0, 0.0]]])  # input row = output row - 2 pixels
    warped = F.grid_sample(image, sampling_grid(theta, (8, 8)), align_corners=False)
    assert warped[0, 0].nonzero().tolist() == [[4, 5]]
