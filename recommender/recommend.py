""""You may also like": from a user's profile to a diverse, filtered top-k list."""
from dataclasses import dataclass, replace

import numpy as np

from recommender.interests import Interest, UserProfile, cluster_interests, item_weights, recent_importance
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
    # 0 = rank by score only, 1 = only diversity (MMR). On simulated sessions 0.3 cost hit
    # rate for little extra spread, and 0.1 no longer replaced any near-copy
    # (docs/recommender_eval.md).
    diversity: float = 0.15
    # Nearest products to each interest's centre that are scored.
    candidates_per_interest: int = 50
    # Each interest's share of the list follows its recent importance: action weights halve
    # every share_half_life_s (counted back from the newest action), so the interest the user
    # is browsing now leads. Tuned on simulated sessions with actions about a minute apart
    # (docs/recommender_eval.md); half_life_s (hours) still decides how much each item counts
    # within its interest.
    share_half_life_s: float = 120.0
    # Kernel width (in cosine) of an interest's density over its items (Interest.density).
    kernel_width: float = 0.05


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


def interest_shares(interests: list[Interest], profile: UserProfile, half_life_s: float) -> np.ndarray:
    """Each interest's recent importance as a share of the total (equal shares if all decayed)."""
    importance = np.array(recent_importance(interests, profile.actions, half_life_s))
    return importance / importance.sum() if importance.sum() > 0 else np.full(len(interests), 1 / len(interests))


def recommend(store: ProductStore, profile: UserProfile, interests: list[Interest],
              policy: RecommendationPolicy, product_filter: ProductFilter = ProductFilter()) -> list[Hit]:
    """Score fusion across interests, re-ranked by MMR.

    The nearest products to each interest's centre are pooled. Each interest spreads its
    recent share over the pool in proportion to its density (how close a product lies to
    the interest's items), and a product's score is the sum over interests: the chance,
    under the model, that it is what the user acts on next. An interest browsed a while ago
    keeps a place only when its best products outscore the current interest's later ones.
    """
    if not interests:
        return []
    excluded = profile.purchased | (profile.seen() if policy.exclude_seen else set())
    query_filter = replace(product_filter, exclude_ids=product_filter.exclude_ids | excluded)
    candidate_lists = store.search(np.stack([interest.centre for interest in interests]),
                                   limit=policy.candidates_per_interest, product_filter=query_filter,
                                   with_vectors=True)
    pool: dict[str, Hit] = {}
    for hit in (hit for hits in candidate_lists for hit in hits):  # a product found twice keeps its best score
        if hit.product.product_id not in pool or hit.score > pool[hit.product.product_id].score:
            pool[hit.product.product_id] = hit
    if not pool:
        return []
    hits = list(pool.values())
    vectors = np.stack([hit.vector for hit in hits])
    score = np.zeros(len(hits))
    for interest, share in zip(interests, interest_shares(interests, profile, policy.share_half_life_s)):
        density = interest.density(vectors, policy.kernel_width)
        if density.sum() > 0:  # else nothing lies near this interest's items at all
            score += share * density / density.sum()
    # MMR weighs relevance against cosine redundancy, so relevance goes back to cosine units:
    # for a single item, width * log(density) is its cosine - 1.
    tiny = np.finfo(float).tiny
    relevance = 1.0 + policy.kernel_width * np.log(np.maximum(score / max(score.max(), tiny), tiny))
    order = mmr(relevance, vectors, policy.k, 1.0 - policy.diversity)
    return [hits[index] for index in order]
