"""Behaviour analytics over one window of shopper actions, counted per (category, action).

The windowing is the stream's job (Faust tumbling or hopping tables keyed by category and
action); these helpers only read one window's counts, so they are the same for either.
"""
from collections import defaultdict
from collections.abc import Mapping

ActionCounts = Mapping[tuple[str, str], int]  # (category, action) -> events in the window


def conversion_rates(counts: ActionCounts, from_action: str = "view", to_action: str = "purchase"
                     ) -> dict[str, float | None]:
    """Per category, ``to_action`` events per ``from_action`` event (view -> purchase by default).

    None where the category had no ``from_action`` in the window: a rate of 0 would claim
    that shoppers saw the category and did not buy. A rate can exceed 1 inside one window
    (a purchase whose view fell into the previous window); it is reported as measured.
    """
    categories = {category for category, _ in counts}
    rates: dict[str, float | None] = {}
    for category in sorted(categories):
        started = counts.get((category, from_action), 0)
        rates[category] = counts.get((category, to_action), 0) / started if started else None
    return rates


def action_shares(counts: ActionCounts, action: str) -> dict[str, float]:
    """Each category's share of all ``action`` events in the window (shares sum to 1; empty if none)."""
    per_category: dict[str, int] = defaultdict(int)
    for (category, counted_action), count in counts.items():
        if counted_action == action:
            per_category[category] += count
    total = sum(per_category.values())
    if not total:
        return {}
    return {category: count / total for category, count in sorted(per_category.items())}
