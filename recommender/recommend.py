""""You may also like": from a user's profile to a diverse, filtered top-k list."""
from dataclasses import dataclass, replace

import numpy as np

from recommender.interests import (Interest, UserProfile, allocate_slots, cluster_interests, item_weights,
                                  recent_importance)
from recommender.ranking import mmr
from recommender.store import Hit, ProductFilter, ProductStore


@dataclass(frozen=True)
class RecommendationPolicy:
    k: int = 10
    half_life_s: float = 3600.0
    max_interests: int = 3
    # Under EfficientNet-Lite0 (2,000 demo products) the mean cosine within a category is
    # 0.57 (bags) to 0.74, across categories 0.50 on average (up to 0.63 for look-alikes like
    # coat/pullover). Average linkage below 0.55 = a separate interest; at 0.6 a bag
    # shopper's clicks split into several interests (docs/recommender_eval.md).
    interest_min_similarity: float = 0.55
    exclude_seen: bool = True
    # 0 = plain nearest neighbours, 1 = only diversity. Slots per interest already spread
    # the list; on simulated sessions 0.3 cost hit rate for little extra spread, and 0.1
    # no longer replaced any near-copy (docs/recommender_eval.md).
    diversity: float = 0.15
    candidates_per_slot: int = 4
    # The k slots are split by each interest's recent importance: action weights halve every
    # slot_half_life_s (counted back from the newest action), so the interest the user is
    # browsing now fills most of the list and the others keep at least one slot each. Tuned on
    # simulated sessions with actions about a minute apart (docs/recommender_eval.md); half_life_s
    # (hours) still decides how much each item counts within its interest.
    slot_half_life_s: float = 120.0


def user_interests(store: ProductStore, profile: UserProfile, now: float,
                   policy: RecommendationPolicy) -> list[Interest]:
    weights = item_weights(profile.actions, now, policy.half_life_s)
    known = store.get_products(weights, with_vectors=True)
    ids = [product_id for product_id in weights if product_id in known]
    if not ids:
        return []
    vectors = np.stack([known[product_id][1] for product_id in ids])
    return cluster_interests(ids, vectors, np.array([weights[i] for i in ids]),
                             policy.max_interests, policy.interest_min_similarity)


def recommend(store: ProductStore, profile: UserProfile, interests: list[Interest],
              policy: RecommendationPolicy, product_filter: ProductFilter = ProductFilter()) -> list[Hit]:
    """Each interest fills its share of the k slots (by recent importance) with the nearest
    products to its centre, re-ranked by MMR; then the lists are interleaved."""
    if not interests:
        return []
    excluded = profile.purchased | (profile.seen() if policy.exclude_seen else set())
    query_filter = replace(product_filter, exclude_ids=product_filter.exclude_ids | excluded)
    importance = recent_importance(interests, profile.actions, policy.slot_half_life_s)
    slots = allocate_slots(importance, policy.k)
    candidate_lists = store.search(np.stack([interest.centre for interest in interests]),
                                   limit=max(slots) * policy.candidates_per_slot + policy.k,
                                   product_filter=query_filter, with_vectors=True)
    picked: list[list[Hit]] = []
    taken: set[str] = set()
    for candidates, quota in zip(candidate_lists, slots):
        fresh = [hit for hit in candidates if hit.product.product_id not in taken]
        if not fresh:
            picked.append([])
            continue
        order = mmr(np.array([hit.score for hit in fresh]), np.stack([hit.vector for hit in fresh]),
                    quota, 1.0 - policy.diversity)
        picked.append([fresh[index] for index in order])
        taken.update(fresh[index].product.product_id for index in order)
    # Round-robin from the interest browsed most recently: each leads with its closest match.
    by_recency = [picked[index] for index in sorted(range(len(picked)), key=lambda index: -importance[index])]
    interleaved = [hits[rank] for rank in range(max(map(len, picked))) for hits in by_recency if rank < len(hits)]
    return interleaved[:policy.k]
