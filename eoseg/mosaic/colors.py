"""The colour table of label maps: one fixed, distinguishable colour per class label.

The same table colours the Cloud-Optimized GeoTIFF (``dataset.write_colormap(1, class_colormap(k))``)
and the quick-look PNG, so a class looks the same everywhere. Colours follow matplotlib's ``tab10``
first and then its lighter ``tab20`` partners, and cycle after 20 classes; label maps are ``uint8``
and :data:`NODATA_LABEL` is reserved for pixels without a prediction.
"""

from __future__ import annotations

RGBA = tuple[int, int, int, int]

NODATA_LABEL: int = 255
"""The ``uint8`` nodata value of label maps; never a class, transparent in the colour table."""

NODATA_COLOR: RGBA = (0, 0, 0, 0)

# tab10, then the light member of each tab20 pair: the first ten classes get the strongest contrast.
_PALETTE: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
    (174, 199, 232),
    (255, 187, 120),
    (152, 223, 138),
    (255, 152, 150),
    (197, 176, 213),
    (196, 156, 148),
    (247, 182, 210),
    (199, 199, 199),
    (219, 219, 141),
    (158, 218, 229),
)


def class_color(label: int) -> RGBA:
    """The opaque colour of one class label (cycling through the palette after 20 labels).

    Args:
        label: A non-negative class label. :data:`NODATA_LABEL` is not special here, because a
            label map without declared nodata (e.g. a 0/255 reference mask) may use 255 as a class;
            :func:`class_colormap` is where 255 becomes transparent.

    Returns:
        ``(red, green, blue, 255)``.

    Raises:
        ValueError: If ``label`` is negative.
    """
    if label < 0:
        raise ValueError(f"class labels are non-negative integers, got {label}")
    red, green, blue = _PALETTE[label % len(_PALETTE)]
    return red, green, blue, 255


def class_colormap(num_classes: int) -> dict[int, RGBA]:
    """The colour table of a label map with classes ``0 .. num_classes - 1``.

    Args:
        num_classes: Number of classes (clusters); at most 255, because label maps are ``uint8``
            and 255 is :data:`NODATA_LABEL`.

    Returns:
        ``{label: (red, green, blue, alpha)}`` for every class (alpha 255) plus
        ``{NODATA_LABEL: (0, 0, 0, 0)}``, in the form ``rasterio``'s ``write_colormap`` takes.

    Raises:
        ValueError: If ``num_classes`` is negative or larger than 255.
    """
    if not 0 <= num_classes <= NODATA_LABEL:
        raise ValueError(
            f"num_classes must be between 0 and {NODATA_LABEL} (labels are uint8 and {NODATA_LABEL} "
            f"is nodata), got {num_classes}; use fewer clusters"
        )
    colormap = {label: class_color(label) for label in range(num_classes)}
    colormap[NODATA_LABEL] = NODATA_COLOR
    return colormap
