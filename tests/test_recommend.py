"""Recommendation policy on real embeddings of the demo catalog, without Kafka."""
import numpy as np
import pytest
from PIL import Image
from qdrant_client import QdrantClient

from models.embedders import load_embedder
from recommender.demo_data import demo_catalog
from recommender.interests import UserProfile
from recommender.recommend import RecommendationPolicy, recommend, user_interests
from recommender.store import Product, ProductStore


@pytest.fixture(scope="module")
def demo_store():
    catalog = demo_catalog(150, seed=11)
    embedder = load_embedder("efficientnet_lite0")
    vectors = embedder.embed([Image.fromarray(p.image).convert("RGB") for p in catalog])
    store = ProductStore(QdrantClient(location=":memory:"), embedder.name, embedder.dim)
    store.upsert_products([Product(p.product_id, p.title, p.price, p.category) for p in catalog], vectors)
    return store, catalog, dict(zip((p.product_id for p in catalog), vectors))


def intra_list_similarity(vectors: list[np.ndarray]) -> float:
    stacked = np.stack(vectors)
    similarity = stacked @ stacked.T
    return float(similarity[np.triu_indices(len(vectors), 1)].mean())


def test_diversity_step_makes_the_list_less_redundant_than_plain_neighbours(demo_store):
    store, catalog, vectors = demo_store
    shirt = next(p for p in catalog if p.category == "Shirt")
    profile = UserProfile().record(shirt.product_id, "view", 0.0, 50)
    plain = RecommendationPolicy(diversity=0.0)
    diverse = RecommendationPolicy()
    interests = user_interests(store, profile, 0.0, diverse)
    nearest = recommend(store, profile, interests, plain)
    mixed = recommend(store, profile, interests, diverse)
    assert [h.product.product_id for h in nearest] != [h.product.product_id for h in mixed]
    assert intra_list_similarity([vectors[h.product.product_id] for h in mixed]) < \
        intra_list_similarity([vectors[h.product.product_id] for h in nearest])
    # Diversity costs a little relevance, not the list's point: still mostly close matches.
    assert np.mean([h.score for h in mixed]) > 0.9 * np.mean([h.score for h in nearest])


def test_the_interest_browsed_last_fills_most_of_the_list_and_the_other_keeps_a_place(demo_store):
    store, catalog, _ = demo_store
    shirts = [p for p in catalog if p.category == "Shirt"][:6]
    bags = [p for p in catalog if p.category == "Bag"][:2]
    # Six shirts a minute apart, ten minutes later two bags: by count the shirts weigh more
    # (3:1 under the hour-long half-life), by recent importance the bags.
    times = [60.0 * step for step in range(6)] + [900.0, 960.0]
    profile = UserProfile()
    for ts, product in zip(times, shirts + bags):
        profile = profile.record(product.product_id, "view", ts, 50)
    policy = RecommendationPolicy()
    interests = user_interests(store, profile, times[-1], policy)
    hits = recommend(store, profile, interests, policy)
    categories = [hit.product.category for hit in hits]
    assert len(interests) >= 2 and len(hits) == policy.k
    assert categories[0] == "Bag" and 7 <= categories.count("Bag") < policy.k, categories
