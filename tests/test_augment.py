"""Augmentations: recorded geometry, matched ROIs, pseudo clouds and radiometric transforms."""

from __future__ import annotations

import pytest
import torch

from eo_models.mcl_lc.augment import (
    AugmentParams,
    GeometricParams,
    GeometricTransform,
    make_view_pair,
    resample,
)
from eo_models.mcl_lc.radiometry import (
    add_pseudo_clouds,
    apply_radiometric_augmentations,
    gaussian_blur,
    random_pseudo_cloud_mask,
)
from eo_models.mcl_lc.rois import extract_rois, sample_matched_rois

SIZE = 32


def coordinate_image(height: int, width: int) -> torch.Tensor:
    """Two bands holding each pixel's own centre: x (column + 0.5) and y (row + 0.5)."""
    ys, xs = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    return torch.stack([xs, ys]).float()


@pytest.mark.parametrize(
    ("transform", "reference"),
    [
        (GeometricTransform.horizontal_flip((6, 8)), lambda x: x.flip(-1)),
        (GeometricTransform.vertical_flip((6, 8)), lambda x: x.flip(-2)),
        (GeometricTransform.rotate90(1, (6, 8)), lambda x: x.rot90(1, dims=(-2, -1))),
        (GeometricTransform.rotate90(2, (6, 8)), lambda x: x.rot90(2, dims=(-2, -1))),
        (GeometricTransform.rotate90(3, (6, 8)), lambda x: x.rot90(3, dims=(-2, -1))),
    ],
)
def test_flips_and_rotations_match_torch(transform: GeometricTransform, reference) -> None:
    image = torch.randn(3, 6, 8)
    torch.testing.assert_close(transform.apply(image), reference(image), atol=1e-5, rtol=0)
    # The recorded matrix maps each view pixel centre to the source pixel it shows.
    view_coords = coordinate_image(*transform.view_size).permute(1, 2, 0)
    torch.testing.assert_close(
        transform.view_to_source(view_coords).float(), reference(coordinate_image(6, 8)).permute(1, 2, 0)
    )


def test_crop_resize_and_inverse() -> None:
    transform = GeometricTransform.crop_resize((4.0, 6.0, 16.0, 20.0), (SIZE, SIZE), (SIZE, SIZE))
    corners = torch.tensor([[0.0, 0.0], [SIZE, SIZE]])
    expected_corners = torch.tensor([[6.0, 4.0], [26.0, 20.0]], dtype=torch.float64)
    torch.testing.assert_close(transform.view_to_source(corners), expected_corners)
    points = torch.rand(10, 2) * SIZE
    torch.testing.assert_close(transform.source_to_view(transform.view_to_source(points)), points.double())
    # Bilinear resampling reproduces a linear image exactly away from the border.
    view = transform.apply(coordinate_image(SIZE, SIZE))
    view_points = coordinate_image(SIZE, SIZE).permute(1, 2, 0)
    expected = transform.view_to_source(view_points).permute(2, 0, 1).float()
    torch.testing.assert_close(view[:, 2:-2, 2:-2], expected[:, 2:-2, 2:-2], atol=1e-4, rtol=0)


GEOMETRIES = {
    "hflip": GeometricParams((0.0, 0.0, SIZE, SIZE), True, False, 0),
    "vflip": GeometricParams((0.0, 0.0, SIZE, SIZE), False, True, 0),
    "rot90": GeometricParams((0.0, 0.0, SIZE, SIZE), False, False, 1),
    "rot180": GeometricParams((0.0, 0.0, SIZE, SIZE), False, False, 2),
    "rot270": GeometricParams((0.0, 0.0, SIZE, SIZE), False, False, 3),
    "crop": GeometricParams((3.0, 5.0, 20.0, 24.0), False, False, 0),
    "crop_hflip_rot90": GeometricParams((8.0, 2.0, 22.0, 18.0), True, False, 1),
    "crop_flips_rot270": GeometricParams((1.0, 9.0, 23.0, 21.0), True, True, 3),
}
PURELY_ORIENTATION = {"hflip", "vflip", "rot90", "rot180", "rot270"}


def _matrix(params: GeometricParams) -> torch.Tensor:
    return params.to_transform((SIZE, SIZE), (SIZE, SIZE)).matrix


@pytest.mark.parametrize("name_b", sorted(GEOMETRIES))
@pytest.mark.parametrize("name_a", ["identity", "crop_hflip_rot90"])
def test_matched_rois_point_to_the_same_source_pixel(name_a: str, name_b: str) -> None:
    identity = GeometricParams((0.0, 0.0, SIZE, SIZE), False, False, 0)
    params_a = identity if name_a == "identity" else GEOMETRIES[name_a]
    matrices_a = _matrix(params_a)[None].repeat(3, 1, 1)
    matrices_b = _matrix(GEOMETRIES[name_b])[None].repeat(3, 1, 1)
    source = coordinate_image(SIZE, SIZE)[None].repeat(3, 1, 1, 1)
    view_a = resample(source, matrices_a, (SIZE, SIZE))
    view_b = resample(source, matrices_b, (SIZE, SIZE))
    rois = sample_matched_rois(
        matrices_a,
        matrices_b,
        view_size=(SIZE, SIZE),
        num_rois=5,
        roi_size=8,
        generator=torch.Generator().manual_seed(0),
    )
    # The ROI centre read from each view's coordinate image is the sampled source centre.
    centre_a = rois.points_a.mean(dim=(2, 3))
    centre_b = rois.points_b.mean(dim=(2, 3))
    for view, centre in ((view_a, centre_a), (view_b, centre_b)):
        read = extract_rois(view, centre[:, :, None, None, :], (SIZE, SIZE))[..., 0, 0]
        torch.testing.assert_close(read.double(), rois.source_centres, atol=1e-4, rtol=0)
    # Element [i, j] of both ROIs points in the same direction from the centre in the source.
    offsets_a = _to_source(matrices_a, rois.points_a) - rois.source_centres[:, :, None, None]
    offsets_b = _to_source(matrices_b, rois.points_b) - rois.source_centres[:, :, None, None]
    assert torch.equal(torch.sign(offsets_a.round(decimals=9)), torch.sign(offsets_b.round(decimals=9)))
    if name_a == "identity" and name_b in PURELY_ORIENTATION:
        # No resampling scale: the two ROIs hold exactly the same source pixels.
        rois_a = extract_rois(view_a, rois.points_a, (SIZE, SIZE))
        rois_b = extract_rois(view_b, rois.points_b, (SIZE, SIZE))
        torch.testing.assert_close(rois_a, rois_b, atol=1e-4, rtol=0)


def _to_source(matrices: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    flat = points.reshape(points.shape[0], -1, 2)
    mapped = flat @ matrices[:, :2, :2].transpose(-1, -2) + matrices[:, None, :2, 2]
    return mapped.reshape(points.shape)


def test_random_view_pairs_are_matched_exactly() -> None:
    generator = torch.Generator().manual_seed(5)
    source = coordinate_image(SIZE, SIZE)[None].repeat(16, 1, 1, 1)
    views = make_view_pair(source, params=AugmentParams.geometric_only(), generator=generator, roi_size=8)
    rois = sample_matched_rois(
        views.matrices_a,
        views.matrices_b,
        view_size=(SIZE, SIZE),
        num_rois=12,
        roi_size=8,
        generator=generator,
    )
    for view, points in ((views.view_a, rois.points_a), (views.view_b, rois.points_b)):
        centre = points.mean(dim=(2, 3))[:, :, None, None, :]
        read = extract_rois(view, centre, (SIZE, SIZE))[..., 0, 0]
        torch.testing.assert_close(read.double(), rois.source_centres, atol=1e-3, rtol=0)
        # Every ROI lies inside its view.
        assert points.min() >= 0.5 - 1e-9 and points.max() <= SIZE - 0.5 + 1e-9


@pytest.mark.parametrize("bands", [1, 3, 4])
def test_pseudo_clouds_brighten_inside_and_leave_outside_unchanged(bands: int) -> None:
    generator = torch.Generator().manual_seed(bands)
    images = 0.1 + torch.rand(6, bands, 48, 48, generator=generator)
    mask, gain = random_pseudo_cloud_mask(6, (48, 48), params=AugmentParams(), generator=generator)
    clouded = add_pseudo_clouds(images, mask, gain)
    ratio = clouded / images
    inside = (mask == 1).unsqueeze(1).expand_as(images)
    outside = (mask == 0).unsqueeze(1).expand_as(images)
    assert inside.any() and outside.any()
    assert ratio[inside].min() >= 1.5 - 1e-6 and ratio[inside].max() <= 2.0 + 1e-6
    assert torch.equal(clouded[outside], images[outside])
    assert ratio.min() >= 1.0 - 1e-6 and ratio.max() <= 2.0 + 1e-6  # soft edges in between
    coverage = (mask > 0).float().mean(dim=(1, 2))
    assert coverage.min() > 0.0 and coverage.max() <= 0.31


def test_pseudo_clouds_on_normalised_images_act_in_physical_units() -> None:
    generator = torch.Generator().manual_seed(0)
    mean, std = [100.0, 200.0, 50.0, 80.0], [20.0, 30.0, 10.0, 15.0]
    physical = torch.tensor(mean).reshape(1, 4, 1, 1) * (0.5 + torch.rand(2, 4, 40, 40, generator=generator))
    normalised = (physical - torch.tensor(mean).reshape(1, 4, 1, 1)) / torch.tensor(std).reshape(1, 4, 1, 1)
    mask, gain = random_pseudo_cloud_mask(2, (40, 40), params=AugmentParams(), generator=generator)
    clouded = add_pseudo_clouds(normalised, mask, gain, band_mean=mean, band_std=std)
    back = clouded * torch.tensor(std).reshape(1, 4, 1, 1) + torch.tensor(mean).reshape(1, 4, 1, 1)
    inside = (mask == 1).unsqueeze(1).expand_as(physical)
    outside = (mask == 0).unsqueeze(1).expand_as(physical)
    ratio = back / physical
    assert ratio[inside].min() >= 1.5 - 1e-4 and ratio[inside].max() <= 2.0 + 1e-4
    assert torch.equal(clouded[outside], normalised[outside])


def test_gaussian_blur_keeps_constants_and_mean() -> None:
    constant = torch.full((2, 3, 16, 16), 2.5)
    torch.testing.assert_close(gaussian_blur(constant, torch.tensor([0.5, 2.0])), constant)
    image = torch.randn(1, 1, 16, 16)
    blurred = gaussian_blur(image, torch.tensor([1.5]))
    assert blurred.std() < image.std()


@pytest.mark.parametrize("bands", [1, 3, 4])
def test_radiometric_augmentations_on_any_band_count(bands: int) -> None:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(4, bands, 24, 24, generator=generator)
    always = AugmentParams(
        colour_probability=1.0, blur_probability=1.0, noise_probability=1.0, cloud_probability=1.0
    )
    out = apply_radiometric_augmentations(
        images, params=always, generator=generator, band_mean=[0.5] * bands, band_std=[0.2] * bands
    )
    assert out.shape == images.shape and torch.isfinite(out).all()
    assert not torch.equal(out, images)
    never = AugmentParams.geometric_only()
    assert torch.equal(apply_radiometric_augmentations(images, params=never, generator=generator), images)
