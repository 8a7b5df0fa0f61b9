"""One contract for every store backend: embedded in RAM, embedded on disk, and a Qdrant
server when ``VR_TEST_QDRANT_URL`` names one (docker-compose brings one up); each with and
without the vector cache (a capacity of 4 makes it evict within one test)."""
import os
import threading
from dataclasses import replace

import numpy as np
import pytest
from qdrant_client import QdrantClient
from qdrant_client import models as qm

from recommender.edge_store import EdgeClient
from recommender.store import Product, ProductFilter, ProductStore

BACKENDS = ["memory", "path", "edge"] + (["server"] if os.environ.get("VR_TEST_QDRANT_URL") else [])
DIM = 8


@pytest.fixture(params=[(backend, cache) for backend in BACKENDS for cache in (0, 4)],
                ids=lambda param: f"{param[0]}-cache{param[1]}")
def store(request, tmp_path):
    backend, vector_cache_items = request.param
    if backend == "memory":
        client = QdrantClient(location=":memory:")
    elif backend == "path":
        client = QdrantClient(path=str(tmp_path / "qdrant"))
    elif backend == "edge":
        client = EdgeClient(tmp_path / "qdrant-edge")
    else:
        client = QdrantClient(url=os.environ["VR_TEST_QDRANT_URL"])
    prefix = f"t{os.getpid()}{tmp_path.name[-6:]}_"
    yield ProductStore(client, "m1", DIM, prefix=prefix, vector_cache_items=vector_cache_items)
    for collection in client.get_collections().collections:
        if collection.name.startswith(prefix):
            client.delete_collection(collection.name)
    client.close()


def catalog(rng):
    products = [Product(f"p{i}", f"item {i}", price=10.0 * i, category="shoe" if i % 2 else "bag",
                        in_stock=i != 3) for i in range(10)]
    vectors = rng.normal(size=(10, DIM)).astype(np.float32)
    return products, vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_upserts_are_idempotent_by_business_id(store):
    products, vectors = catalog(np.random.default_rng(0))
    store.upsert_products(products, vectors)
    store.upsert_products(products, vectors)
    assert store.count() == 10
    store.upsert_products([Product("p1", "renamed", price=1.0)], vectors[:1])
    assert store.count() == 10
    assert store.get_products(["p1"])["p1"][0].title == "renamed"


def test_search_finds_the_query_item_first_and_honours_filters(store):
    products, vectors = catalog(np.random.default_rng(1))
    store.upsert_products(products, vectors)
    assert store.search(vectors[4], limit=1)[0][0].product.product_id == "p4"
    everything = store.search(vectors[0], limit=10, product_filter=ProductFilter(in_stock_only=False))[0]
    assert len(everything) == 10
    in_stock = {hit.product.product_id for hit in store.search(vectors[3], limit=10)[0]}
    assert "p3" not in in_stock and len(in_stock) == 9
    shoes = store.search(vectors[0], limit=10, product_filter=ProductFilter(category="shoe", max_price=55,
                                                                          exclude_ids=frozenset({"p1"})))[0]
    assert {hit.product.product_id for hit in shoes} == {"p5"}  # p3 is out of stock


def test_batched_search_returns_vectors_when_asked(store):
    products, vectors = catalog(np.random.default_rng(2))
    store.upsert_products(products, vectors)
    first, second = store.search(vectors[[0, 1]], limit=2, with_vectors=True)
    assert first[0].product.product_id == "p0" and second[0].product.product_id == "p1"
    np.testing.assert_allclose(first[0].vector, vectors[0], atol=1e-5)


def test_a_new_image_for_a_product_replaces_its_vector_everywhere(store):
    products, vectors = catalog(np.random.default_rng(4))
    store.upsert_products(products, vectors)
    store.search(vectors, limit=10, with_vectors=True)  # every vector read (and cached where there is a cache)
    store.upsert_products(products[:1], vectors[9:10])
    np.testing.assert_allclose(store.get_products(["p0"], with_vectors=True)["p0"][1], vectors[9], atol=1e-5)
    hits = {hit.product.product_id: hit.vector for hit in store.search(vectors[9], limit=2, with_vectors=True)[0]}
    assert set(hits) == {"p0", "p9"}
    np.testing.assert_allclose(hits["p0"], vectors[9], atol=1e-5)


def test_a_replayed_earlier_revision_does_not_roll_a_product_back(store):
    products, vectors = catalog(np.random.default_rng(5))
    store.upsert_products([replace(products[0], revision=7)], vectors[:1])
    sold_out = replace(products[0], in_stock=False, revision=9)
    assert store.upsert_products([sold_out, replace(products[1], revision=8)], vectors[[9, 1]]) == [0, 1]
    # A worker replaying history meets the first listing (revision 7) again.
    assert store.upsert_products([replace(products[0], revision=7), replace(products[2], revision=3)],
                                 vectors[[0, 2]]) == [1]
    stored, vector = store.get_products(["p0"], with_vectors=True)["p0"]
    assert (stored.in_stock, stored.revision) == (False, 9)
    np.testing.assert_allclose(vector, vectors[9], atol=1e-5)
    assert "p0" not in {hit.product.product_id for hit in store.search(vectors[0], limit=10)[0]}
    # The same revision again is the same record (re-read after a restart): it applies.
    assert store.upsert_products([sold_out], vectors[9:10]) == [0]
    # A product without a revision (a record from before revisions existed) always applies.
    assert store.upsert_products([products[0]], vectors[:1]) == [0]
    assert store.get_products(["p0"])["p0"][0].in_stock


def test_unknown_ids_are_absent_not_errors(store):
    products, vectors = catalog(np.random.default_rng(3))
    store.upsert_products(products, vectors)
    found = store.get_products(["p2", "nope"], with_vectors=True)
    assert set(found) == {"p2"}
    np.testing.assert_allclose(found["p2"][1], vectors[2], atol=1e-5)


def test_user_profiles_round_trip(store):
    interests = np.eye(DIM, dtype=np.float32)[:2]
    store.save_users([("u1", interests, ["p1", "p2"], 123.0)])
    store.save_users([("u1", interests[:1], ["p3"], 124.0)])
    user = store.get_user("u1")
    assert user["recommended"] == ["p3"] and user["updated_at"] == 124.0
    np.testing.assert_allclose(user["interests"], interests[:1])
    assert store.get_user("nobody") is None


def test_each_model_has_its_collection_and_the_alias_follows_the_switch(store):
    products, vectors = catalog(np.random.default_rng(4))
    store.upsert_products(products, vectors)
    newer = ProductStore(store.client, "m2", DIM, prefix=store.alias.removesuffix("products"))
    newer.upsert_products(products[:2], vectors[:2])
    assert (store.count(), newer.count()) == (10, 2)
    assert store.client.count(store.alias).count == 10  # the alias still names m1's collection
    newer.switch_alias(newer.collection)
    assert store.client.count(store.alias).count == 2
    assert store.search(vectors[5], limit=1)[0][0].product.product_id == "p5"  # m1 still answers its own queries


def test_filter_accepts_exactly_what_the_store_query_returns(store):
    products, vectors = catalog(np.random.default_rng(5))
    store.upsert_products(products, vectors)
    for product_filter in (ProductFilter(), ProductFilter(category="bag", max_price=60),
                           ProductFilter(in_stock_only=False, exclude_ids=frozenset({"p0", "p3"}))):
        returned = {hit.product.product_id for hit in store.search(vectors[0], 10, product_filter)[0]}
        assert returned == {p.product_id for p in products if product_filter.accepts(p)}


def test_categories_count_the_products_of_each(store):
    products, vectors = catalog(np.random.default_rng(4))
    store.upsert_products(products, vectors)
    assert store.categories() == {"shoe": 5, "bag": 5}


def test_an_edge_store_first_used_from_several_threads_at_once_opens_each_collection_once(tmp_path):
    """Two threads can touch a collection first at the same moment; Edge locks a shard's
    write-ahead log, so a second open of it failed with "Can't init WAL" (a worker in CI did)."""
    creator = EdgeClient(tmp_path)
    creator.create_collection("x", {"image": qm.VectorParams(size=4, distance=qm.Distance.COSINE)})
    creator.close()
    errors = []
    for _ in range(10):
        client, start = EdgeClient(tmp_path), threading.Barrier(4)

        def first_use():
            start.wait()
            try:
                client.count("x")
            except Exception as error:  # noqa: BLE001 (any failure is what is counted)
                errors.append(error)

        threads = [threading.Thread(target=first_use) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        client.close()
    assert errors == []
