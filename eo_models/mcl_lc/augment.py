"""Augmentations for mCL-LC on any band count, with recorded geometry and matched ROIs.

Tang et al. (WACV 2023), Sec. 3.3: spatial transforms (random crop and resize, flips, rotation) and
"temporal" ones (colour distortion, Gaussian blur, random noise), plus the paper's pseudo-cloud noise.
Sec. 3.2 needs matched ROIs whose centres "point to the same position in the original image", so every
spatial transform is recorded as an affine matrix from view pixel coordinates to source pixel
coordinates (:class:`GeometricTransform`), and ROIs are matched through those matrices.

Coordinates are continuous ``(x, y)`` = (column, row): pixel ``(i, j)`` covers ``[j, j+1) x [i, i+1)``
and its centre is ``(j + 0.5, i + 0.5)``. This is the ``align_corners=False`` convention of
``grid_sample``/``interpolate``, so resampling and ROI extraction agree exactly.

Images are tensors (C, H, W) or batches (N, C, H, W) of normalised values. Colour distortion and
pseudo clouds act on physical values (non-negative, reflectance-like), so they take the band mean and
std used for normalisation and undo it internally.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = [
    "AugmentParams",
    "GeometricParams",
    "GeometricTransform",
    "MatchedRois",
    "ViewPair",
    "add_pseudo_clouds",
    "apply_radiometric_augmentations",
    "colour_distortion",
    "extract_rois",
    "gaussian_blur",
    "make_view_pair",
    "orientation",
    "random_pseudo_cloud_mask",
    "resample",
    "sample_geometric_params",
    "sample_matched_rois",
    "sample_points",
]

Size = tuple[int, int]


# --------------------------------------------------------------------------------------------------
# Geometry
# --------------------------------------------------------------------------------------------------


def _affine(a: float, b: float, c: float, d: float, e: float, f: float) -> torch.Tensor:
    return torch.tensor([[a, b, c], [d, e, f], [0.0, 0.0, 1.0]], dtype=torch.float64)


def _apply_matrix(matrix: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    # matrix (..., 3, 3) and points (..., K, 2) broadcast; computed in float64 for exact integers.
    pts = points.to(torch.float64)
    linear, offset = matrix[..., :2, :2], matrix[..., :2, 2]
    return pts @ linear.transpose(-1, -2) + offset.unsqueeze(-2)


@dataclass(frozen=True)
class GeometricTransform:
    """An axis-aligned affine map from view pixel coordinates to source pixel coordinates.

    Attributes:
        matrix: (3, 3) float64; ``source = matrix @ (x, y, 1)`` for a view point ``(x, y)``.
        source_size: (height, width) of the image the view was made from.
        view_size: (height, width) of the view.
    """

    matrix: torch.Tensor
    source_size: Size
    view_size: Size

    @classmethod
    def identity(cls, size: Size) -> GeometricTransform:
        """The view is the source."""
        return cls(torch.eye(3, dtype=torch.float64), size, size)

    @classmethod
    def crop_resize(
        cls, box: tuple[float, float, float, float], out_size: Size, source_size: Size
    ) -> GeometricTransform:
        """Crop ``box`` = (top, left, height, width) of the source and resize it to ``out_size``."""
        top, left, height, width = box
        matrix = _affine(width / out_size[1], 0.0, left, 0.0, height / out_size[0], top)
        return cls(matrix, source_size, out_size)

    @classmethod
    def horizontal_flip(cls, size: Size) -> GeometricTransform:
        """Mirror left-right (``torch.flip(image, dims=[-1])``)."""
        return cls(_affine(-1.0, 0.0, size[1], 0.0, 1.0, 0.0), size, size)

    @classmethod
    def vertical_flip(cls, size: Size) -> GeometricTransform:
        """Mirror top-bottom (``torch.flip(image, dims=[-2])``)."""
        return cls(_affine(1.0, 0.0, 0.0, 0.0, -1.0, size[0]), size, size)

    @classmethod
    def rotate90(cls, k: int, size: Size) -> GeometricTransform:
        """Rotate by ``k`` quarter turns like ``torch.rot90(image, k, dims=(-2, -1))``."""
        transform = cls.identity(size)
        for _ in range(k % 4):
            height, width = transform.view_size
            # view pixel (i, j) shows source pixel (j, width - 1 - i) of the previous image.
            quarter = cls(_affine(0.0, -1.0, width, 1.0, 0.0, 0.0), (height, width), (width, height))
            transform = transform.then(quarter)
        return transform

    def then(self, following: GeometricTransform) -> GeometricTransform:
        """The transform of applying ``self`` and then ``following`` to the result."""
        if following.source_size != self.view_size:
            raise ValueError(
                f"cannot chain: view size {self.view_size} != next source size {following.source_size}"
            )
        return GeometricTransform(self.matrix @ following.matrix, self.source_size, following.view_size)

    def view_to_source(self, points: torch.Tensor) -> torch.Tensor:
        """Maps view points (..., 2) as (x, y) to source points (float64)."""
        return _apply_matrix(self.matrix, points.reshape(-1, 2)).reshape(points.shape)

    def source_to_view(self, points: torch.Tensor) -> torch.Tensor:
        """Maps source points (..., 2) as (x, y) to view points (float64)."""
        inverse = torch.linalg.inv(self.matrix)
        return _apply_matrix(inverse, points.reshape(-1, 2)).reshape(points.shape)

    def apply(self, image: torch.Tensor) -> torch.Tensor:
        """Resamples ``image`` (C, H, W) or (N, C, H, W) of ``source_size`` into the view."""
        batch = image if image.ndim == 4 else image.unsqueeze(0)
        matrices = self.matrix.expand(batch.shape[0], 3, 3)
        out = resample(batch, matrices, self.view_size)
        return out if image.ndim == 4 else out[0]


def orientation(matrices: torch.Tensor) -> torch.Tensor:
    """Signed permutation part (..., 2, 2) of axis-aligned matrices: flips and quarter turns only."""
    return torch.sign(matrices[..., :2, :2]).round()


def resample(images: torch.Tensor, matrices: torch.Tensor, out_size: Size) -> torch.Tensor:
    """Bilinear resampling of each image through its own view-to-source matrix.

    Args:
        images: (N, C, H, W) source images.
        matrices: (N, 3, 3) view-to-source matrices.
        out_size: (height, width) of the views.

    Returns:
        (N, C, out_height, out_width). Points within half a pixel of the source border take the edge
        value (``padding_mode="border"``, the clamp that ``interpolate`` does).
    """
    height, width = out_size
    rows = torch.arange(height, dtype=torch.float64) + 0.5
    cols = torch.arange(width, dtype=torch.float64) + 0.5
    grid_y, grid_x = torch.meshgrid(rows, cols, indexing="ij")
    centres = torch.stack([grid_x, grid_y], dim=-1).reshape(1, -1, 2)
    source = _apply_matrix(matrices.to(torch.float64), centres).reshape(-1, height, width, 2)
    return sample_points(images, source, images.shape[-2:])


def sample_points(images: torch.Tensor, points: torch.Tensor, frame_size: Sequence[int]) -> torch.Tensor:
    """Bilinearly samples ``images`` (N, C, h, w) at ``points`` (N, ..., 2) of a frame ``frame_size``.

    ``frame_size`` (height, width) is the pixel frame the points are expressed in; the images may have
    a coarser resolution covering the same extent (e.g. a stride-4 feature map of a view).

    Returns:
        (N, C, ...) samples.
    """
    batch = points.shape[0]
    spatial = points.shape[1:-1]
    scale = torch.tensor([2.0 / frame_size[1], 2.0 / frame_size[0]], dtype=torch.float64)
    grid = (points.to(torch.float64) * scale - 1.0).to(images.dtype).reshape(batch, 1, -1, 2)
    sampled = F.grid_sample(
        images, grid.to(images.device), mode="bilinear", padding_mode="border", align_corners=False
    )
    return sampled.reshape(batch, images.shape[1], *spatial)


@dataclass(frozen=True)
class GeometricParams:
    """Random choices of the spatial augmentation of one view, in the order they are applied.

    Attributes:
        crop_box: (top, left, height, width) in source pixels, resized to the output size.
        horizontal_flip: Mirror left-right after the crop.
        vertical_flip: Mirror top-bottom after that.
        rotate90_k: Quarter turns (``torch.rot90`` sense) applied last.
    """

    crop_box: tuple[float, float, float, float]
    horizontal_flip: bool
    vertical_flip: bool
    rotate90_k: int

    def to_transform(self, source_size: Size, out_size: Size) -> GeometricTransform:
        """The composed view-to-source transform."""
        transform = GeometricTransform.crop_resize(self.crop_box, out_size, source_size)
        if self.horizontal_flip:
            transform = transform.then(GeometricTransform.horizontal_flip(transform.view_size))
        if self.vertical_flip:
            transform = transform.then(GeometricTransform.vertical_flip(transform.view_size))
        return transform.then(GeometricTransform.rotate90(self.rotate90_k, transform.view_size))


@dataclass(frozen=True)
class AugmentParams:
    """Augmentation settings; defaults follow SimCLR / GLCNet where the paper gives no value.

    Attributes:
        crop_scale: Range of the crop area as a fraction of the patch (GLCNet: 0.4-1.0).
        crop_ratio: Range of the crop aspect ratio (torchvision / GLCNet: 3/4-4/3).
        flip_probability: Probability of each of the horizontal and vertical flips.
        rotate90_probability: Probability of a random quarter-turn rotation (GLCNet: 0.8).
        colour_probability: Probability of colour distortion (SimCLR: 0.8).
        brightness: Per-band brightness factor drawn from ``1 +- brightness`` (SimCLR: 0.4).
        contrast: Per-band contrast factor drawn from ``1 +- contrast`` (SimCLR: 0.4).
        blur_probability: Probability of Gaussian blur (SimCLR: 0.5).
        blur_sigma: Range of the blur sigma in output pixels (SimCLR: 0.1-2.0).
        noise_probability: Probability of additive Gaussian noise.
        noise_std: Range of the noise std, in units of each band's std.
        cloud_probability: Probability of pseudo-cloud noise (paper gives none).
        cloud_count: Range (inclusive) of the number of clouds.
        cloud_coverage: Range of the fraction of the view that a view's clouds cover.
        cloud_gain: Range of the brightness increase inside clouds (paper: 50-100 %).
    """

    crop_scale: tuple[float, float] = (0.4, 1.0)
    crop_ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
    flip_probability: float = 0.5
    rotate90_probability: float = 0.8
    colour_probability: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    blur_probability: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    noise_probability: float = 0.5
    noise_std: tuple[float, float] = (0.01, 0.1)
    cloud_probability: float = 0.5
    cloud_count: tuple[int, int] = (1, 3)
    cloud_coverage: tuple[float, float] = (0.05, 0.3)
    cloud_gain: tuple[float, float] = (0.5, 1.0)

    def __post_init__(self) -> None:
        probabilities = ("flip", "rotate90", "colour", "blur", "noise", "cloud")
        for name in probabilities:
            value = getattr(self, f"{name}_probability")
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}_probability must be in [0, 1], got {value}")
        for name in ("crop_scale", "crop_ratio", "blur_sigma", "noise_std", "cloud_count", "cloud_coverage"):
            low, high = getattr(self, name)
            smallest = 0.0 if name == "noise_std" else 1e-12
            if not smallest <= low <= high:
                raise ValueError(f"{name} must be a range (low, high) of positive values, got {(low, high)}")
        if not (self.crop_scale[1] <= 1.0 and self.cloud_coverage[1] < 1.0):
            raise ValueError("crop_scale and cloud_coverage are fractions of the patch: keep them <= 1")
        if not 0.0 <= self.cloud_gain[0] <= self.cloud_gain[1]:
            raise ValueError(f"cloud_gain must be a range of non-negative increases, got {self.cloud_gain}")

    @classmethod
    def geometric_only(cls) -> AugmentParams:
        """Spatial transforms only (for checks of the geometry)."""
        return cls(colour_probability=0.0, blur_probability=0.0, noise_probability=0.0, cloud_probability=0.0)


def _uniform(generator: torch.Generator, low: float, high: float, size: Sequence[int] = ()) -> torch.Tensor:
    return low + (high - low) * torch.rand(tuple(size), generator=generator, dtype=torch.float64)


def sample_geometric_params(
    source_size: Size, *, params: AugmentParams, generator: torch.Generator
) -> GeometricParams:
    """Draws a random resized crop (torchvision's rule), flips and a quarter-turn rotation."""
    height, width = source_size
    area = height * width
    crop: tuple[float, float, float, float] | None = None
    for _ in range(10):
        target_area = area * float(_uniform(generator, *params.crop_scale))
        log_ratio = _uniform(generator, math.log(params.crop_ratio[0]), math.log(params.crop_ratio[1]))
        ratio = math.exp(float(log_ratio))
        crop_w = round(math.sqrt(target_area * ratio))
        crop_h = round(math.sqrt(target_area / ratio))
        if 0 < crop_w <= width and 0 < crop_h <= height:
            top = int(torch.randint(0, height - crop_h + 1, (), generator=generator))
            left = int(torch.randint(0, width - crop_w + 1, (), generator=generator))
            crop = (float(top), float(left), float(crop_h), float(crop_w))
            break
    if crop is None:  # torchvision's fallback: the whole patch
        crop = (0.0, 0.0, float(height), float(width))
    flips = torch.rand(2, generator=generator) < params.flip_probability
    rotate = float(torch.rand((), generator=generator)) < params.rotate90_probability
    k = int(torch.randint(0, 4, (), generator=generator)) if rotate else 0
    return GeometricParams(crop, bool(flips[0]), bool(flips[1]), k)


# --------------------------------------------------------------------------------------------------
# Radiometry
# --------------------------------------------------------------------------------------------------


def _band_stats(
    band_mean: Sequence[float] | None, band_std: Sequence[float] | None, images: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    bands = images.shape[1]
    mean = torch.zeros(bands) if band_mean is None else torch.as_tensor(band_mean, dtype=torch.float32)
    std = torch.ones(bands) if band_std is None else torch.as_tensor(band_std, dtype=torch.float32)
    if mean.numel() != bands or std.numel() != bands:
        raise ValueError(f"band statistics have {mean.numel()}/{std.numel()} entries for {bands} bands")
    shape = (1, bands, 1, 1)
    return mean.reshape(shape).to(images), std.reshape(shape).to(images)


def _select(apply: torch.Tensor, changed: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    return torch.where(apply.reshape(-1, 1, 1, 1).to(original.device), changed, original)


def colour_distortion(images: torch.Tensor, brightness: torch.Tensor, contrast: torch.Tensor) -> torch.Tensor:
    """Per-band contrast around each band's image mean, then per-band brightness factor.

    ColorJitter's brightness and contrast, band by band; saturation and hue have no N-band meaning.

    Args:
        images: (N, C, H, W) physical values.
        brightness: (N, C) multiplicative factors.
        contrast: (N, C) factors on the deviation from each band's mean.
    """
    mean = images.mean(dim=(-2, -1), keepdim=True)
    contrasted = (images - mean) * contrast[..., None, None] + mean
    return contrasted * brightness[..., None, None]


def gaussian_blur(images: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur with one sigma per image, reflect padding.

    Args:
        images: (N, C, H, W).
        sigma: (N,) standard deviations in pixels.
    """
    count, bands, height, width = images.shape
    radius = max(1, min(math.ceil(3.0 * float(sigma.max())), min(height, width) - 1))
    offsets = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernels = torch.exp(-0.5 * (offsets / sigma.to(images).reshape(-1, 1)) ** 2)
    kernels = (kernels / kernels.sum(dim=1, keepdim=True)).repeat_interleave(bands, dim=0)
    flat = images.reshape(1, count * bands, height, width)
    flat = F.pad(flat, (radius, radius, 0, 0), mode="reflect")
    flat = F.conv2d(flat, kernels[:, None, None, :], groups=count * bands)
    flat = F.pad(flat, (0, 0, radius, radius), mode="reflect")
    flat = F.conv2d(flat, kernels[:, None, :, None], groups=count * bands)
    return flat.reshape(count, bands, height, width)


def random_pseudo_cloud_mask(
    count: int,
    size: Size,
    *,
    params: AugmentParams,
    generator: torch.Generator,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random cloud opacity masks and gains (the paper's pseudo-cloud noise, Sec. 3.3).

    Each cloud is a cluster of 3-8 anisotropic, randomly oriented Gaussian puffs around a random
    centre (random cluster spread and puff sizes). Their summed density is thresholded at the quantile
    that gives the drawn coverage: below it the mask is exactly 0; it ramps with a smoothstep to
    exactly 1 over the densest half of the covered area (the cloud core), so edges diffuse.

    Args:
        count: Number of masks.
        size: (height, width).
        params: ``cloud_count``, ``cloud_coverage`` and ``cloud_gain`` are used.
        generator: CPU source of randomness (the same draws on every device).
        device: Where the masks are computed.

    Returns:
        Masks (count, H, W) in [0, 1] on ``device`` and gains (count,) in ``params.cloud_gain``.
    """
    height, width = size
    ys = ((torch.arange(height, dtype=torch.float32, device=device) + 0.5) / height).reshape(1, -1, 1)
    xs = ((torch.arange(width, dtype=torch.float32, device=device) + 0.5) / width).reshape(1, 1, -1)
    density = torch.zeros(count, height, width, device=device)

    def per_image(values: torch.Tensor) -> torch.Tensor:
        return values.float().to(device).reshape(-1, 1, 1)

    clouds = torch.randint(params.cloud_count[0], params.cloud_count[1] + 1, (count,), generator=generator)
    for cloud in range(int(clouds.max())):
        active = per_image(clouds > cloud)
        centre = torch.rand(count, 2, generator=generator)
        spread = _uniform(generator, 0.05, 0.2, (count, 1)).float()
        for _ in range(int(torch.randint(3, 9, (), generator=generator))):
            puff = centre + spread * torch.randn(count, 2, generator=generator)
            sigmas = _uniform(generator, 0.03, 0.12, (count, 2))
            angle = per_image(_uniform(generator, 0.0, math.pi, (count,)))
            dx, dy = xs - per_image(puff[:, 0]), ys - per_image(puff[:, 1])
            along = (dx * torch.cos(angle) + dy * torch.sin(angle)) / per_image(sigmas[:, 0])
            across = (-dx * torch.sin(angle) + dy * torch.cos(angle)) / per_image(sigmas[:, 1])
            density += active * torch.exp(-0.5 * (along**2 + across**2))
    coverage = _uniform(generator, *params.cloud_coverage, (count,)).float().to(device)
    ordered = density.reshape(count, -1).sort(dim=1).values
    last = ordered.shape[1] - 1
    edge = ordered.gather(1, ((1.0 - coverage) * last).round().long().reshape(-1, 1)).reshape(-1, 1, 1)
    core = ordered.gather(1, ((1.0 - 0.5 * coverage) * last).round().long().reshape(-1, 1)).reshape(-1, 1, 1)
    ramp = ((density - edge) / (core - edge).clamp_min(1e-12)).clamp(0.0, 1.0)
    mask = ramp * ramp * (3.0 - 2.0 * ramp)
    gain = _uniform(generator, *params.cloud_gain, (count,)).float().to(device)
    return mask, gain


def add_pseudo_clouds(
    images: torch.Tensor,
    mask: torch.Tensor,
    gain: torch.Tensor,
    *,
    band_mean: Sequence[float] | None = None,
    band_std: Sequence[float] | None = None,
) -> torch.Tensor:
    """Brightens every band by ``1 + gain * mask`` in physical units.

    With ``band_mean``/``band_std`` the images are taken as normalised: the brightening applies to
    ``x * std + mean`` and the result is normalised again, which leaves pixels with ``mask == 0``
    bit-identical. Without them the images are taken as physical values.

    Args:
        images: (N, C, H, W).
        mask: (N, H, W) opacity in [0, 1].
        gain: (N,) brightness increase where the mask is 1 (0.5-1.0 in the paper).
        band_mean: Per-band mean used for normalisation, or ``None``.
        band_std: Per-band std used for normalisation, or ``None``.
    """
    factor = (gain.reshape(-1, 1, 1, 1) * mask.unsqueeze(1)).to(images)
    if band_mean is None and band_std is None:
        return images * (1.0 + factor)
    mean, std = _band_stats(band_mean, band_std, images)
    # (x*s + m)(1 + f) normalised is x + f*(x*s + m)/s: written so that f == 0 adds exactly 0.
    return images + factor * (images * std + mean) / std


def apply_radiometric_augmentations(
    images: torch.Tensor,
    *,
    params: AugmentParams,
    generator: torch.Generator,
    band_mean: Sequence[float] | None = None,
    band_std: Sequence[float] | None = None,
) -> torch.Tensor:
    """Colour distortion, pseudo clouds, blur and noise, each drawn per image with its probability."""
    count, bands = images.shape[:2]

    def chosen(probability: float) -> torch.Tensor:
        return torch.rand(count, generator=generator) < probability

    mean, std = _band_stats(band_mean, band_std, images)
    apply = chosen(params.colour_probability)
    brightness = _uniform(generator, 1 - params.brightness, 1 + params.brightness, (count, bands)).to(images)
    contrast = _uniform(generator, 1 - params.contrast, 1 + params.contrast, (count, bands)).to(images)
    if apply.any():
        distorted = (colour_distortion(images * std + mean, brightness, contrast) - mean) / std
        images = _select(apply, distorted, images)
    apply = chosen(params.cloud_probability)
    if apply.any():
        mask, gain = random_pseudo_cloud_mask(
            count, images.shape[-2:], params=params, generator=generator, device=images.device
        )
        mask = mask * apply.reshape(-1, 1, 1).to(mask)
        images = add_pseudo_clouds(images, mask, gain, band_mean=band_mean, band_std=band_std)
    apply = chosen(params.blur_probability)
    sigma = _uniform(generator, *params.blur_sigma, (count,))
    if apply.any():
        images = _select(apply, gaussian_blur(images, sigma), images)
    apply = chosen(params.noise_probability)
    noise_std = _uniform(generator, *params.noise_std, (count,)).to(images).reshape(-1, 1, 1, 1)
    noise = torch.randn(images.shape, generator=generator).to(images)
    return images + noise * noise_std * apply.reshape(-1, 1, 1, 1).to(images)


# --------------------------------------------------------------------------------------------------
# View pairs and matched ROIs
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ViewPair:
    """Two augmented views of a batch and the transforms that made them.

    Attributes:
        view_a: (N, C, P, P) first views.
        view_b: (N, C, P, P) second views.
        matrices_a: (N, 3, 3) float64 view-to-source matrices of the first views.
        matrices_b: (N, 3, 3) float64 view-to-source matrices of the second views.
    """

    view_a: torch.Tensor
    view_b: torch.Tensor
    matrices_a: torch.Tensor
    matrices_b: torch.Tensor


def _roi_centre_box(matrices: torch.Tensor, view_size: Size, roi_size: int) -> torch.Tensor:
    # Source-coordinate box (x0, y0, x1, y1) of ROI centres whose whole ROI lies in the view.
    half = roi_size / 2.0
    height, width = view_size
    corners = torch.tensor([[half, half], [width - half, height - half]], dtype=torch.float64)
    mapped = _apply_matrix(matrices, corners.expand(matrices.shape[0], 2, 2))
    return torch.cat([mapped.min(dim=1).values, mapped.max(dim=1).values], dim=1)


def _overlap(box_a: torch.Tensor, box_b: torch.Tensor) -> torch.Tensor:
    low = torch.maximum(box_a[..., :2], box_b[..., :2])
    high = torch.minimum(box_a[..., 2:], box_b[..., 2:])
    return torch.cat([low, high], dim=-1)


def make_view_pair(
    patches: torch.Tensor,
    *,
    params: AugmentParams,
    generator: torch.Generator,
    roi_size: int = 8,
    band_mean: Sequence[float] | None = None,
    band_std: Sequence[float] | None = None,
) -> ViewPair:
    """Draws two independent augmentations of every patch.

    The second view's crop is redrawn (up to 10 times, then set to the first view's crop) until the
    two views share room for at least one ROI, so that every pair has matched ROIs.

    Args:
        patches: (N, C, P, P) normalised patches.
        params: Augmentation settings.
        generator: Source of randomness (CPU generator).
        roi_size: ROI side in view pixels, for the overlap guarantee.
        band_mean: Band means of the normalisation (for colour distortion and clouds).
        band_std: Band stds of the normalisation.
    """
    size: Size = (patches.shape[-2], patches.shape[-1])
    matrices: list[list[torch.Tensor]] = [[], []]
    for _ in range(patches.shape[0]):
        first = sample_geometric_params(size, params=params, generator=generator)
        matrix_a = first.to_transform(size, size).matrix
        for _attempt in range(10):
            second = sample_geometric_params(size, params=params, generator=generator)
            matrix_b = second.to_transform(size, size).matrix
            box = _overlap(*(_roi_centre_box(m[None], size, roi_size) for m in (matrix_a, matrix_b)))[0]
            if bool((box[2:] >= box[:2]).all()):
                break
        else:
            second = GeometricParams(
                first.crop_box, second.horizontal_flip, second.vertical_flip, second.rotate90_k
            )
            matrix_b = second.to_transform(size, size).matrix
        matrices[0].append(matrix_a)
        matrices[1].append(matrix_b)
    stacked = [torch.stack(m) for m in matrices]
    views = [
        apply_radiometric_augmentations(
            resample(patches, matrix, size),
            params=params,
            generator=generator,
            band_mean=band_mean,
            band_std=band_std,
        )
        for matrix in stacked
    ]
    return ViewPair(views[0], views[1], stacked[0], stacked[1])


@dataclass(frozen=True)
class MatchedRois:
    """Matched ROI sample points in two views (all coordinates float64, (x, y)).

    Attributes:
        source_centres: (N, R, 2) ROI centres in the source patch.
        points_a: (N, R, S, S, 2) pixel centres of each ROI in view A, an axis-aligned S x S grid.
        points_b: (N, R, S, S, 2) the matching grid in view B: same centre in the source, same size in
            view pixels (as the paper prescribes), with element ``[i, j]`` pointing in the same source
            direction as in view A (flips and quarter turns undone).
    """

    source_centres: torch.Tensor
    points_a: torch.Tensor
    points_b: torch.Tensor


def sample_matched_rois(
    matrices_a: torch.Tensor,
    matrices_b: torch.Tensor,
    *,
    view_size: Size,
    num_rois: int,
    roi_size: int,
    generator: torch.Generator,
) -> MatchedRois:
    """Samples ``num_rois`` ROI centres per pair, uniformly where both ROIs fit in their views.

    Args:
        matrices_a: (N, 3, 3) view-to-source matrices of view A (axis-aligned).
        matrices_b: (N, 3, 3) those of view B.
        view_size: (height, width) of the views.
        num_rois: ROIs per patch pair (``N_R``; the paper uses 12).
        roi_size: ROI side in view pixels (the paper uses 8).
        generator: Source of randomness.
    """
    box = _overlap(
        _roi_centre_box(matrices_a, view_size, roi_size), _roi_centre_box(matrices_b, view_size, roi_size)
    )
    if bool((box[:, 2:] < box[:, :2]).any()):
        raise ValueError("a view pair has no room for a common ROI; make it with make_view_pair")
    unit = torch.rand(matrices_a.shape[0], num_rois, 2, generator=generator, dtype=torch.float64)
    source = box[:, None, :2] + unit * (box[:, None, 2:] - box[:, None, :2])
    centre_a = _apply_matrix(torch.linalg.inv(matrices_a), source)
    centre_b = _apply_matrix(torch.linalg.inv(matrices_b), source)
    steps = torch.arange(roi_size, dtype=torch.float64) - (roi_size - 1) / 2.0
    grid_y, grid_x = torch.meshgrid(steps, steps, indexing="ij")
    offsets = torch.stack([grid_x, grid_y], dim=-1).reshape(1, -1, 2)
    # Offset d in A points along source direction O_a d; in B that direction is O_b^T O_a d.
    relative = orientation(matrices_b).transpose(-1, -2) @ orientation(matrices_a)
    offsets_b = offsets @ relative.transpose(-1, -2)
    shape = (matrices_a.shape[0], num_rois, roi_size, roi_size, 2)
    points_a = (centre_a[:, :, None, :] + offsets[:, None]).reshape(shape)
    points_b = (centre_b[:, :, None, :] + offsets_b[:, None]).reshape(shape)
    return MatchedRois(source_centres=source, points_a=points_a, points_b=points_b)


def extract_rois(feature_map: torch.Tensor, points: torch.Tensor, view_size: Size) -> torch.Tensor:
    """ROIs of a per-view map at matched points, bilinearly.

    Sampling a stride-s map at full-resolution pixel centres gives exactly the values of its
    bilinear (``align_corners=False``) upsampling to the view size, without building that map.

    Args:
        feature_map: (N, C, h, w) map covering the whole view.
        points: (N, R, S, S, 2) from :class:`MatchedRois`.
        view_size: (height, width) of the view the points refer to.

    Returns:
        (N, R, C, S, S).
    """
    sampled = sample_points(feature_map, points, view_size)
    return sampled.permute(0, 2, 1, 3, 4)
