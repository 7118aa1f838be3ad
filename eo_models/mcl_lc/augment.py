"""Augmentations for mCL-LC on any band count, with recorded geometry and matched ROIs.

Tang et al. (WACV 2023), Sec. 3.3: spatial transforms (random crop and resize, flips, rotation) and
"temporal" ones (colour distortion, Gaussian blur, random noise), plus the paper's pseudo-cloud noise.
Sec. 3.2 needs matched ROIs whose centres "point to the same position in the original image", so every
spatial transform is recorded as an affine matrix from view pixel coordinates to source pixel
coordinates (:class:`GeometricTransform`), and ROIs are matched through those matrices.

Coordinates are continuous ``(x, y)`` = (column, row): pixel ``(i, j)`` covers ``[j, j+1) x [i, i+1)``
and its centre is ``(j + 0.5, i + 0.5)``. This is the ``align_corners=False`` convention of
``grid_sample``/``interpolate``, so resampling and ROI extraction agree exactly.

Radiometric augmentations (colour, blur, noise, pseudo clouds) are in :mod:`eo_models.mcl_lc.radiometry`,
ROI matching in :mod:`eo_models.mcl_lc.rois`.

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

from eo_models.mcl_lc.params import AugmentParams
from eo_models.mcl_lc.radiometry import _uniform, apply_radiometric_augmentations

__all__ = [
    "AugmentParams",
    "GeometricParams",
    "GeometricTransform",
    "ViewPair",
    "make_view_pair",
    "orientation",
    "resample",
    "sample_geometric_params",
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
