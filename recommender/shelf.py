"""Shelf-camera frames: find the items on a shelf, count them per product, report stock changes.

A fixed camera looks at a shelf; each item facing the camera shows its catalog image. The
pipeline is classic image processing, so it needs no training data: estimate the shelf's
colour, mark pixels that differ from it, join them into connected regions, keep regions of
item size. Each region's crop is then recognised by the caller (embed + nearest catalog
product) and ``count_items`` turns the recognitions into counts.

``compose_shelf_frame`` builds synthetic frames with known boxes for tests and evaluation.
"""
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageFilter
from scipy import ndimage

UNKNOWN = "unknown"  # the count key of items whose best catalog match is too weak

Box = tuple[int, int, int, int]  # left, top, right, bottom in pixels, right and bottom exclusive (as PIL crops)


class BadShelfFrame(ValueError):
    """The frame cannot be counted; the message says why (camera, framing or an empty shelf)."""


@dataclass(frozen=True)
class ShelfFrame:
    image: Image.Image
    boxes: tuple[Box, ...]  # where each product image was placed, in the order given


@dataclass(frozen=True)
class DetectedItem:
    box: Box
    crop: Image.Image  # median-filtered, ready for the embedder


class StockChange(NamedTuple):
    product_id: str
    count: int
    change: int


def _area(box: Box) -> int:
    return (box[2] - box[0]) * (box[3] - box[1])


def box_iou(first: Box, second: Box) -> float:
    """Intersection over union of two boxes: 1 for the same box, 0 when they do not overlap."""
    overlap_width = min(first[2], second[2]) - max(first[0], second[0])
    overlap_height = min(first[3], second[3]) - max(first[1], second[1])
    if overlap_width <= 0 or overlap_height <= 0:
        return 0.0
    intersection = overlap_width * overlap_height
    return intersection / (_area(first) + _area(second) - intersection)


# -- synthetic frames -------------------------------------------------------------------------

_WOOD_RGB = np.array([164.0, 120.0, 78.0])
_PLANK_HEIGHT = 12  # the shelf board's front edge below each row of items
_HEADROOM = 16  # free space above the tallest item of a row


def _shelf_texture(height: int, width: int, row_height: int, rng: np.random.Generator) -> np.ndarray:
    """Wood-grain shelf with a darker board edge under each row, as float RGB (height, width, 3)."""
    rows, columns = np.mgrid[0:height, 0:width]
    # Grain runs along the board: stripes over rows whose phase wanders slowly along columns.
    grain = np.sin(rows * rng.uniform(0.5, 0.9) + 3 * np.sin(columns * rng.uniform(0.01, 0.03)))
    shade = 1 + 0.05 * grain + rng.normal(0, 0.02, (height, width))
    shade[(rows % row_height) >= row_height - _PLANK_HEIGHT] *= 0.9
    return shade[..., None] * _WOOD_RGB


def compose_shelf_frame(product_images: Sequence[Image.Image], rng: np.random.Generator, *,
                        item_sides: tuple[int, int] = (64, 96), gaps: tuple[int, int] = (10, 30),
                        frame_width: int = 640) -> ShelfFrame:
    """Place the images left to right on shelf rows, each standing on a board, and return the frame.

    Every item gets a random size (longer side in ``item_sides``), gap to its left neighbour
    (in ``gaps``), lift off the board and brightness; then the whole frame gets an uneven
    light and sensor noise, as a fixed camera would see it. A row that is full continues on
    the next shelf below.
    """
    row_height = item_sides[1] + _HEADROOM + _PLANK_HEIGHT
    placements: list[tuple[Image.Image, Box]] = []
    row, left = 0, int(rng.integers(*gaps, endpoint=True))
    for image in product_images:
        side = int(rng.integers(*item_sides, endpoint=True))
        scale = side / max(image.size)
        item = image.convert("RGB").resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                                           Image.Resampling.BILINEAR)
        if item.width + 2 * gaps[0] > frame_width:
            raise ValueError(f"an item {item.width} px wide does not fit a {frame_width} px frame")
        if left + item.width + gaps[0] > frame_width:
            row, left = row + 1, int(rng.integers(*gaps, endpoint=True))
        bottom = (row + 1) * row_height - _PLANK_HEIGHT - int(rng.integers(0, 6))
        placements.append((item, (left, bottom - item.height, left + item.width, bottom)))
        left += item.width + int(rng.integers(*gaps, endpoint=True))

    height = (row + 1) * row_height
    pixels = _shelf_texture(height, frame_width, row_height, rng)
    for item, (x0, y0, x1, y1) in placements:
        pixels[y0:y1, x0:x1] = np.asarray(item, dtype=np.float64) * rng.uniform(0.85, 1.1)
    light = np.linspace(*rng.uniform(0.9, 1.1, size=2), frame_width)
    pixels = pixels * light[None, :, None] + rng.normal(0, 2, pixels.shape)
    frame = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    return ShelfFrame(frame, tuple(box for _, box in placements))


# -- segmentation and counting ----------------------------------------------------------------

def segment_items(frame: Image.Image, *, min_item_side: int = 32, min_contrast: float = 40) -> list[DetectedItem]:
    """Item regions of a shelf frame, in the raster order of their top-most pixel.

    The shelf is most of the frame, so its colour is the frame's median colour; a pixel
    belongs to an item when one channel differs from it by more than ``min_contrast`` grey
    levels, which the wood grain, board edges and uneven light stay below. Regions narrower
    or lower than ``min_item_side`` are noise or a partly hidden item and are dropped.
    Raises ``BadShelfFrame`` for an empty or too small frame and when no item is found.
    """
    if frame.width == 0 or frame.height == 0:
        raise BadShelfFrame("the frame is empty (0 pixels)")
    if min(frame.size) < min_item_side:
        raise BadShelfFrame(f"the frame is {frame.width}x{frame.height} px, smaller than one item "
                            f"({min_item_side} px)")
    pixels = np.asarray(frame.convert("RGB"), dtype=np.float32)
    shelf_colour = np.median(pixels.reshape(-1, 3), axis=0)
    foreground = np.abs(pixels - shelf_colour).max(axis=2) > min_contrast
    # Opening removes isolated noise pixels; closing and hole filling make an item whose
    # article has shelf-like colours inside one solid region instead of several fragments.
    foreground = ndimage.binary_opening(foreground, iterations=2)
    foreground = ndimage.binary_fill_holes(ndimage.binary_closing(foreground, iterations=3))
    labels, _ = ndimage.label(foreground)
    items = []
    for rows, columns in ndimage.find_objects(labels):
        box = (columns.start, rows.start, columns.stop, rows.stop)
        if box[2] - box[0] >= min_item_side and box[3] - box[1] >= min_item_side:
            items.append(DetectedItem(box, frame.crop(box).filter(ImageFilter.MedianFilter(3))))
    if not items:
        raise BadShelfFrame("no items found: the shelf is empty, or the camera is covered or sees no shelf")
    return items


def count_items(recognitions: Iterable[tuple[str, float]], threshold: float) -> dict[str, int]:
    """Items per product from each crop's best (product_id, similarity); weaker than ``threshold`` is UNKNOWN."""
    return dict(Counter(product_id if similarity >= threshold else UNKNOWN
                        for product_id, similarity in recognitions))


def stock_change(previous_counts: Mapping[str, int], new_counts: Mapping[str, int]) -> list[StockChange]:
    """Products whose count changed between two frames, by product id; gone products count 0."""
    changes = []
    for product_id in sorted(previous_counts.keys() | new_counts.keys()):
        count = new_counts.get(product_id, 0)
        change = count - previous_counts.get(product_id, 0)
        if change:
            changes.append(StockChange(product_id, count, change))
    return changes
