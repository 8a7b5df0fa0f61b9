import numpy as np
import pytest

from recommender.interests import (ActionRecord, Interest, UserProfile, cluster_interests, item_weights,
                                  recent_importance)
from recommender.ranking import mmr


def unit(*values):
    vector = np.array(values, dtype=np.float32)
    return vector / np.linalg.norm(vector)


def test_actions_are_weighted_and_decay_by_half_life():
    actions = (ActionRecord("a", "view", 0.0), ActionRecord("b", "purchase", 0.0), ActionRecord("a", "click", 100.0))
    weights = item_weights(actions, now=100.0, half_life_s=100.0)
    assert weights["a"] == pytest.approx(1.0 * 0.5 + 2.0)
    assert weights["b"] == pytest.approx(8.0 * 0.5)


def test_profile_keeps_recent_actions_in_time_order_and_remembers_purchases():
    profile = UserProfile()
    for product, action, ts in [("a", "purchase", 5.0), ("b", "view", 1.0), ("c", "view", 9.0), ("d", "view", 7.0)]:
        profile = profile.record(product, action, ts, max_actions=3)
    assert [a.product_id for a in profile.actions] == ["a", "d", "c"]
    assert profile.purchased == {"a"}
    assert UserProfile.from_json(profile.to_json()) == profile
    # Purchases outlive the action window.
    for ts in range(10, 20):
        profile = profile.record("z", "view", float(ts), max_actions=3)
    assert profile.purchased == {"a"} and profile.seen() == {"z"}


def test_recording_a_redelivered_event_changes_nothing():
    events = [("a", "view", 1.0), ("b", "purchase", 2.0), ("c", "click", 3.0), ("d", "view", 4.0)]
    once = UserProfile()
    for event in events:
        once = once.record(*event, max_actions=3)
    # A crash after "c" was applied but before its offset was committed: "b" and "c" come again.
    twice = UserProfile()
    for event in events[:3] + events[1:]:
        twice = twice.record(*event, max_actions=3)
    assert twice == once
    # The same product viewed again later is a new action, not a duplicate.
    assert len(once.record("d", "view", 5.0, max_actions=4).actions) == 4


def test_two_tastes_stay_two_interests_with_real_items_as_medoids():
    shoes = [unit(1, 0.1 * i, 0) for i in range(3)]
    bags = [unit(0, 0.1 * i, 1) for i in range(2)]
    ids = ["s0", "s1", "s2", "b0", "b1"]
    interests = cluster_interests(ids, np.stack(shoes + bags), np.array([1, 1, 1, 5, 5.0]), max_interests=3,
                                  min_similarity=0.6)
    assert len(interests) == 2
    assert set(interests[0].member_ids) == {"b0", "b1"} and interests[0].weight == 10
    assert set(interests[1].member_ids) == {"s0", "s1", "s2"} and interests[1].medoid_id == "s1"


def test_an_interests_centre_is_the_weighted_mean_direction_of_its_members():
    vectors = np.stack([unit(1, 0.2, 0), unit(1, -0.2, 0), unit(1, 0, 0.1)])
    interests = cluster_interests(["a", "b", "c"], vectors, np.array([1.0, 3.0, 0.0]), max_interests=3,
                                  min_similarity=0.5)
    assert len(interests) == 1
    expected = vectors[0] + 3 * vectors[1]
    np.testing.assert_allclose(interests[0].centre, expected / np.linalg.norm(expected), rtol=1e-5)
    assert interests[0].medoid_id in {"a", "b", "c"}  # the stored interest is still a real item


def test_recent_importance_favours_the_interest_browsed_last_whatever_the_clock():
    def interest(*members):
        return Interest(unit(1, 0), 1.0, members[0], members, unit(1, 0), np.stack([unit(1, 0)] * len(members)),
                        np.ones(len(members)))

    shoes, bags = interest("s1", "s2", "s3"), interest("b1")
    actions = (ActionRecord("s1", "view", 0.0), ActionRecord("s2", "view", 60.0), ActionRecord("s3", "view", 120.0),
               ActionRecord("b1", "view", 600.0))
    shoe_weight, bag_weight = recent_importance([shoes, bags], actions, half_life_s=120.0)
    assert bag_weight == 1.0 and shoe_weight == pytest.approx(0.5 ** 5 + 0.5 ** 4.5 + 0.5 ** 4)
    # Ages count from the newest action: a day later, or at any epoch, the ratio is the same.
    later = tuple(ActionRecord(a.product_id, a.action, a.ts + 86_400.0 * 365) for a in actions)
    assert recent_importance([shoes, bags], later, half_life_s=120.0) == pytest.approx([shoe_weight, bag_weight])
    # With a long half-life the three shoe actions outweigh the one bag.
    long_shoes, long_bags = recent_importance([shoes, bags], actions, half_life_s=3600.0)
    assert long_shoes > long_bags
    assert recent_importance([shoes, bags], (), half_life_s=120.0) == [0.0, 0.0]


def test_clusters_merge_down_to_the_interest_limit():
    vectors = np.eye(4, dtype=np.float32)
    interests = cluster_interests(list("abcd"), vectors, np.ones(4), max_interests=2, min_similarity=0.9)
    assert len(interests) == 2 and sorted(len(i.member_ids) for i in interests) in ([1, 3], [2, 2])


def test_density_is_highest_next_to_the_interests_items_and_follows_their_weights():
    vectors = np.stack([unit(1, 0, 0), unit(0, 1, 0)])
    interests = cluster_interests(["a", "b"], vectors, np.array([3.0, 1.0]), max_interests=1, min_similarity=0.9)
    assert len(interests) == 1
    candidates = np.stack([unit(1, 0, 0), unit(0, 1, 0), unit(1, 1, 0), unit(0, 0, 1)])
    density = interests[0].density(candidates, width=0.05)
    # On a member: its weight's share (the other member is 90 degrees away, exp(-20) = 0).
    np.testing.assert_allclose(density[:2], [0.75, 0.25], atol=1e-6)
    # Between the two members, far from both at this width; orthogonal to both, nothing.
    assert density[2] < 0.02 * density[1] and density[3] < 1e-8
    # A wider kernel counts the in-between product as near.
    assert interests[0].density(candidates, width=1.0)[2] > 0.5


def test_mmr_trades_relevance_for_diversity():
    vectors = np.stack([unit(1, 0), unit(1, 0.01), unit(1, 0.02), unit(0, 1)])
    relevance = np.array([0.9, 0.89, 0.88, 0.7])
    assert mmr(relevance, vectors, 2, trade_off=1.0) == [0, 1]
    assert mmr(relevance, vectors, 2, trade_off=0.5) == [0, 3]

