"""Fuzzing the inputs through a real broker and worker.

Over a thousand malformed events on all three input topics (broken JSON and UTF-8, wrong
types, missing and extra fields, unknown products, corrupt and truncated images,
decompression bombs, a 100-megapixel image, paths out of the image folder, messages over
VR_MAX_MESSAGE_BYTES) are interleaved with good ones. Each bad event must reach
dead-letters exactly once with its reason, every good one must be answered, and the
worker must stay up.
"""
import base64
import json
import random
from collections import Counter
from dataclasses import dataclass

import httpx
import numpy as np
import pytest
from PIL import Image

from bench.chaos import load_catalog
from infra.local_stack import isolated_settings, running_worker
from models.images import encode_png
from recommender.demo_data import demo_catalog
from streams import topics
from streams.client import TopicReader, produce

pytestmark = pytest.mark.integration
# Small limits keep the huge messages cheap for the shared test broker; the checks are the same.
MAX_MESSAGE_BYTES = 2_000_000
MAX_IMAGE_BYTES = 1_000_000
COPIES = 14  # of each cheap malformed event, each under its own key
HEAVY_COPIES = 2  # of each event that carries a megabyte or more


@dataclass(frozen=True)
class Bad:
    value: dict | bytes
    reason: str  # must appear in the dead letter's reason
    copies: int = COPIES


def png(width: int, height: int, mode: str = "L", pixels: np.ndarray | None = None) -> bytes:
    return encode_png(Image.fromarray(pixels) if pixels is not None else Image.new(mode, (width, height), 0))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("images")
    stripes = np.ascontiguousarray(np.broadcast_to((np.arange(10_000) % 256).astype(np.uint8), (10_000, 10_000)))
    hundred_megapixels = png(10_000, 10_000, pixels=stripes)  # about 120 KB
    (root / "hundred-megapixels.png").write_bytes(hundred_megapixels)
    (tmp_path_factory.getbasetemp() / "secret.png").write_bytes(png(8, 8))
    (root / "too-big.png").write_bytes(random.Random(4).randbytes(MAX_IMAGE_BYTES + 1))
    noise = np.random.default_rng(0)
    small_photo = png(64, 64, pixels=noise.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    return {
        "root": root,
        "hundred_megapixels": hundred_megapixels,
        "bomb": png(8_000, 8_000),  # 64 megapixels of one grey in about 60 KB: over our limit, under Pillow's
        "pillow_bomb": png(20_000, 20_000, mode="1"),  # 400 megapixels in 50 KB: Pillow refuses it at open
        "truncated": small_photo[: len(small_photo) // 2],
        "not_an_image": random.Random(1).randbytes(5_000),
        "fake_jpeg": b"\xff\xd8\xff\xe0" + random.Random(2).randbytes(3_000),
        "too_many_bytes": random.Random(3).randbytes(MAX_IMAGE_BYTES * 6 // 5),
        # A good photo whose event (base64) is over the broker's default 1 MB message limit.
        "noise_near_limit": png(580, 540, pixels=noise.integers(0, 256, (540, 580, 3), dtype=np.uint8)),
    }


def image_problems(images: dict) -> list[Bad]:
    """Image fields that must be refused, as (image_b64 or image_path) fields and reasons."""
    return [
        Bad({"image_b64": "!!! not base64 !!!"}, "not valid base64"),
        Bad({"image_b64": ""}, "image is empty"),
        Bad({"image_b64": b64(images["not_an_image"])}, "not a decodable image"),
        Bad({"image_b64": b64(images["fake_jpeg"])}, "corrupt image"),
        Bad({"image_b64": b64(images["truncated"])}, "corrupt image"),
        Bad({"image_b64": b64(images["bomb"])}, "64000000 pixels, limit is 40000000"),
        Bad({"image_b64": b64(images["pillow_bomb"])}, "decompression bomb refused"),
        Bad({"image_b64": b64(images["hundred_megapixels"])}, "decompression bomb refused"),
        Bad({"image_b64": b64(images["too_many_bytes"])}, f"limit is {MAX_IMAGE_BYTES} bytes decoded", HEAVY_COPIES),
        Bad({"image_path": "hundred-megapixels.png"}, "decompression bomb refused"),
        Bad({"image_path": "../secret.png"}, "outside the image root"),
        Bad({"image_path": "/etc/passwd"}, "outside the image root"),
        Bad({"image_path": "no-such-file.png"}, "does not exist"),
        Bad({"image_path": "too-big.png"}, f"image is {MAX_IMAGE_BYTES + 1} bytes, limit is {MAX_IMAGE_BYTES}"),
        Bad({"image_path": "x.png", "image_b64": b64(images["truncated"])}, "exactly one of image_b64 or image_path"),
        Bad({}, "exactly one of image_b64 or image_path"),
    ]


def broken_messages(valid: dict) -> list[Bad]:
    """Messages no schema can read, whatever the topic."""
    text = json.dumps(valid).encode()
    return [
        Bad(b"{not json", "Invalid JSON"),
        Bad(text[: len(text) // 2], "Invalid JSON: EOF"),
        Bad(b"\xff\xfe\x00 not UTF-8", "Invalid JSON"),
        Bad(text[:-1] + b', "event_id": "id-\xff"}', "Invalid JSON: invalid unicode code point"),
        Bad(b"", "Invalid JSON: EOF"),
        Bad(b"[1, 2, 3]", "Input should be an object"),
        Bad(b"null", "Input should be an object"),
        Bad({**valid, "evil": "<script>"}, "evil: Extra inputs are not permitted"),
        Bad({**valid, "event_id": "has spaces"}, "event_id: String should match pattern"),
        Bad({**valid, "ts": -1}, "ts: Input should be greater than or equal to 0"),
        Bad({**valid, "ts": "yesterday"}, "ts: Input should be a valid number"),
        Bad(b'{"padding": "' + b"x" * MAX_MESSAGE_BYTES + b'"}', f"limit is {MAX_MESSAGE_BYTES}", HEAVY_COPIES),
    ]


def bad_listings(images: dict) -> list[Bad]:
    valid = {"product_id": "fuzz-p", "title": "Title", "price": 10.0, "image_path": "x.png"}
    fields = {key: value for key, value in valid.items() if key != "image_path"}
    return broken_messages(valid) + [Bad({**fields, **problem.value}, problem.reason, problem.copies)
                                     for problem in image_problems(images)] + [
        Bad({"title": "t", "price": 1.0, "image_path": "x.png"}, "product_id: Field required"),
        Bad({"product_id": "p", "price": 1.0, "image_path": "x.png"}, "title: Field required"),
        Bad({"product_id": "p", "title": "t", "image_path": "x.png"}, "price: Field required"),
        Bad({**valid, "price": "cheap"}, "price: Input should be a valid number"),
        Bad({**valid, "price": -1}, "price: Input should be greater than or equal to 0"),
        Bad({**valid, "price": 2e6}, "price: Input should be less than or equal to 1000000"),
        Bad({**valid, "in_stock": "maybe"}, "in_stock: Input should be a valid boolean"),
        Bad({**valid, "title": ""}, "title: String should have at least 1 character"),
        Bad({**valid, "title": "t" * 301}, "title: String should have at most 300 characters"),
        Bad({**valid, "title": 42}, "title: Input should be a valid string"),
        Bad({**valid, "product_id": "../../etc"}, "product_id: String should match pattern"),
        Bad({**valid, "product_id": "p" * 129}, "product_id: String should have at most 128 characters"),
    ]


def bad_actions(known_product: str) -> list[Bad]:
    valid = {"user_id": "fuzz-u", "product_id": known_product, "action": "view"}
    return broken_messages(valid) + [
        Bad({**valid, "product_id": "no-such-product"}, "unknown product_id 'no-such-product'"),
        Bad({**valid, "action": "teleport"}, "action: Input should be 'view', 'click', 'add_to_cart' or 'purchase'"),
        Bad({**valid, "product_id": 12}, "product_id: Input should be a valid string"),
        Bad({**valid, "user_id": "a user"}, "user_id: String should match pattern"),
        Bad({**valid, "user_id": "u" * 129}, "user_id: String should have at most 128 characters"),
        Bad({"product_id": known_product, "action": "view"}, "user_id: Field required"),
        Bad({"user_id": "u", "action": "view"}, "product_id: Field required"),
        Bad({"user_id": "u", "product_id": known_product}, "action: Field required"),
    ]


def bad_uploads(images: dict) -> list[Bad]:
    valid = {"image_path": "x.png", "k": 3}
    return broken_messages(valid) + [Bad({"k": 3, **problem.value}, problem.reason, problem.copies)
                                     for problem in image_problems(images)] + [
        Bad({**valid, "k": 0}, "k: Input should be greater than or equal to 1"),
        Bad({**valid, "k": 101}, "k: Input should be less than or equal to 100"),
        Bad({**valid, "k": "ten"}, "k: Input should be a valid integer"),
        Bad({**valid, "max_price": -5}, "max_price: Input should be greater than or equal to 0"),
        Bad({**valid, "user_id": "<script>"}, "user_id: String should match pattern"),
    ]


def collect(settings, spec: topics.TopicSpec, done, timeout_s: float, linger_s: float = 0.0) -> list[dict]:
    """The topic's messages once ``done(messages)`` holds, and ``linger_s`` more for late ones."""
    reader = TopicReader(settings, spec)
    reader.until(done, timeout_s)
    reader.poll(linger_s)
    reader.close()
    return reader.messages


def interleave(bad: list[Bad], good: list[tuple[str, dict]], prefix: str, rng: random.Random
               ) -> tuple[dict[str, Bad], list[tuple[str, dict | bytes]]]:
    keyed_bad = {f"bad-{prefix}-{n}": template for n, template in
                 enumerate(template for template in bad for _ in range(template.copies))}
    messages = [(key, template.value) for key, template in keyed_bad.items()] + good
    rng.shuffle(messages)
    return keyed_bad, messages


@pytest.fixture(scope="module")
def fuzzed(broker_url, images, tmp_path_factory):
    settings = isolated_settings(broker_url, max_message_bytes=MAX_MESSAGE_BYTES, max_image_bytes=MAX_IMAGE_BYTES,
                                 image_root=images["root"], text_embedder="none")
    products = demo_catalog(36)
    catalog, new_listings = products[:20], products[20:]
    (images["root"] / "good.png").write_bytes(base64.b64decode(new_listings[0].listing()["image_b64"]))
    good_listings = [(p.product_id, {**p.listing(), "event_id": f"good-listing-{i}"})
                     for i, p in enumerate(new_listings)]
    path_listing = good_listings[0][1]
    del path_listing["image_b64"]
    path_listing["image_path"] = "good.png"
    good_listings[1][1]["image_b64"] = b64(images["noise_near_limit"])
    good_actions = [(f"fuzz-user-{i % 9}", {"event_id": f"good-action-{i}", "user_id": f"fuzz-user-{i % 9}",
                                            "product_id": catalog[i % len(catalog)].product_id,
                                            "action": ("view", "click", "add_to_cart", "purchase")[i % 4],
                                            "ts": 5_000.0 + i}) for i in range(45)]
    good_uploads = [(f"good-upload-{i}", {"event_id": f"good-upload-{i}", "k": 3,
                                          "image_b64": catalog[i].listing()["image_b64"]}) for i in range(8)]
    rng = random.Random(7)
    sent = {}
    with running_worker(settings, tmp_path_factory.mktemp("logs")) as worker:
        load_catalog(settings, catalog)
        for spec, bad, good in ((topics.CATALOG, bad_listings(images), good_listings),
                                (topics.ACTIONS, bad_actions(catalog[0].product_id), good_actions),
                                (topics.UPLOADS, bad_uploads(images), good_uploads)):
            keyed_bad, messages = interleave(bad, good, spec.name, rng)
            produce(settings, spec, messages)
            sent[spec.name] = (keyed_bad, [event for _, event in good])
        total_bad = sum(len(keyed_bad) for keyed_bad, _ in sent.values())
        outputs = {}
        for spec, good in ((topics.SIMILAR_ITEMS, good_listings), (topics.RECOMMENDATIONS, good_actions),
                           (topics.SEARCH_RESULTS, good_uploads)):
            source_ids = {event["event_id"] for _, event in good}
            outputs[spec.name] = collect(settings, spec, lambda ms: source_ids <= {m["source_event_id"] for m in ms},
                                         900)
        # Lingering a little catches extra letters, such as a second one for an event.
        letters = collect(settings, topics.DEAD_LETTERS, lambda ms: len(ms) >= total_bad, 900, linger_s=3)
        with httpx.Client(base_url=f"http://127.0.0.1:{settings.web_port}", timeout=30) as http:
            health = http.get("/health").json()
        yield settings, sent, letters, outputs, worker.alive(), health


def test_over_a_thousand_bad_events_each_reach_dead_letters_once(fuzzed):
    settings, sent, letters, _, _, _ = fuzzed
    per_topic = Counter(letter["topic"].removeprefix(settings.topic_prefix) for letter in letters)
    assert per_topic == {topic: len(keyed_bad) for topic, (keyed_bad, _) in sent.items()}
    assert sum(per_topic.values()) >= 1000
    assert Counter(letter["key"] for letter in letters) == Counter(
        key for keyed_bad, _ in sent.values() for key in keyed_bad)


def test_each_dead_letter_says_why_and_where_from(fuzzed):
    settings, sent, letters, _, _, _ = fuzzed
    expected = {key: template for keyed_bad, _ in sent.values() for key, template in keyed_bad.items()}
    for letter in letters:
        assert expected[letter["key"]].reason in letter["reason"], (letter["key"], letter["reason"])
        assert letter["source_event_id"] == f"{letter['topic']}:{letter['partition']}:{letter['offset']}"
        assert "Traceback" not in letter["reason"]


def test_every_good_event_is_answered(fuzzed):
    _, sent, _, outputs, _, _ = fuzzed
    # A product's similar items come again when a neighbour is listed (with that listing's id).
    listings = {(listing["product_id"], listing["event_id"]) for listing in sent[topics.CATALOG.name][1]}
    assert listings <= {(m["product_id"], m["source_event_id"]) for m in outputs[topics.SIMILAR_ITEMS.name]}
    actions = {action["event_id"] for action in sent[topics.ACTIONS.name][1]}
    assert actions <= {m["source_event_id"] for m in outputs[topics.RECOMMENDATIONS.name]}
    uploads = {upload["event_id"] for upload in sent[topics.UPLOADS.name][1]}
    results = outputs[topics.SEARCH_RESULTS.name]
    assert {result["source_event_id"] for result in results} == uploads
    assert all(result["request_id"] == result["source_event_id"] and len(result["items"]) == 3 for result in results)


def test_the_worker_stays_up_and_healthy(fuzzed):
    _, _, _, _, alive, health = fuzzed
    assert alive
    assert health["status"] == "ok"
