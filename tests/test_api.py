"""The query API over real HTTP against a running worker (catalog indexed through Kafka)."""
import base64
import time
from collections import Counter

import httpx
import pytest

from models.fashion_mnist import FOOTWEAR
from streams import topics
from streams.client import produce

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def api(shop):
    settings, _, _ = shop
    with httpx.Client(base_url=f"http://127.0.0.1:{settings.web_port}", timeout=60) as client:
        yield client


def png_of(product) -> bytes:
    return base64.b64decode(product.listing()["image_b64"])


def test_health_and_metrics(api, catalog):
    health = api.get("/health").json()
    assert health["status"] == "ok" and health["products"] >= len(catalog)
    metrics = api.get("/metrics")
    assert metrics.status_code == 200
    assert 'vr_events_total{agent="ingest_catalog",outcome="ok"}' in metrics.text
    assert "vr_store_products" in metrics.text


def test_similar_items_of_a_product(api, catalog):
    product = catalog[0]
    response = api.get(f"/api/products/{product.product_id}/similar", params={"k": 5, "thumbnails": "true"})
    assert response.status_code == 200
    rows = response.json()["items"]
    assert len(rows) == 5 and product.product_id not in {row["product_id"] for row in rows}
    assert rows[0]["thumbnail"].startswith("data:image/png;base64,")
    bags = api.get(f"/api/products/{product.product_id}/similar", params={"k": 5, "category": "Bag"}).json()
    assert {row["category"] for row in bags["items"]} == {"Bag"}


@pytest.mark.parametrize("path, params, status, message", [
    ("/api/products/no-such-product/similar", {}, 404, "unknown product_id"),
    ("/api/products/x/similar", {"k": 0}, 400, "k: Input should be greater than or equal to 1"),
    ("/api/products/x/similar", {"k": "ten"}, 400, "k: Input should be a valid integer"),
    ("/api/search/text", {}, 400, "q: Field required"),
    ("/api/search/text", {"q": "shoe", "max_price": -1}, 400, "max_price"),
    ("/api/products", {"limit": 1000}, 400, "limit"),
])
def test_bad_requests_get_a_clear_4xx(api, path, params, status, message):
    response = api.get(path, params=params)
    assert response.status_code == status
    assert message in response.json()["error"]
    assert "Traceback" not in response.text


def test_keyword_search_finds_the_words_in_titles(api):
    rows = api.get("/api/search/text", params={"q": "running sneaker", "k": 5}).json()["items"]
    assert len(rows) == 5
    assert Counter(row["category"] for row in rows)["Sneaker"] >= 4, rows
    bags = api.get("/api/search/text", params={"q": "leather bag", "k": 5, "max_price": 80}).json()["items"]
    assert all(row["category"] == "Bag" and row["price"] <= 80 for row in bags), bags


def test_photo_search_returns_the_photographed_product_first(api, catalog):
    product = catalog[21]
    response = api.post("/api/search/image", params={"k": 3}, files={"image": ("shoe.png", png_of(product))})
    assert response.status_code == 200
    assert response.json()["items"][0]["product_id"] == product.product_id


def test_photo_and_keywords_together(api, catalog):
    product = catalog[21]
    response = api.post("/api/search/image", params={"k": 5}, files={"image": ("p.png", png_of(product))},
                        data={"q": product.title})
    rows = response.json()["items"]
    assert rows[0]["product_id"] == product.product_id


@pytest.mark.parametrize("request_kwargs, status, message", [
    ({"files": {"image": ("bad.png", b"not an image at all")}}, 422, "not a decodable image"),
    ({"files": {"other": ("x.png", b"...")}}, 400, "missing file field 'image'"),
    ({"json": {"image": "..."}}, 415, "multipart/form-data"),
])
def test_bad_uploads_are_refused_with_the_reason(api, request_kwargs, status, message):
    response = api.post("/api/search/image", **request_kwargs)
    assert response.status_code == status
    assert message in response.json()["error"]


def test_browse_the_catalog_by_category_page_by_page(api):
    first = api.get("/api/products", params={"category": "Coat", "limit": 8}).json()
    assert len(first["items"]) == 8 and {row["category"] for row in first["items"]} == {"Coat"}
    second = api.get("/api/products", params={"category": "Coat", "limit": 8, "offset": first["next_offset"]}).json()
    assert not {r["product_id"] for r in first["items"]} & {r["product_id"] for r in second["items"]}


def test_new_user_gets_what_is_popular_and_a_known_user_gets_their_interests(shop, api, catalog):
    settings, _, _ = shop
    hit = [p for p in catalog if p.category == "Trouser"][0]
    now = time.time()
    produce(settings, topics.ACTIONS, [(f"fan-{i}", {"event_id": f"pop-{i}", "user_id": f"fan-{i}",
                                                     "product_id": hit.product_id, "action": "purchase", "ts": now})
                                       for i in range(5)])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        popular = api.get("/api/popular", params={"k": 3}).json()["items"]
        if popular and popular[0]["product_id"] == hit.product_id:
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"{hit.product_id} never became the most popular item: {popular}")
    newcomer = api.get("/api/users/someone-new/recommendations").json()
    assert newcomer["strategy"] == "popular" and newcomer["interests"] == 0
    assert newcomer["items"][0]["product_id"] == hit.product_id
    fan = api.get("/api/users/fan-0/recommendations", params={"k": 5}).json()
    assert fan["strategy"] == "interests" and fan["interests"] == 1
    assert hit.product_id not in {row["product_id"] for row in fan["items"]}  # already bought
    assert Counter(row["category"] for row in fan["items"])["Trouser"] >= 3


def test_recommendations_by_api_match_the_users_footwear_taste(shop, api, catalog):
    settings, _, _ = shop
    boots = [p for p in catalog if p.category in FOOTWEAR][:4]
    # Weeks-old clicks: decayed to almost nothing, but still the only taste this user has shown.
    produce(settings, topics.ACTIONS, [("boot-user", {"event_id": f"boot-{i}", "user_id": "boot-user",
                                                      "product_id": p.product_id, "action": "click",
                                                      "ts": time.time() - 30 * 86400 + i})
                                       for i, p in enumerate(boots)])
    deadline = time.monotonic() + 60
    while (body := api.get("/api/users/boot-user/recommendations").json())["interests"] == 0:
        assert time.monotonic() < deadline, body
        time.sleep(0.3)
    assert sum(row["category"] in FOOTWEAR for row in body["items"]) >= 7
