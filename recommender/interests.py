"""Per-user interest model: weighted, time-decayed actions clustered into several interests.

Following PinnerSage, a user is not one average vector: the recent items a user acted on
are clustered, and each cluster's medoid (a real item, so it never drifts into empty
space between a shoe and a bag) becomes one interest with the summed weight of its members.

The profile stored per user holds only product ids, actions and times, not vectors: it
stays small on the changelog topic and stays valid when the embedding model changes.
"""
from dataclasses import dataclass, field

import numpy as np

ACTION_WEIGHTS = {"view": 1.0, "click": 2.0, "add_to_cart": 4.0, "purchase": 8.0}


@dataclass(frozen=True)
class ActionRecord:
    product_id: str
    action: str
    ts: float


@dataclass(frozen=True)
class UserProfile:
    """Recent actions (oldest first) and everything the user ever bought."""

    actions: tuple[ActionRecord, ...] = ()
    purchased: frozenset[str] = field(default_factory=frozenset)

    def to_json(self) -> dict:
        return {"actions": [[a.product_id, a.action, a.ts] for a in self.actions], "purchased": sorted(self.purchased)}

    @classmethod
    def from_json(cls, data: dict | None) -> "UserProfile":
        if not data:
            return cls()
        return cls(tuple(ActionRecord(*row) for row in data["actions"]), frozenset(data["purchased"]))

    def record(self, product_id: str, action: str, ts: float, max_actions: int) -> "UserProfile":
        new = ActionRecord(product_id, action, ts)
        # Delivery is at-least-once: after a crash the events since the last commit come again,
        # and the profile may already hold them. Recording one twice must change nothing.
        # (One too old to be kept is trimmed again below, so the window alone suffices.)
        if new in self.actions:
            return self
        # Late events are kept in time order so decay and "most recent" stay meaningful.
        actions = sorted((*self.actions, new), key=lambda a: a.ts)[-max_actions:]
        purchased = self.purchased | {product_id} if action == "purchase" else self.purchased
        return UserProfile(tuple(actions), purchased)

    def seen(self) -> set[str]:
        return {a.product_id for a in self.actions}


def item_weights(actions: tuple[ActionRecord, ...], now: float, half_life_s: float) -> dict[str, float]:
    """Sum of action weights per product, each halved for every ``half_life_s`` of age."""
    weights: dict[str, float] = {}
    for record in actions:
        age = max(0.0, now - record.ts)
        weights[record.product_id] = weights.get(record.product_id, 0.0) + \
            ACTION_WEIGHTS[record.action] * 0.5 ** (age / half_life_s)
    return weights


@dataclass(frozen=True)
class Interest:
    vector: np.ndarray  # the medoid's vector: a real item, what the user's profile point stores
    weight: float
    medoid_id: str
    member_ids: tuple[str, ...]
    # Weighted mean direction of the members: the interest's centre, what recommendations are
    # searched around. Clustering keeps members close (average linkage above the threshold),
    # so unlike a whole-profile average it cannot fall between a shoe and a bag; and it
    # estimates the centre of a taste from all members, where the medoid is one sample of it.
    centre: np.ndarray
    member_vectors: np.ndarray  # one row per member, in member_ids order
    member_weights: np.ndarray  # the members' decayed action weights

    def density(self, vectors: np.ndarray, width: float) -> np.ndarray:
        """How close each of ``vectors`` lies to this interest's items: a kernel density over the
        members, sum of weight * exp((cosine - 1) / width), divided by the total weight.

        Each member is a query point of the interest (PinnerSage queries one, the medoid): a
        candidate next to any item the user acted on scores high, and one next to several
        higher; ``width`` (in cosine) sets how near counts as next to.
        """
        kernel = np.exp((np.asarray(vectors @ self.member_vectors.T, dtype=np.float64) - 1.0) / width)
        total = self.member_weights.sum()
        return kernel @ self.member_weights / total if total > 0 else kernel.mean(axis=1)


def cluster_interests(ids: list[str], vectors: np.ndarray, weights: np.ndarray, max_interests: int,
                      min_similarity: float) -> list[Interest]:
    """Average-linkage agglomerative clustering of unit vectors, heaviest interest first.

    Merging stops at ``max_interests`` clusters, and earlier when the closest pair of
    clusters is less similar than ``min_similarity`` would require; a user with one taste
    then keeps one interest while a user with three keeps three.
    """
    if not ids:
        return []
    similarity = vectors @ vectors.T
    clusters = [[index] for index in range(len(ids))]
    while len(clusters) > 1:
        best, pair = -np.inf, None
        for left in range(len(clusters)):
            for right in range(left + 1, len(clusters)):
                linkage = similarity[np.ix_(clusters[left], clusters[right])].mean()
                if linkage > best:
                    best, pair = linkage, (left, right)
        if len(clusters) <= max_interests and best < min_similarity:
            break
        left, right = pair
        clusters[left] = clusters[left] + clusters.pop(right)
    interests = []
    for members in clusters:
        member_weights = weights[members]
        # Medoid: the member with the highest weighted similarity to the others.
        medoid = members[int(np.argmax(similarity[np.ix_(members, members)] @ member_weights))]
        centre = member_weights @ vectors[members] if member_weights.sum() > 0 else vectors[members].sum(axis=0)
        norm = np.linalg.norm(centre)
        interests.append(Interest(vectors[medoid], float(member_weights.sum()), ids[medoid],
                                  tuple(ids[m] for m in members),
                                  centre / norm if norm > 0 else vectors[medoid], vectors[members], member_weights))
    return sorted(interests, key=lambda interest: -interest.weight)


def recent_importance(interests: list[Interest], actions: tuple[ActionRecord, ...], half_life_s: float
                      ) -> list[float]:
    """Each interest's summed action weights, halved every ``half_life_s`` before the newest action.

    PinnerSage weighs interests by importance with time decay; with a half-life of a few
    actions this is mostly "which interest is the user browsing now". Ages count from the
    newest action, not the clock: only the ratios matter, and they do not change as the
    user idles (nor underflow to zero).
    """
    if not actions:
        return [0.0] * len(interests)
    weights = item_weights(actions, max(action.ts for action in actions), half_life_s)
    return [sum(weights.get(member, 0.0) for member in interest.member_ids) for interest in interests]
