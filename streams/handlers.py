"""What each agent does with a batch of events, as plain functions (no Kafka here).

Agents parse messages, hand the events to these functions in a worker thread, and send
what comes back. Tests call the same functions directly, like bytewax's in-memory sources
and sinks: the logic is exercised without a broker and the agents stay thin.
"""
from dataclasses import dataclass, field
from functools import cached_property
from typing import TypeVar

import numpy as np
from pydantic import BaseModel, ValidationError

from models.embedders import ImageEmbedder, load_embedder, resolve_spec
from models.images import BadImage, load_image_ref
from recommender.interests import UserProfile
from recommender.recommend import RecommendationPolicy, recommend, user_interests
from recommender.settings import Settings
from recommender.store import Hit, Product, ProductFilter, ProductStore
from streams.events import (ImageRef, ImageUpload, IndexedProduct, Recommendations, ScoredItem, SearchResults,
                            ShopperAction, SimilarItems)


E = TypeVar("E", bound=BaseModel)
I = TypeVar("I", bound=ImageRef)


class Rejected(Exception):
    """An event the service cannot use; the message is the reason on the dead-letter topic."""


def parse_event(model: type[E], value: bytes | None, coordinates: str, max_bytes: int) -> E:
    """Validate one message; events without an id get their Kafka coordinates as id."""
    if value is None:
        raise Rejected("message has no value")
    if len(value) > max_bytes:
        raise Rejected(f"message is {len(value)} bytes, limit is {max_bytes}")
    try:
        event = model.model_validate_json(value)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'message'}: {e['msg']}"
                             for e in error.errors(include_url=False, include_input=False))
        raise Rejected(f"invalid {model.__name__}: {problems}") from None
    if "event_id" not in model.model_fields or event.event_id:
        return event
    return event.model_copy(update={"event_id": coordinates})


def scored(hits: list[Hit]) -> list[ScoredItem]:
    return [ScoredItem(product_id=hit.product.product_id, score=round(hit.score, 6), title=hit.product.title,
                       category=hit.product.category, price=hit.product.price) for hit in hits]


@dataclass
class Services:
    """The worker's heavy resources, created on first use in the thread that uses them."""

    settings: Settings
    policy: RecommendationPolicy = field(init=False)

    def __post_init__(self):
        s = self.settings
        self.policy = RecommendationPolicy(k=s.recommend_k, half_life_s=s.interest_half_life_s,
                                           max_interests=s.max_interests)

    @cached_property
    def embedder(self) -> ImageEmbedder:
        return load_embedder(self.settings.embedder, self.settings.torch_threads, self.settings.forward_batch)

    @cached_property
    def store(self) -> ProductStore:
        spec = resolve_spec(self.settings.embedder)
        return ProductStore.from_settings(self.settings, spec.name, spec.dim)


def embed_images(services: Services, events: list[I]) -> tuple[list[I], np.ndarray, list[tuple[I, str]]]:
    """Decode and embed the events' images: (usable events, their vectors, rejected with reason)."""
    s = services.settings
    usable, images, rejected = [], [], []
    for event in events:
        try:
            images.append(load_image_ref(event.image_b64, event.image_path, root=s.image_root,
                                         max_bytes=s.max_image_bytes, max_pixels=s.max_image_pixels))
            usable.append(event)
        except BadImage as error:
            rejected.append((event, str(error)))
    return usable, services.embedder.embed(images), rejected


def materialize(services: Services, indexed: list[IndexedProduct]) -> tuple[list[IndexedProduct], np.ndarray]:
    """Upsert the products embedded by the current model; vectors of other models are skipped."""
    store = services.store
    current = [item for item in indexed if item.model == store.model]
    vectors = np.stack([item.vector() for item in current]) if current else np.zeros((0, 0), np.float32)
    store.upsert_products([Product(product_id=i.product_id, title=i.title, price=i.price, category=i.category,
                                   in_stock=i.in_stock, seller_id=i.seller_id) for i in current], vectors)
    return current, vectors


def index_products(services: Services, indexed: list[IndexedProduct]) -> list[SimilarItems]:
    """Store the products, then emit similar items for each and for neighbours it now appears beside."""
    listings, vectors = materialize(services, indexed)
    if not listings:
        return []
    store, k = services.store, services.settings.similar_k
    outputs = {}
    hit_lists = store.search(vectors, limit=k + 1, with_vectors=True)
    for listing, hits in zip(listings, hit_lists):
        own = [hit for hit in hits if hit.product.product_id != listing.product_id][:k]
        outputs[listing.product_id] = SimilarItems(product_id=listing.product_id,
                                                   source_event_id=listing.source_event_id,
                                                   model=store.model, items=scored(own))
    outputs.update(_refresh_neighbours(services, listings, hit_lists, exclude=set(outputs)))
    return list(outputs.values())


def _refresh_neighbours(services: Services, listings: list[IndexedProduct], hit_lists: list[list[Hit]],
                        exclude: set[str]) -> dict[str, SimilarItems]:
    """New similar-item lists for existing products whose top k now include a new listing."""
    store, k, width = services.store, services.settings.similar_k, services.settings.refresh_neighbours
    new_ids = {listing.product_id: listing.source_event_id for listing in listings}
    neighbours: dict[str, Hit] = {}
    for hits in hit_lists:
        for hit in hits[:width + 1]:
            if hit.product.product_id not in exclude and hit.vector is not None:
                neighbours.setdefault(hit.product.product_id, hit)
    if not neighbours:
        return {}
    refreshed = {}
    for neighbour, hits in zip(neighbours.values(),
                               store.search(np.stack([hit.vector for hit in neighbours.values()]), limit=k + 1)):
        own = [hit for hit in hits if hit.product.product_id != neighbour.product.product_id][:k]
        causes = [new_ids[hit.product.product_id] for hit in own if hit.product.product_id in new_ids]
        if causes:
            refreshed[neighbour.product.product_id] = SimilarItems(
                product_id=neighbour.product.product_id, source_event_id=causes[0], model=store.model,
                items=scored(own))
    return refreshed


def record_action(services: Services, profile_json: dict | None, action: ShopperAction
                  ) -> tuple[dict, Recommendations]:
    """Add the action to the user's profile and recommend from the updated interests."""
    store = services.store
    if action.product_id not in store.get_products([action.product_id]):
        raise Rejected(f"unknown product_id {action.product_id!r}")
    profile = UserProfile.from_json(profile_json).record(action.product_id, action.action, action.ts,
                                                         services.settings.profile_max_actions)
    # Decay is measured from the newest event, not the wall clock, so a replay gives the same result.
    now = max(record.ts for record in profile.actions)
    interests = user_interests(store, profile, now, services.policy)
    hits = recommend(store, profile, interests, services.policy)
    store.save_user(action.user_id, np.stack([interest.vector for interest in interests]),
                    [hit.product.product_id for hit in hits], now)
    return profile.to_json(), Recommendations(user_id=action.user_id, source_event_id=action.event_id,
                                              strategy="interests", interests=len(interests), items=scored(hits))


def search_uploads(services: Services, uploads: list[ImageUpload], vectors: np.ndarray) -> list[SearchResults]:
    results = []
    for upload, vector in zip(uploads, vectors):
        product_filter = ProductFilter(category=upload.category, max_price=upload.max_price)
        hits = services.store.search(vector[None], limit=upload.k, product_filter=product_filter)[0]
        results.append(SearchResults(request_id=upload.event_id, user_id=upload.user_id, items=scored(hits)))
    return results

