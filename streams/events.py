"""Pydantic schemas of every message on the service's topics.

Inputs are validated here and nowhere else; an event that fails validation goes to the
dead-letter topic with pydantic's message as the reason. Outputs are built from these
models too, so their shape is written down in one place.
"""
import base64
import time
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

Identifier = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:@-]+$")]
Action = Literal["view", "click", "add_to_cart", "purchase"]


class Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    # Producers may omit it; the agent then uses the Kafka coordinates, which a replay reproduces.
    event_id: Identifier | None = None
    ts: float = Field(default_factory=time.time, ge=0, description="Event time, epoch seconds")


class ImageRef(Event):
    """An image carried inline (base64) or as a path below the configured image root."""

    image_b64: str | None = Field(None, repr=False)
    image_path: str | None = None

    @model_validator(mode="after")
    def _exactly_one_source(self):
        if (self.image_b64 is None) == (self.image_path is None):
            raise ValueError("give exactly one of image_b64 or image_path")
        return self


class ProductListed(ImageRef):
    product_id: Identifier
    title: str = Field(min_length=1, max_length=300)
    category: str | None = Field(None, max_length=64, description="The seller's declared category")
    price: float = Field(ge=0, le=1_000_000)
    in_stock: bool = True
    seller_id: Identifier = "shop"


class ShopperAction(Event):
    user_id: Identifier
    product_id: Identifier
    action: Action


class ReferenceImage(ImageRef):
    """A brand's genuine product photo: listings by other sellers that copy it get flagged."""

    reference_id: Identifier
    brand: str = Field(min_length=1, max_length=100)
    title: str = Field(min_length=1, max_length=300)
    owner_seller_id: Identifier
    category: str | None = Field(None, max_length=64)


class ShelfFrame(ImageRef):
    """A shelf-camera frame: several products side by side on a shelf."""

    store_id: Identifier
    shelf_id: Identifier


class ImageUpload(ImageRef):
    user_id: Identifier | None = None
    k: int = Field(10, ge=1, le=100)
    category: str | None = Field(None, max_length=64, description="Only return this category")
    max_price: float | None = Field(None, ge=0)


class IndexedProduct(BaseModel):
    """A listing with its embedding: what ``catalog.vectors`` carries from the CNN to every store."""

    product_id: str
    title: str
    category: str | None
    price: float
    in_stock: bool
    seller_id: str
    source_event_id: str
    model: str
    kind: Literal["listing", "reference"] = "listing"
    image_hash: str | None = Field(None, description="64-bit perceptual hash of the image, hex")
    vector_b64: str = Field(repr=False, description="image embedding, float32 little-endian, base64")
    text_vector_b64: str | None = Field(None, repr=False, description="title embedding, same encoding")
    thumbnail_b64: str | None = Field(None, repr=False, description="small PNG for result pages")
    revision: int | None = Field(None, description="Offset of the listing event on its topic (catalog, or "
                                 "catalog.references): a store keeps each product's highest revision")

    @classmethod
    def of(cls, listing: "ProductListed | ReferenceImage", vector: np.ndarray, model: str,
           text_vector: np.ndarray | None, thumbnail_png: bytes, image_hash: int, revision: int) -> "IndexedProduct":
        if isinstance(listing, ReferenceImage):  # stored beside listings, never shown to shoppers
            fields = {"product_id": listing.reference_id, "title": f"{listing.brand} {listing.title}",
                      "category": listing.category, "price": 0.0, "in_stock": False,
                      "seller_id": listing.owner_seller_id, "kind": "reference"}
        else:
            fields = listing.model_dump(include={"product_id", "title", "category", "price", "in_stock",
                                                 "seller_id"})
        return cls(**fields, source_event_id=listing.event_id, model=model, image_hash=f"{image_hash:016x}",
                   revision=revision,
                   vector_b64=encode_vector(vector),
                   text_vector_b64=None if text_vector is None else encode_vector(text_vector),
                   thumbnail_b64=base64.b64encode(thumbnail_png).decode())

    def vector(self) -> np.ndarray:
        return decode_vector(self.vector_b64)

    def text_vector(self) -> np.ndarray | None:
        return None if self.text_vector_b64 is None else decode_vector(self.text_vector_b64)


def encode_vector(vector: np.ndarray) -> str:
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()


def decode_vector(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<f4").astype(np.float32)


class ScoredItem(BaseModel):
    product_id: str
    score: float
    title: str = ""
    category: str | None = None
    price: float | None = None


class SimilarItems(BaseModel):
    product_id: str
    source_event_id: str
    model: str
    items: list[ScoredItem]


class Recommendations(BaseModel):
    user_id: str
    source_event_id: str | None
    strategy: Literal["interests", "popular", "interests+popular"]
    interests: int
    items: list[ScoredItem]


class SearchResults(BaseModel):
    request_id: str
    source_event_id: str = Field(description="The upload's event id, like request_id; the same field on every output")
    user_id: str | None
    items: list[ScoredItem]
    predicted_category: str | None = Field(None, description="What the photo shows, by a vote of the results")


class ProductActivity(BaseModel):
    """A shopper action re-keyed by product, with the product's category looked up."""

    product_id: str
    category: str | None
    user_id: str
    action: Action
    ts: float
    source_event_id: str


class PopularityScore(BaseModel):
    product_id: str
    category: str | None
    score: float = Field(description="Action-weighted count in the window")
    window_end: float
    source_event_id: str = Field(description="The last action counted in this score")


class CategoryPrediction(BaseModel):
    product_id: str
    source_event_id: str
    declared: str | None
    predicted: str | None
    confidence: float
    mismatch: bool


class CatalogFlag(BaseModel):
    """A listing that needs a person's look, with the evidence."""

    product_id: str
    seller_id: str
    source_event_id: str
    kind: Literal["category_mismatch", "counterfeit_suspect", "near_duplicate"]
    matched_id: str | None = None
    matched_seller_id: str | None = None
    similarity: float | None = None
    hash_distance: int | None = Field(None, description="pHash Hamming distance (of 64 bits) to the match")
    declared_category: str | None = None
    predicted_category: str | None = None
    confidence: float | None = None


class InventoryUpdate(BaseModel):
    store_id: str
    shelf_id: str
    product_id: str = Field(description="A catalog product id, or 'unknown' for unrecognized items")
    count: int
    change: int
    ts: float
    source_event_id: str


class CategoryActivity(BaseModel):
    """One shopper action or photo upload, re-keyed by category for the analytics windows."""

    category: str
    action: Literal["view", "click", "add_to_cart", "purchase", "upload"]
    ts: float
    source_event_id: str


class CategoryWindowStats(BaseModel):
    category: str
    window_start: float
    window_end: float
    counts: dict[str, int]
    view_to_purchase: float | None = Field(description="Purchases per view in the window; None without views")


class DeadLetter(BaseModel):
    topic: str
    partition: int
    offset: int
    key: str | None
    source_event_id: str = Field(description="topic:partition:offset of the rejected message (its own id may be "
                                 "unreadable)")
    reason: str
    error: str
    payload_preview: str = Field(description="First bytes of the payload, decoded with replacement characters")
    ts: float = Field(default_factory=time.time)
