"""Radiometric augmentations for mCL-LC on any band count (Tang et al. 2023, Sec. 3.3).

Colour distortion (per-band brightness and contrast), Gaussian blur, additive noise and the paper's
pseudo-cloud noise. Colour distortion and clouds act on physical values (non-negative,
reflectance-like), so they take the band mean and std used for normalisation and undo it internally.
Images are batches (N, C, H, W) of normalised values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from eo_models.mcl_lc.augment import AugmentParams

__all__ = [
    "add_pseudo_clouds",
    "apply_radiometric_augmentations",
    "colour_distortion",
    "gaussian_blur",
    "random_pseudo_cloud_mask",
]

Size = tuple[int, int]


def _uniform(generator: torch.Generator, low: float, high: float, size: Sequence[int] = ()) -> torch.Tensor:
    return low + (high - low) * torch.rand(tuple(size), generator=generator)


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
    apply = chosen(params.cloud_probability if params.pseudo_clouds else 0.0)
    if apply.any():
        mask, gain = random_pseudo_cloud_mask(
            count,
            (images.shape[-2], images.shape[-1]),
            params=params,
            generator=generator,
            device=images.device,
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
