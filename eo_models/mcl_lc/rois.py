"""Matched ROIs of two augmented views (Tang et al. 2023, Sec. 3.2): same source position, same size.

ROI centres are drawn uniformly where both ROIs fit in their views, mapped through the recorded
view-to-source matrices of :mod:`eo_models.mcl_lc.augment`, and read from per-view maps bilinearly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from eo_models.mcl_lc.augment import (
    Size,
    _apply_matrix,
    _overlap,
    _roi_centre_box,
    orientation,
    sample_points,
)

__all__ = ["MatchedRois", "extract_rois", "sample_matched_rois"]


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
