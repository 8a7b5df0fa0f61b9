"""Demo shop built from Fashion-MNIST: catalog listings and simulated shopping sessions.

Titles are made from what the image shows (its category and how dark it is) so keyword
search has something true to find; prices are drawn per category. Sessions are simulated
users with one to three category interests: honest test data, not real shoppers.
"""
import base64
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from PIL import Image

from models import fashion_mnist
from models.images import encode_png

STYLES = {
    "T-shirt/top": ("crew-neck", "graphic", "basic", "sleeveless"),
    "Trouser": ("slim", "wide-leg", "cargo", "chino"),
    "Pullover": ("knit", "wool", "hooded", "cable-knit"),
    "Dress": ("summer", "evening", "maxi", "shift"),
    "Coat": ("winter", "trench", "parka", "rain"),
    "Sandal": ("strappy", "flat", "heeled", "beach"),
    "Shirt": ("button-down", "flannel", "oxford", "linen"),
    "Sneaker": ("running", "court", "high-top", "canvas"),
    "Bag": ("leather", "tote", "shoulder", "backpack"),
    "Ankle boot": ("chelsea", "lace-up", "heeled", "suede"),
}
BASE_PRICE = {"T-shirt/top": 15, "Trouser": 40, "Pullover": 45, "Dress": 55, "Coat": 120,
              "Sandal": 35, "Shirt": 30, "Sneaker": 70, "Bag": 60, "Ankle boot": 90}


def tone(pixels: np.ndarray) -> str:
    """Colour word from the article's mean brightness (background pixels are 0)."""
    article = pixels[pixels > 20]
    brightness = article.mean() if article.size else 0
    for limit, word in ((80, "black"), (130, "dark grey"), (180, "grey"), (215, "light grey")):
        if brightness < limit:
            return word
    return "white"


@dataclass(frozen=True)
class DemoProduct:
    product_id: str
    title: str
    category: str
    price: float
    image: np.ndarray  # 28x28 uint8

    def listing(self, in_stock: bool = True, seller_id: str = "shop") -> dict:
        png = encode_png(Image.fromarray(self.image).convert("RGB"))
        return {"event_id": f"list-{self.product_id}", "product_id": self.product_id, "title": self.title,
                "category": self.category, "price": self.price, "in_stock": in_stock, "seller_id": seller_id,
                "image_b64": base64.b64encode(png).decode()}


def demo_catalog(count: int, split: str = "train", seed: int = 7) -> list[DemoProduct]:
    """``count`` products with balanced categories, drawn reproducibly from one split."""
    images, labels = fashion_mnist.load(split)
    rng = random.Random(seed)
    per_class = [list(np.flatnonzero(labels == label)) for label in range(len(fashion_mnist.CATEGORIES))]
    for indices in per_class:
        rng.shuffle(indices)
    chosen = [per_class[i % len(per_class)][i // len(per_class)] for i in range(count)]
    products = []
    for index in chosen:
        category = fashion_mnist.CATEGORIES[labels[index]]
        title = f"{tone(images[index]).capitalize()} {rng.choice(STYLES[category])} {category.lower()}"
        price = round(BASE_PRICE[category] * rng.uniform(0.6, 1.8), 2)
        products.append(DemoProduct(f"fm-{split}-{index}", title, category, price, images[index]))
    return products


class Article(Protocol):
    """What a session needs of a product: a demo product, or a product read from the store."""

    @property
    def product_id(self) -> str: ...

    @property
    def category(self) -> str | None: ...


def shopping_session(user_id: str, catalog: Sequence[Article], interests: list[str], actions: int,
                     rng: random.Random, start_ts: float) -> list[dict]:
    """A simulated user browsing only ``interests``: mostly views, some clicks, carts and purchases."""
    pool = [product for product in catalog if product.category in interests]
    events = []
    for step in range(actions):
        product = rng.choice(pool)
        action = rng.choices(["view", "click", "add_to_cart", "purchase"], weights=[10, 4, 2, 1])[0]
        events.append({"event_id": f"{user_id}-{step}", "user_id": user_id, "product_id": product.product_id,
                       "action": action, "ts": start_ts + step})
    return events
