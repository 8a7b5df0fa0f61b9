"""What is popular right now, overall and per category: the cold-start answer for new users."""
from dataclasses import dataclass


@dataclass(frozen=True)
class PopularItem:
    product_id: str
    category: str | None
    score: float
    window_end: float


class PopularityBoard:
    """Latest windowed score per product, as published on the popularity topic.

    Scores come from a hopping window, so an item nobody touched lately drops out when its
    window ends, even if no newer score for it ever arrives.
    """

    def __init__(self):
        self._items: dict[str, PopularItem] = {}

    def update(self, items: list[PopularItem]) -> None:
        for item in items:
            current = self._items.get(item.product_id)
            if current is None or item.window_end >= current.window_end:
                self._items[item.product_id] = item

    def top(self, k: int, now: float, category: str | None = None, exclude: frozenset[str] = frozenset()
            ) -> list[PopularItem]:
        live = [item for item in self._items.values()
                if item.window_end >= now and item.product_id not in exclude
                and (category is None or item.category == category)]
        return sorted(live, key=lambda item: (-item.score, item.product_id))[:k]

    def __len__(self) -> int:
        return len(self._items)
