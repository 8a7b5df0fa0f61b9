"""Re-ranking of candidate lists: diversity by maximal marginal relevance."""
import numpy as np


def mmr(relevance: np.ndarray, vectors: np.ndarray, k: int, trade_off: float) -> list[int]:
    """Pick ``k`` indices greedily by ``trade_off * relevance - (1 - trade_off) * redundancy``.

    Redundancy is the highest cosine similarity to anything already picked, so ten
    near-copies of one shoe lose to a mix of close matches. ``trade_off=1`` is plain ranking.
    """
    chosen: list[int] = []
    redundancy = np.full(len(relevance), -np.inf)
    available = np.ones(len(relevance), dtype=bool)
    for _ in range(min(k, len(relevance))):
        penalty = np.where(np.isfinite(redundancy), redundancy, 0.0)
        score = np.where(available, trade_off * relevance - (1 - trade_off) * penalty, -np.inf)
        best = int(np.argmax(score))
        chosen.append(best)
        available[best] = False
        redundancy = np.maximum(redundancy, vectors @ vectors[best])
    return chosen
