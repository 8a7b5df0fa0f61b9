"""Every agent exercised through Kafka: events in on the input topics, assertions on the output topics."""
import base64
import random
from collections import Counter

import pytest

from models.fashion_mnist import FOOTWEAR
from models.images import encode_png
from recommender.demo_data import shopping_session
from streams import topics
from streams.client import TopicReader, produce, search_result

pytestmark = pytest.mark.integration


def by_id(catalog):
    return {product.product_id: product for product in catalog}


def test_every_listing_gets_similar_items_of_its_own_kind(shop, catalog):
    _, messages, _ = shop
    products = by_id(catalog)
    latest = {m["product_id"]: m for m in messages}
    same_category = []
    for product_id, message in latest.items():
        assert len(message["items"]) == 10
        assert product_id not in [item["product_id"] for item in message["items"]]
        scores = [item["score"] for item in message["items"]]
        assert scores == sorted(scores, reverse=True)
        same_category.append(sum(item["category"] == products[product_id].category for item in message["items"]))
    # Frozen ImageNet features: most neighbours share the article's category.
    assert sum(same_category) / (10 * len(same_category)) > 0.6


def test_new_listing_refreshes_its_neighbours_similar_items(shop, catalog):
    settings, _, _ = shop
    source = catalog[3]
    twin = {**source.listing(), "event_id": "list-twin", "product_id": "twin-of-" + source.product_id,
            "title": "Twin " + source.title}
    reader = TopicReader(settings, topics.SIMILAR_ITEMS)
    produce(settings, topics.CATALOG, [(twin["product_id"], twin)])

    def refreshed(messages):
        return [m for m in messages if m["product_id"] == source.product_id and m["source_event_id"] == "list-twin"]

    reader.until(lambda messages: refreshed(messages), 60)
    assert refreshed(reader.messages)[-1]["items"][0]["product_id"] == twin["product_id"]
    reader.close()


def test_sneaker_viewer_gets_mostly_footwear(shop, catalog):
    settings, _, _ = shop
    session = shopping_session("sneaker-fan", catalog, ["Sneaker"], 6, random.Random(3), 1_000.0)
    for event in session:
        event["action"] = "view"
    produce(settings, topics.ACTIONS, [(e["user_id"], e) for e in session])
    reader = TopicReader(settings, topics.RECOMMENDATIONS)
    messages = reader.until(lambda ms: sum(m["user_id"] == "sneaker-fan" for m in ms) >= len(session), 60)
    latest = [m for m in messages if m["user_id"] == "sneaker-fan"][-1]
    assert latest["source_event_id"] == session[-1]["event_id"]
    categories = [item["category"] for item in latest["items"]]
    assert len(categories) == 10
    assert sum(category in FOOTWEAR for category in categories) >= 7, categories
    viewed = {e["product_id"] for e in session}
    assert not viewed & {item["product_id"] for item in latest["items"]}
    reader.close()


def test_purchased_items_never_come_back(shop, catalog):
    settings, _, _ = shop
    bags = [p for p in catalog if p.category == "Bag"]
    events = [{"event_id": f"buyer-{i}", "user_id": "buyer", "product_id": bag.product_id,
               "action": "purchase" if i % 2 else "view", "ts": 2_000.0 + i} for i, bag in enumerate(bags[:8])]
    produce(settings, topics.ACTIONS, [("buyer", e) for e in events])
    reader = TopicReader(settings, topics.RECOMMENDATIONS)
    messages = reader.until(lambda ms: sum(m["user_id"] == "buyer" for m in ms) >= len(events), 60)
    bought_before = {}  # event id -> everything bought up to and including that event
    bought: set[str] = set()
    for event in events:
        bought |= {event["product_id"]} if event["action"] == "purchase" else set()
        bought_before[event["event_id"]] = set(bought)
    for message in (m for m in messages if m["user_id"] == "buyer"):
        assert message["items"]
        assert not bought_before[message["source_event_id"]] & {item["product_id"] for item in message["items"]}
    reader.close()


def test_uploading_a_catalog_photo_finds_that_product_first(shop, catalog):
    settings, _, _ = shop
    wanted = catalog[11]
    upload = {"event_id": "upload-1", "user_id": "photo-user", "image_b64": wanted.listing()["image_b64"], "k": 5}
    produce(settings, topics.UPLOADS, [("upload-1", upload)])
    result = search_result(settings, "upload-1")
    # Other tests list identical images (twins, copies) on this shared worker: a tie at the top is fine.
    best = result["items"][0]["score"]
    assert best > 0.99
    assert wanted.product_id in {item["product_id"] for item in result["items"] if item["score"] >= best - 1e-4}
    assert len(result["items"]) == 5


def test_malformed_events_go_to_dead_letters_and_the_worker_keeps_going(shop, catalog):
    settings, _, worker = shop
    not_an_image = base64.b64encode(b"\x89PNG\r\n\x1a\n truncated").decode()
    bad = {
        topics.CATALOG: [("bad-1", b"{not json"), ("bad-2", {"product_id": "x", "title": "no price",
                                                             "image_b64": not_an_image}),
                         ("bad-3", {"product_id": "bad-3", "title": "broken image", "price": 3,
                                    "image_b64": not_an_image}),
                         ("bad-4", {"product_id": "bad-4", "title": "escape", "price": 3,
                                    "image_path": "../../etc/passwd"})],
        topics.ACTIONS: [("u", b"\xff\xfe invalid utf-8"), ("u", {"user_id": "u", "product_id": "no-such-product",
                                                                    "action": "view"}),
                         ("u", {"user_id": "u", "product_id": catalog[0].product_id, "action": "teleport"})],
        topics.UPLOADS: [("up", {"image_b64": "!!! not base64 !!!"}), ("up", {"k": 5})],
    }
    for spec, messages in bad.items():
        produce(settings, spec, messages)
    # Good events after the bad ones must still be processed.
    good_image = encode_png(__import__("PIL.Image", fromlist=["Image"]).fromarray(catalog[5].image).convert("RGB"))
    produce(settings, topics.UPLOADS, [("after-bad", {"event_id": "after-bad", "k": 3,
                                                      "image_b64": base64.b64encode(good_image).decode()})])
    produce(settings, topics.ACTIONS, [("late-user", {"event_id": "late-1", "user_id": "late-user",
                                                      "product_id": catalog[0].product_id, "action": "click"})])
    letters = TopicReader(settings, topics.DEAD_LETTERS)

    def per_topic(messages):
        return Counter(m["topic"].removeprefix(settings.topic_prefix) for m in messages)

    letters.until(lambda ms: all(per_topic(ms)[spec.name] >= len(messages) for spec, messages in bad.items()), 60)
    letters.poll(1.0)  # a surplus dead letter would show up by now
    # Other tests share this worker and dead-letter on other topics too; these topics get exactly ours.
    counts = per_topic(letters.messages)
    assert {spec.name: counts[spec.name] for spec in bad} == {spec.name: len(messages) for spec, messages in bad.items()}
    reasons = [m["reason"] for m in letters.messages]
    for fragment in ("Invalid JSON", "price: Field required", "corrupt image", "outside the image root",
                     "unknown product_id 'no-such-product'", "action: Input should be", "not valid base64",
                     "exactly one of image_b64 or image_path"):
        assert any(fragment in reason for reason in reasons), (fragment, reasons)
    TopicReader(settings, topics.SEARCH_RESULTS).until(lambda ms: any(m["request_id"] == "after-bad" for m in ms), 60)
    TopicReader(settings, topics.RECOMMENDATIONS).until(
        lambda ms: any(m["source_event_id"] == "late-1" for m in ms), 60)
    assert worker.alive()


def test_a_user_with_two_tastes_gets_both(shop, catalog):
    settings, _, _ = shop
    session = shopping_session("two-tastes", catalog, ["Bag", "Sneaker"], 10, random.Random(5), 3_000.0)
    produce(settings, topics.ACTIONS, [(e["user_id"], e) for e in session])
    reader = TopicReader(settings, topics.RECOMMENDATIONS)
    latest = reader.until(lambda ms: any(m["source_event_id"] == session[-1]["event_id"] for m in ms), 60)
    latest = [m for m in latest if m["source_event_id"] == session[-1]["event_id"]][0]
    categories = Counter(item["category"] for item in latest["items"])
    assert latest["interests"] >= 2
    assert categories["Bag"] >= 2 and categories["Sneaker"] + categories["Ankle boot"] + categories["Sandal"] >= 2, \
        categories
    reader.close()


def test_out_of_stock_products_disappear_from_results(shop, catalog):
    settings, _, _ = shop
    product = catalog[30]
    sold_out = {**product.listing(in_stock=False), "event_id": "sold-out-1"}
    produce(settings, topics.CATALOG, [(product.product_id, sold_out)])
    TopicReader(settings, topics.SIMILAR_ITEMS).until(
        lambda ms: any(m["source_event_id"] == "sold-out-1" for m in ms), 60)
    upload = {"event_id": "find-sold-out", "image_b64": sold_out["image_b64"], "k": 10}
    viewer = {"event_id": "view-twin", "user_id": "stock-watcher", "action": "view",
              "product_id": next(p.product_id for p in catalog if p.category == product.category and p is not product)}
    produce(settings, topics.UPLOADS, [("find-sold-out", upload)])
    produce(settings, topics.ACTIONS, [("stock-watcher", viewer)])
    results = TopicReader(settings, topics.SEARCH_RESULTS).until(
        lambda ms: any(m["request_id"] == "find-sold-out" for m in ms), 60)
    found = [m for m in results if m["request_id"] == "find-sold-out"][0]
    assert len(found["items"]) == 10 and product.product_id not in {i["product_id"] for i in found["items"]}
    recommendations = TopicReader(settings, topics.RECOMMENDATIONS).until(
        lambda ms: any(m["source_event_id"] == "view-twin" for m in ms), 60)
    latest = [m for m in recommendations if m["source_event_id"] == "view-twin"][0]
    assert product.product_id not in {i["product_id"] for i in latest["items"]}
