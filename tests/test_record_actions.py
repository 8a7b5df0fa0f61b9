"""The recommendation agent's handler on batches of actions, without Kafka, on a real Qdrant Edge store."""
import random

import numpy as np
import pytest

from recommender.settings import Settings
from recommender.store import Product
from streams import handlers
from streams.events import ShopperAction

PRODUCTS = 120
CATEGORIES = 4


@pytest.fixture
def services(tmp_path):
    services = handlers.Services(Settings(qdrant_path=str(tmp_path), text_embedder="none"))
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(CATEGORIES, services.spec.dim))
    vectors = centres[np.arange(PRODUCTS) % CATEGORIES] + rng.normal(size=(PRODUCTS, services.spec.dim))
    services.store.upsert_products(
        [Product(f"p{i}", f"item {i}", price=10.0, category=f"c{i % CATEGORIES}") for i in range(PRODUCTS)],
        (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32))
    return services


def browsing(count: int) -> list[ShopperAction]:
    rng = random.Random(3)
    return [ShopperAction(event_id=f"e{i}", user_id=f"u{rng.randrange(5)}", product_id=f"p{rng.randrange(PRODUCTS)}",
                          action=rng.choice(["view", "click", "purchase"]), ts=100.0 + i) for i in range(count)]


def play(services, actions: list[ShopperAction], batch_size: int) -> tuple[dict, list]:
    """Actions in batches of ``batch_size``, each batch starting from the profiles the last one left."""
    profiles: dict[str, dict] = {}
    outcomes = []
    for start in range(0, len(actions), batch_size):
        batch = actions[start:start + batch_size]
        recorded = handlers.record_actions(services, {a.user_id: profiles.get(a.user_id) for a in batch}, batch)
        profiles.update(recorded.profiles)
        outcomes += recorded.outcomes
    return profiles, outcomes


def test_batch_boundaries_do_not_change_any_answer(services):
    actions = browsing(40)
    one_by_one = play(services, actions, 1)
    in_batches = play(services, actions, 16)
    assert in_batches[0] == one_by_one[0]
    assert [outcome[0] for outcome in in_batches[1]] == [outcome[0] for outcome in one_by_one[1]]
    assert [outcome[1] for outcome in in_batches[1]] == [outcome[1] for outcome in one_by_one[1]]


def test_each_answer_reflects_the_profile_as_of_its_own_event(services):
    bought = ShopperAction(event_id="buy", user_id="u", product_id="p1", action="purchase", ts=1.0)
    views = [ShopperAction(event_id=f"view{i}", user_id="u", product_id=f"p{i}", action="view", ts=2.0 + i)
             for i in (5, 9)]
    _, outcomes = play(services, [bought, *views], 3)
    shown = [{item.product_id for item in recommendations.items} for recommendations, _ in outcomes]
    assert "p1" not in set().union(*shown)  # bought: never again
    assert "p5" not in shown[1] | shown[2] and "p9" not in shown[2]  # viewed: not shown again
    assert [activity.source_event_id for _, activity in outcomes] == ["buy", "view5", "view9"]


def test_an_unknown_product_is_rejected_in_place_and_the_rest_of_the_batch_goes_on(services):
    actions = browsing(6)
    actions[2] = actions[2].model_copy(update={"product_id": "no-such-product"})
    recorded = handlers.record_actions(services, {}, actions)
    assert isinstance(recorded.outcomes[2], handlers.Rejected)
    assert "no-such-product" in str(recorded.outcomes[2])
    answered = [outcome[0].source_event_id for outcome in recorded.outcomes if not isinstance(outcome, handlers.Rejected)]
    assert answered == [a.event_id for i, a in enumerate(actions) if i != 2]


def test_the_users_latest_interests_and_list_are_saved_once_per_batch(services):
    actions = browsing(30)
    recorded = handlers.record_actions(services, {}, actions)
    for user_id in {a.user_id for a in actions}:
        last = [outcome[0] for outcome in recorded.outcomes if outcome[0].user_id == user_id][-1]
        saved = services.store.get_user(user_id)
        assert saved["recommended"] == [item.product_id for item in last.items]
        assert len(saved["interests"]) == last.interests
