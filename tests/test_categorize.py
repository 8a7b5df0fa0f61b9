import numpy as np
import pytest
from qdrant_client import QdrantClient

from recommender.categorize import CategoryVote, check_declared_category, vote_category
from recommender.store import Hit, Product, ProductStore


def hit(product_id: str, category: str | None, score: float) -> Hit:
    return Hit(Product(product_id, product_id, 10.0, category), score)


def test_similarity_weighted_vote_can_beat_the_majority():
    hits = [hit("a", "Bag", 0.95), hit("b", "Bag", 0.9), hit("c", "Coat", 0.3), hit("d", "Coat", 0.3),
            hit("e", "Coat", 0.3)]
    vote = vote_category(hits, "query")
    assert vote == CategoryVote("Bag", pytest.approx(1.85 / 2.75), 5)


def test_the_product_itself_and_unlabelled_hits_do_not_vote():
    hits = [hit("query", "Coat", 1.0), hit("a", None, 0.99), hit("b", "Bag", 0.8), hit("c", "Sandal", 0.2)]
    vote = vote_category(hits, "query")
    assert (vote.category, vote.voters) == ("Bag", 2)
    assert vote.confidence == pytest.approx(0.8)


def test_only_the_k_nearest_vote_and_negative_similarity_counts_nothing():
    hits = [hit("a", "Bag", 0.6), hit("b", "Coat", 0.5), hit("c", "Coat", 0.5), hit("d", "Coat", 0.5)]
    assert vote_category(hits, "query", k=1).category == "Bag"
    assert vote_category([hit("a", "Bag", -0.2)], "query") == CategoryVote(None, 0.0, 1)
    assert vote_category([], "query") == CategoryVote(None, 0.0, 0)


def test_ties_go_to_the_category_with_the_closest_neighbour():
    hits = [hit("a", "Coat", 0.5), hit("b", "Coat", 0.5), hit("c", "Bag", 0.75), hit("d", "Bag", 0.25)]
    assert vote_category(hits, "query").category == "Bag"


def test_mismatch_needs_disagreement_confidence_and_enough_voters():
    confident = CategoryVote("Bag", 0.9, 10)
    assert check_declared_category("Coat", confident, min_confidence=0.7).mismatch
    assert not check_declared_category("Bag", confident, min_confidence=0.7).mismatch
    assert not check_declared_category(None, confident, min_confidence=0.7).mismatch
    assert not check_declared_category("Coat", CategoryVote("Bag", 0.6, 10), min_confidence=0.7).mismatch
    assert not check_declared_category("Coat", CategoryVote("Bag", 1.0, 2), min_confidence=0.7).mismatch
    assert check_declared_category("Coat", confident, 0.7).predicted == "Bag"


def test_vote_over_a_real_store_search():
    rng = np.random.default_rng(0)
    centres = {"Bag": rng.normal(size=16), "Coat": rng.normal(size=16)}
    products, vectors = [], []
    for category, centre in centres.items():
        for index in range(5):
            products.append(Product(f"{category}-{index}", category, 10.0, category))
            vectors.append(centre + rng.normal(scale=0.3, size=16))
    unit = np.array(vectors) / np.linalg.norm(vectors, axis=1, keepdims=True)
    store = ProductStore(QdrantClient(":memory:"), model="m", image_dim=16)
    store.upsert_products(products, unit.astype(np.float32))

    # Bag-3 is stored, so it is its own nearest hit: the vote skips it and counts the other
    # four bags and the nearest coat.
    hits = store.search(unit[3], limit=6)[0]
    assert hits[0].product.product_id == "Bag-3"
    vote = vote_category(hits, "Bag-3", k=5)
    assert vote.category == "Bag" and vote.voters == 5
    assert check_declared_category("Coat", vote, min_confidence=0.7).mismatch
