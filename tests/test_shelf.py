import numpy as np
import pytest
from PIL import Image

from models import fashion_mnist
from recommender.shelf import (UNKNOWN, BadShelfFrame, StockChange, box_iou, compose_shelf_frame, count_items,
                               segment_items, stock_change)


@pytest.fixture(scope="module")
def articles() -> list[Image.Image]:
    images, _ = fashion_mnist.load("test")
    return [Image.fromarray(pixels).convert("RGB") for pixels in images[:40]]


def test_box_iou():
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert box_iou((0, 0, 10, 10), (10, 0, 20, 10)) == 0.0


@pytest.mark.parametrize("seed, items", [(0, 3), (1, 7), (2, 12)])
def test_segmentation_finds_every_composed_item_where_it_was_placed(articles, seed, items):
    rng = np.random.default_rng(seed)
    frame = compose_shelf_frame([articles[index] for index in rng.choice(len(articles), items)], rng)
    assert len(frame.boxes) == items
    found = segment_items(frame.image)
    assert len(found) == items
    for truth in frame.boxes:
        assert max(box_iou(truth, item.box) for item in found) > 0.8
    assert all(item.crop.size == (item.box[2] - item.box[0], item.box[3] - item.box[1]) for item in found)


def test_a_full_row_continues_on_the_next_shelf_without_overlaps(articles):
    # 90 px items with gaps of at least 10 px: three fit a 400 px row, so 12 items need 4 rows.
    frame = compose_shelf_frame(articles[:12], np.random.default_rng(3), item_sides=(90, 90), frame_width=400)
    assert max(box[1] for box in frame.boxes) > 3 * 90
    assert all(box[2] <= 400 and box[3] <= frame.image.height for box in frame.boxes)
    assert all(box_iou(first, second) == 0 for index, first in enumerate(frame.boxes)
               for second in frame.boxes[index + 1:])


def test_bad_frames_raise_with_the_reason(articles):
    with pytest.raises(BadShelfFrame, match="empty"):
        segment_items(Image.new("RGB", (0, 0)))
    with pytest.raises(BadShelfFrame, match="smaller than one item"):
        segment_items(Image.new("RGB", (20, 300)))
    with pytest.raises(BadShelfFrame, match="no items found"):
        segment_items(compose_shelf_frame([], np.random.default_rng(0)).image)


def test_counts_per_product_with_weak_matches_unknown():
    recognitions = [("p1", 0.97), ("p1", 0.95), ("p2", 0.91), ("p2", 0.60), ("p3", 0.2)]
    assert count_items(recognitions, threshold=0.9) == {"p1": 2, "p2": 1, UNKNOWN: 2}
    assert count_items([], threshold=0.9) == {}


def test_stock_change_lists_only_changed_products_including_gone_and_new():
    previous = {"p1": 3, "p2": 2, "p3": 1}
    new = {"p1": 1, "p2": 2, "p4": 4}
    assert stock_change(previous, new) == [StockChange("p1", 1, -2), StockChange("p3", 0, -1),
                                           StockChange("p4", 4, 4)]
    assert stock_change(new, new) == []
