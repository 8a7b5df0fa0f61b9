"""Catalog intelligence through Kafka: categories, copy flags, shelf inventory, category analytics."""
import base64
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from models.fashion_mnist import load
from models.images import encode_png
from recommender.duplicates import edited_copy
from recommender.shelf import compose_shelf_frame
from streams import topics
from streams.client import TopicReader, produce, search_result

pytestmark = pytest.mark.integration


def b64_png(image: Image.Image) -> str:
    return base64.b64encode(encode_png(image)).decode()


def article(index: int) -> Image.Image:
    """A test-split article: never in the demo catalog (built from the train split)."""
    images, _ = load("test")
    return Image.fromarray(images[index]).convert("RGB")


def test_declared_category_is_checked_against_the_image(shop, catalog):
    settings, _, _ = shop
    sneaker = next(p for p in catalog if p.category == "Sneaker")
    wrong = {**sneaker.listing(), "event_id": "wrong-category", "product_id": "mislabelled-1", "category": "Dress"}
    right = {**sneaker.listing(), "event_id": "right-category", "product_id": "labelled-1", "category": "Sneaker"}
    produce(settings, topics.CATALOG, [(wrong["product_id"], wrong), (right["product_id"], right)])
    predictions = TopicReader(settings, topics.CATEGORY_PREDICTIONS).until(
        lambda ms: {"mislabelled-1", "labelled-1"} <= {m["product_id"] for m in ms}, 120)
    by_id = {m["product_id"]: m for m in predictions}
    assert by_id["mislabelled-1"]["predicted"] == "Sneaker" and by_id["mislabelled-1"]["mismatch"]
    assert by_id["labelled-1"]["predicted"] == "Sneaker" and not by_id["labelled-1"]["mismatch"]
    flags = TopicReader(settings, topics.CATALOG_FLAGS).until(
        lambda ms: any(m["product_id"] == "mislabelled-1" for m in ms), 60)
    flag = next(m for m in flags if m["product_id"] == "mislabelled-1")
    assert flag["kind"] == "category_mismatch" and flag["declared_category"] == "Dress"
    assert not any(m["product_id"] == "labelled-1" and m["kind"] == "category_mismatch" for m in flags)


def test_copies_of_a_brand_reference_and_of_other_listings_are_flagged(shop, catalog):
    settings, _, _ = shop
    genuine = article(17)
    produce(settings, topics.REFERENCES, [("ref-1", {"event_id": "ref-1", "reference_id": "acme-ref-1",
                                                     "brand": "Acme", "title": "Classic coat",
                                                     "owner_seller_id": "acme", "image_b64": b64_png(genuine)})])
    TopicReader(settings, topics.CATALOG_VECTORS).until(
        lambda ms: any(m["product_id"] == "acme-ref-1" for m in ms), 120)
    rng = np.random.default_rng(0)
    listings = {
        "fake-1": ("shady", edited_copy(genuine, "jpeg", rng)),  # a recompressed copy of the brand's photo
        "acme-own": ("acme", genuine),  # the brand listing its own photo
        "dup-1": ("copycat", Image.fromarray(catalog[9].image).convert("RGB")),  # another seller's listing
    }
    produce(settings, topics.CATALOG, [(pid, {"event_id": f"list-{pid}", "product_id": pid, "title": "Coat",
                                              "price": 50, "seller_id": seller, "image_b64": b64_png(image)})
                                       for pid, (seller, image) in listings.items()])
    TopicReader(settings, topics.CATEGORY_PREDICTIONS).until(
        lambda ms: set(listings) <= {m["product_id"] for m in ms}, 120)
    flags = {m["product_id"]: m for m in TopicReader(settings, topics.CATALOG_FLAGS).until(
        lambda ms: {"fake-1", "dup-1"} <= {m["product_id"] for m in ms}, 60) if m["kind"] != "category_mismatch"}
    assert flags["fake-1"]["kind"] == "counterfeit_suspect"
    assert flags["fake-1"]["matched_id"] == "acme-ref-1" and flags["fake-1"]["matched_seller_id"] == "acme"
    assert flags["fake-1"]["similarity"] > 0.9 and flags["fake-1"]["hash_distance"] <= 8
    assert flags["dup-1"]["kind"] == "near_duplicate" and flags["dup-1"]["matched_id"] == catalog[9].product_id
    assert "acme-own" not in flags
    # References never show up as products to shoppers.
    produce(settings, topics.UPLOADS, [("find-coat", {"event_id": "find-coat", "image_b64": b64_png(genuine)})])
    result = search_result(settings, "find-coat")
    assert "acme-ref-1" not in {item["product_id"] for item in result["items"]}
    assert result["predicted_category"] == "Coat"


def test_shelf_frames_become_stock_counts_and_changes(shop, catalog):
    settings, _, _ = shop
    placed = [catalog[0], catalog[1], catalog[1], catalog[2]]
    truth = Counter(p.product_id for p in placed)
    rng = np.random.default_rng(1)
    frame = compose_shelf_frame([Image.fromarray(p.image).convert("RGB") for p in placed], rng).image
    later = compose_shelf_frame([Image.fromarray(p.image).convert("RGB") for p in placed[:3]], rng).image
    reader = TopicReader(settings, topics.INVENTORY_UPDATES)
    stock: dict[str, int] = {}

    def play(frame_id: str, image: Image.Image, items: int) -> list[dict]:
        """Send a frame; apply its updates to ``stock`` once they account for every item on the shelf."""
        produce(settings, topics.SHELF_FRAMES, [("store-1", {"event_id": frame_id, "store_id": "store-1",
                                                             "shelf_id": "a", "image_b64": b64_png(image)})])

        def applied(messages):
            updates = [m for m in messages if m["source_event_id"] == frame_id]
            return updates, {**stock, **{m["product_id"]: m["count"] for m in updates}}

        reader.until(lambda ms: applied(ms)[0] and sum(applied(ms)[1].values()) == items, 120)
        updates, new_stock = applied(reader.messages)
        for update in updates:  # each change is the difference to what the shelf held before
            assert update["change"] == update["count"] - stock.get(update["product_id"], 0)
        stock.clear()
        stock.update({product: count for product, count in new_stock.items() if count})
        return updates

    play("frame-1", frame, len(placed))
    # Recognition is not perfect (see BENCHMARKS.md): a crop too unlike every product counts as
    # unknown, but no item is counted as a product that is not on the shelf.
    assert set(stock) <= set(truth) | {"unknown"}
    assert sum(min(stock.get(product, 0), count) for product, count in truth.items()) >= 3, stock
    assert stock.get(catalog[2].product_id) == 1
    play("frame-2", later, len(placed) - 1)
    assert catalog[2].product_id not in stock  # the item taken off the shelf


def test_unreadable_shelf_frames_and_references_go_to_dead_letters(shop):
    settings, _, worker = shop
    blank = Image.new("RGB", (320, 200), (200, 180, 150))
    produce(settings, topics.SHELF_FRAMES, [("store-2", {"event_id": "blank", "store_id": "store-2", "shelf_id": "b",
                                                         "image_b64": b64_png(blank)}),
                                            ("store-2", {"store_id": "store-2", "image_b64": "xyz"})])
    produce(settings, topics.REFERENCES, [("r", {"reference_id": "r", "brand": "B", "title": "t",
                                                 "owner_seller_id": "b", "image_b64": b64_png(blank)[:40]})])
    letters = TopicReader(settings, topics.DEAD_LETTERS)
    wanted = {topics.topic_name(topics.SHELF_FRAMES, settings), topics.topic_name(topics.REFERENCES, settings)}
    letters.until(lambda ms: sum(m["topic"] in wanted for m in ms) >= 3, 60)
    reasons = [m["reason"] for m in letters.messages if m["topic"] in wanted]
    assert any("no items found" in reason for reason in reasons), reasons
    assert any("shelf_id: Field required" in reason for reason in reasons), reasons
    assert any("image" in reason for reason in reasons if "shelf" not in reason), reasons
    assert worker.alive()


def test_category_analytics_count_actions_and_conversion_per_window(shop, catalog):
    settings, _, _ = shop
    bags = [p for p in catalog if p.category == "Bag"][:4]
    events = [{"event_id": f"an-{i}", "user_id": f"an-user-{i}", "product_id": bag.product_id,
               "action": "view"} for i, bag in enumerate(bags)]
    events.append({"event_id": "an-buy", "user_id": "an-user-0", "product_id": bags[0].product_id,
                   "action": "purchase"})
    produce(settings, topics.ACTIONS, [(e["user_id"], e) for e in events])
    stats = TopicReader(settings, topics.CATEGORY_STATS).until(
        lambda ms: any(m["category"] == "Bag" and m["counts"]["purchase"] >= 1 and m["counts"]["view"] >= 4
                       for m in ms), 90)
    latest = [m for m in stats if m["category"] == "Bag"][-1]
    assert latest["window_end"] - latest["window_start"] == pytest.approx(settings.analytics_window_s)
    assert latest["view_to_purchase"] == pytest.approx(latest["counts"]["purchase"] / latest["counts"]["view"])
