"""Predict a product's category from its visual neighbours and check the seller's declaration.

The neighbours are the store's nearest catalog products by image (``ProductStore.search``).
Each labelled neighbour votes for its category with its cosine similarity, so a close match
outweighs a distant one. A seller's declared category is only called a mismatch when the
vote is confident: a wrong flag sends a seller's listing to manual review for nothing.
"""
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from recommender.store import Hit


@dataclass(frozen=True)
class CategoryVote:
    category: str | None  # None when no labelled neighbour voted
    confidence: float  # the winner's share of the similarity-weighted vote, in [0, 1]
    voters: int  # labelled neighbours that voted


@dataclass(frozen=True)
class CategoryCheck:
    declared: str | None
    predicted: str | None
    confidence: float
    mismatch: bool


def vote_category(hits: Sequence[Hit], product_id: str, k: int = 10) -> CategoryVote:
    """Similarity-weighted vote of the ``k`` nearest labelled hits, leaving out the product itself.

    ``hits`` are best first, as the store returns them; ask the store for ``k + 1`` so that
    the product's own point, once it is stored, does not cost a voter.
    """
    voters = [hit for hit in hits if hit.product.product_id != product_id and hit.product.category][:k]
    # Cosine similarity can be negative; a dissimilar neighbour must not vote against its category.
    weights: dict[str, float] = defaultdict(float)
    best_similarity: dict[str, float] = defaultdict(float)
    for hit in voters:
        category = hit.product.category
        weights[category] += max(hit.score, 0.0)
        best_similarity[category] = max(best_similarity[category], hit.score)
    total = sum(weights.values())
    if total <= 0:
        return CategoryVote(None, 0.0, len(voters))
    # On a tie the category with the single closest neighbour wins, then the name, so the
    # result never depends on the order of equal scores.
    winner = max(weights, key=lambda category: (weights[category], best_similarity[category], category))
    return CategoryVote(winner, weights[winner] / total, len(voters))


def check_declared_category(declared: str | None, vote: CategoryVote, min_confidence: float,
                            min_voters: int = 3) -> CategoryCheck:
    """Flag a mismatch when a confident vote of enough neighbours disagrees with the seller.

    A product without a declared category is never a mismatch; ``predicted`` can fill it in.
    """
    mismatch = (declared is not None and vote.category is not None and vote.category != declared
                and vote.confidence >= min_confidence and vote.voters >= min_voters)
    return CategoryCheck(declared, vote.category, vote.confidence, mismatch)
