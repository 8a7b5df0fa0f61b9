"""What each agent does with a batch of events, as plain functions (no Kafka here).

Agents parse messages, hand the events to these functions in a worker thread, and send
what comes back. Tests call the same functions directly, like bytewax's in-memory sources
and sinks: the logic is exercised without a broker and the agents stay thin.
"""
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import NamedTuple, TypeVar

import numpy as np
from PIL import Image
from pydantic import BaseModel, ValidationError

from models.embedders import EmbedderSpec, ImageEmbedder, resolve_spec
from models.images import BadImage, decode_image, load_image_ref, thumbnail_png
from models.text import TextEmbedder
from recommender.categorize import check_declared_category, vote_category
from recommender.duplicates import CopyThresholds, assess_listing, perceptual_hash
from recommender.interests import Interest, UserProfile
from recommender.shelf import UNKNOWN, BadShelfFrame, count_items, segment_items
from recommender.popularity import PopularityBoard
from recommender.recommend import RecommendationPolicy, recommend, user_interests
from recommender.settings import Settings
from recommender.store import TEXT, Hit, Product, ProductFilter, ProductStore
from streams.events import (CatalogFlag, CategoryPrediction, ImageRef, ImageUpload, IndexedProduct, ProductActivity,
                            ProductListed, Recommendations, ReferenceImage, ScoredItem, SearchResults, ShelfFrame,
                            ShopperAction, SimilarItems)


E = TypeVar("E", bound=BaseModel)
I = TypeVar("I", bound=ImageRef)
L = TypeVar("L", ProductListed, ReferenceImage)


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


class PhotoVector(NamedTuple):
    """An image embedding and the model that made it."""

    model: str
    vector: np.ndarray


@dataclass
class Services:
    """The worker's heavy resources, created on first use in the thread that uses them.

    ``spec`` names the image model in service. During a model switch a second model is
    ``pending``: its store fills in the background, then ``switch_model`` swaps the two.
    Embedded vectors always say which model made them, and searches go to that model's
    collection, so a query that straddles the switch still compares like with like.
    """

    settings: Settings
    policy: RecommendationPolicy = field(init=False)
    spec: EmbedderSpec = field(init=False)
    pending: EmbedderSpec | None = field(init=False, default=None)

    def __post_init__(self):
        s = self.settings
        self.policy = RecommendationPolicy(k=s.recommend_k, half_life_s=s.interest_half_life_s,
                                           max_interests=s.max_interests, diversity=s.recommend_diversity,
                                           share_half_life_s=s.interest_share_half_life_s,
                                           kernel_width=s.interest_kernel_width)
        self.spec = resolve_spec(s.embedder)
        self._embedders: dict[str, ImageEmbedder] = {}
        self._stores: dict[str, ProductStore] = {}

    @property
    def embedder(self) -> ImageEmbedder:
        return self.embedder_for(self.spec)

    def embedder_for(self, spec: EmbedderSpec) -> ImageEmbedder:
        if spec.name not in self._embedders:
            s = self.settings
            self._embedders[spec.name] = ImageEmbedder(spec, s.torch_threads, s.forward_batch, s.embed_runtime)
        return self._embedders[spec.name]

    @property
    def store(self) -> ProductStore:
        return self.store_for(self.spec)

    def store_for(self, spec: EmbedderSpec) -> ProductStore:
        if spec.name not in self._stores:
            if self._stores:  # later models share the first store's client (one embedded store per process)
                first = next(iter(self._stores.values()))
                self._stores[spec.name] = ProductStore(first.client, spec.name, spec.dim,
                                                       self.settings.collection_prefix, first.sharding)
            else:
                self._stores[spec.name] = ProductStore.from_settings(self.settings, spec.name, spec.dim)
        return self._stores[spec.name]

    def store_to_fill(self, model: str) -> ProductStore | None:
        """Where vectors made by ``model`` are stored: the model in service or the pending one."""
        for spec in (self.spec, self.pending):
            if spec is not None and spec.name == model:
                return self.store_for(spec)
        return None

    def store_to_search(self, photo: "PhotoVector") -> ProductStore:
        """The collection a photo's vector belongs in, even if its model went out of service
        while the query was under way (old collections stay until an operator drops them)."""
        return self._stores.get(photo.model) or self.store

    def switch_model(self) -> None:
        """Make the pending model the one in service and point the read alias at its collection."""
        new = self.store_for(self.pending)
        new.switch_alias(new.collection)
        self.spec, self.pending = self.pending, None

    @cached_property
    def copy_thresholds(self) -> CopyThresholds:
        s = self.settings
        return CopyThresholds(min_similarity=s.copy_min_similarity, min_similarity_with_hash=s.copy_min_similarity_with_hash,
                              max_hash_distance=s.copy_max_hash_distance)

    @cached_property
    def popularity(self) -> PopularityBoard:
        return PopularityBoard()

    @cached_property
    def text_embedder(self) -> TextEmbedder | None:
        if self.settings.text_embedder == "none":
            return None
        return TextEmbedder(self.settings.text_embedder, self.settings.torch_threads)


def decode_images(services: Services, events: list[I]) -> tuple[list[I], list[Image.Image], list[tuple[I, str]]]:
    """The events whose image decodes, their images, and the rest with the reason."""
    s = services.settings
    usable, images, rejected = [], [], []
    for event in events:
        try:
            images.append(load_image_ref(event.image_b64, event.image_path, root=s.image_root,
                                         max_bytes=s.max_image_bytes, max_pixels=s.max_image_pixels))
            usable.append(event)
        except BadImage as error:
            rejected.append((event, str(error)))
    return usable, images, rejected


def embed_uploads(services: Services, uploads: list[ImageUpload]
                  ) -> tuple[list[tuple[ImageUpload, PhotoVector]], list[tuple[ImageUpload, str]]]:
    """Uploads paired with their photo's embedding; rejected uploads with the reason."""
    usable, images, rejected = decode_images(services, uploads)
    embedder = services.embedder
    return [(upload, PhotoVector(embedder.name, vector)) for upload, vector in zip(usable, embedder.embed(images))], \
        rejected


def embed_listings(services: Services, listings: list[L], revisions: Sequence[int],
                   spec: EmbedderSpec | None = None) -> tuple[list[IndexedProduct], list[tuple[L, str]]]:
    """Listings (or brand reference images) with image and title embeddings, a perceptual
    hash and a thumbnail; rejected ones with the reason.

    ``revisions`` are the listings' offsets on their topic (see ``Product.revision``).
    ``spec`` picks a model other than the one in service (re-indexing for a model switch).
    """
    revision_of = {id(listing): revision for listing, revision in zip(listings, revisions, strict=True)}
    usable, images, rejected = decode_images(services, listings)
    embedder = services.embedder_for(spec or services.spec)
    vectors = embedder.embed(images)
    text = services.text_embedder
    text_vectors = text.embed([listing.title for listing in usable]) if text else [None] * len(usable)
    indexed = [IndexedProduct.of(listing, vector, embedder.name, text_vector, thumbnail_png(image),
                                 perceptual_hash(image), revision_of[id(listing)])
               for listing, image, vector, text_vector in zip(usable, images, vectors, text_vectors)]
    return indexed, rejected


def materialize(services: Services, indexed: list[IndexedProduct]) -> tuple[list[IndexedProduct], np.ndarray]:
    """Upsert products into the store of the model that embedded them (in service or pending;
    vectors of other models are skipped). Returns those written to the store of the model in
    service (not those older than the stored revision), with their vectors."""
    by_model: dict[str, list[IndexedProduct]] = {}
    for item in indexed:
        by_model.setdefault(item.model, []).append(item)
    current, current_vectors = [], np.zeros((0, 0), np.float32)
    for model, items in by_model.items():
        store = services.store_to_fill(model)
        if store is None:
            continue
        vectors = np.stack([item.vector() for item in items])
        written = store.upsert_products(
            [Product(product_id=i.product_id, title=i.title, price=i.price, category=i.category, in_stock=i.in_stock,
                     seller_id=i.seller_id, thumbnail_b64=i.thumbnail_b64, kind=i.kind, image_hash=i.image_hash,
                     revision=i.revision) for i in items],
            vectors, [item.text_vector() for item in items])
        if store is services.store:
            current, current_vectors = [items[row] for row in written], vectors[written]
    return current, current_vectors


@dataclass
class IndexResult:
    similar: list[SimilarItems] = field(default_factory=list)
    categories: list[CategoryPrediction] = field(default_factory=list)
    flags: list[CatalogFlag] = field(default_factory=list)


def index_products(services: Services, indexed: list[IndexedProduct]) -> IndexResult:
    """Store the products; for new listings, similar items (theirs and their new neighbours'),
    a predicted category, and flags for category mismatches and copied images."""
    stored, vectors = materialize(services, indexed)
    is_listing = [item.kind == "listing" for item in stored]
    listings = [item for item, keep in zip(stored, is_listing) if keep]
    if not listings:
        return IndexResult()
    vectors = vectors[np.array(is_listing)]
    similar, hit_lists = _similar_items(services, [listing.product_id for listing in listings], vectors,
                                        [listing.source_event_id for listing in listings])
    similar.update(_refresh_neighbours(services, listings, hit_lists, exclude=set(similar)))
    result = IndexResult(similar=list(similar.values()))
    references = services.store.search(vectors, limit=3, product_filter=ProductFilter(kind="reference",
                                                                                      in_stock_only=False))
    for listing, hits, reference_hits in zip(listings, hit_lists, references):
        check = check_declared_category(listing.category, vote_category(hits, listing.product_id),
                                        services.settings.category_mismatch_confidence)
        result.categories.append(CategoryPrediction(
            product_id=listing.product_id, source_event_id=listing.source_event_id, declared=check.declared,
            predicted=check.predicted, confidence=round(check.confidence, 4), mismatch=check.mismatch))
        if check.mismatch:
            result.flags.append(CatalogFlag(
                product_id=listing.product_id, seller_id=listing.seller_id, source_event_id=listing.source_event_id,
                kind="category_mismatch", declared_category=check.declared, predicted_category=check.predicted,
                confidence=round(check.confidence, 4)))
        if copy := _copy_flag(services, listing, hits, reference_hits):
            result.flags.append(copy)
    return result


def _copy_flag(services: Services, listing: IndexedProduct, listing_hits: list[Hit],
               reference_hits: list[Hit]) -> CatalogFlag | None:
    """A flag when the listing's image copies a brand's reference or another seller's listing."""
    if listing.image_hash is None:
        return None
    hashes = {hit.product.product_id: int(hit.product.image_hash, 16)
              for hit in (*listing_hits, *reference_hits) if hit.product.image_hash}
    product = Product(listing.product_id, listing.title, listing.price, listing.category, listing.in_stock,
                      listing.seller_id)
    verdict = assess_listing(product, int(listing.image_hash, 16), reference_hits=reference_hits,
                             reference_hashes=hashes, listing_hits=listing_hits, listing_hashes=hashes,
                             thresholds=services.copy_thresholds)
    if verdict.verdict not in ("counterfeit_suspect", "near_duplicate"):
        return None
    return CatalogFlag(product_id=listing.product_id, seller_id=listing.seller_id,
                       source_event_id=listing.source_event_id, kind=verdict.verdict,
                       matched_id=verdict.matched_id, matched_seller_id=verdict.matched_seller_id,
                       similarity=round(verdict.similarity, 4), hash_distance=verdict.hash_distance)


def similar_items_page(services: Services, limit: int, offset: str | None, source_event_id: str
                       ) -> tuple[list[SimilarItems], str | None]:
    """Similar items for one page of the catalog (to re-emit them all, e.g. after a model switch)."""
    products, next_offset = services.store.browse(limit, offset)
    found = services.store.get_products([product.product_id for product in products], with_vectors=True)
    if not found:
        return [], next_offset
    outputs, _ = _similar_items(services, list(found), np.stack([vector for _, vector in found.values()]),
                                [source_event_id] * len(found))
    return list(outputs.values()), next_offset


def _similar_items(services: Services, product_ids: list[str], vectors: np.ndarray, source_event_ids: list[str]
                   ) -> tuple[dict[str, SimilarItems], list[list[Hit]]]:
    """Each product's k nearest others, and the raw hit lists (with vectors) for further use."""
    store, k = services.store, services.settings.similar_k
    hit_lists = store.search(vectors, limit=k + 1, with_vectors=True)
    outputs = {}
    for product_id, source_event_id, hits in zip(product_ids, source_event_ids, hit_lists):
        own = [hit for hit in hits if hit.product.product_id != product_id][:k]
        outputs[product_id] = SimilarItems(product_id=product_id, source_event_id=source_event_id,
                                           model=store.model, items=scored(own))
    return outputs, hit_lists


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


@dataclass
class RecordedActions:
    """What a batch of shopper actions produced: the users' new profiles (table values), and
    per action, in order, its recommendations and activity or the reason it was rejected."""

    profiles: dict[str, dict]
    outcomes: list[tuple[Recommendations, ProductActivity] | Rejected]


def record_actions(services: Services, profiles: dict[str, dict | None], actions: list[ShopperAction]
                   ) -> RecordedActions:
    """Add each action to its user's profile and recommend from the updated interests.

    Actions are applied in order, so each recommendation answers the profile as of its own
    event, and a replay gives the same lists whatever the batch boundaries were. Only the
    store reads and the users' points are shared by the batch: one lookup of the products,
    one upsert of each user's latest interests and list.
    """
    store = services.store
    known = store.get_products(action.product_id for action in actions)
    current = {action.user_id: UserProfile.from_json(profiles.get(action.user_id)) for action in actions}
    latest: dict[str, tuple[list[Interest], Recommendations, float]] = {}
    outcomes: list[tuple[Recommendations, ProductActivity] | Rejected] = []
    for action in actions:
        if action.product_id not in known:
            outcomes.append(Rejected(f"unknown product_id {action.product_id!r}"))
            continue
        profile = current[action.user_id] = current[action.user_id].record(
            action.product_id, action.action, action.ts, services.settings.profile_max_actions)
        # Decay is measured from the newest event, not the wall clock, so a replay gives the same result.
        now = max(record.ts for record in profile.actions)
        interests, recommendations = recommend_for_user(services, action.user_id, profile, now, action.event_id)
        latest[action.user_id] = (interests, recommendations, now)
        outcomes.append((recommendations, ProductActivity(
            product_id=action.product_id, category=known[action.product_id][0].category, user_id=action.user_id,
            action=action.action, ts=action.ts, source_event_id=action.event_id)))
    store.save_users([(user_id, np.stack([interest.vector for interest in interests]),
                       [item.product_id for item in recommendations.items], now)
                      for user_id, (interests, recommendations, now) in latest.items()])
    return RecordedActions({user_id: current[user_id].to_json() for user_id in latest}, outcomes)


def recommend_for_user(services: Services, user_id: str, profile: UserProfile, now: float,
                       source_event_id: str | None = None, k: int | None = None,
                       product_filter: ProductFilter = ProductFilter()) -> tuple[list[Interest], Recommendations]:
    """Interest-based picks, topped up with popular items when they run short (or the user is new)."""
    policy = services.policy if k is None else replace(services.policy, k=k)
    interests = user_interests(services.store, profile, now, policy)
    hits = recommend(services.store, profile, interests, policy, product_filter)
    if len(hits) < policy.k:
        excluded = profile.purchased | profile.seen() | {hit.product.product_id for hit in hits}
        popular = popular_hits(services, policy.k - len(hits), now, replace(
            product_filter, exclude_ids=product_filter.exclude_ids | excluded))
        strategy = "interests+popular" if hits and popular else ("interests" if hits else "popular")
        hits += popular
    else:
        strategy = "interests"
    return interests, Recommendations(user_id=user_id, source_event_id=source_event_id, strategy=strategy,
                                      interests=len(interests), items=scored(hits))


def popular_hits(services: Services, k: int, now: float, product_filter: ProductFilter) -> list[Hit]:
    """The most popular products in the current window that pass the filter, best first."""
    candidates = services.popularity.top(k * 3 + len(product_filter.exclude_ids), now,
                                         category=product_filter.category, exclude=product_filter.exclude_ids)
    products = services.store.get_products([item.product_id for item in candidates])
    hits = [Hit(products[item.product_id][0], item.score) for item in candidates
            if item.product_id in products and product_filter.accepts(products[item.product_id][0])]
    return hits[:k]


def search_uploads(services: Services, embedded: list[tuple[ImageUpload, PhotoVector]]) -> list[SearchResults]:
    results = []
    for upload, photo in embedded:
        product_filter = ProductFilter(category=upload.category, max_price=upload.max_price)
        hits = search_products(services, upload.k, product_filter, photo, None)
        results.append(SearchResults(request_id=upload.event_id, source_event_id=upload.event_id,
                                     user_id=upload.user_id, items=scored(hits),
                                     predicted_category=vote_category(hits, product_id="").category))
    return results



def health(services: Services, catalog_loaded: bool, store_outage: str | None = None) -> dict:
    """"ok" once the catalog is loaded and the store answers; what is wrong otherwise.

    ``store_outage`` is the reason the agents are retrying store calls, if they are.
    """
    if not catalog_loaded:
        return {"status": "starting", "catalog_loaded": False}
    if store_outage is not None:
        return {"status": "degraded", "catalog_loaded": True, "store": store_outage}
    try:
        products = services.store.count()
    except Exception as error:  # any store failure makes the worker unhealthy, whatever its type
        return {"status": "degraded", "catalog_loaded": True, "store": f"unavailable: {type(error).__name__}"}
    return {"status": "ok", "catalog_loaded": True, "store": "ok", "products": products,
            "popular_items": len(services.popularity)}


class UnknownId(LookupError):
    """A query named a product that is not in the catalog (HTTP 404)."""


def similar_to_product(services: Services, product_id: str, k: int, product_filter: ProductFilter) -> list[Hit]:
    found = services.store.get_products([product_id], with_vectors=True)
    if product_id not in found:
        raise UnknownId(f"unknown product_id {product_id!r}")
    own = replace(product_filter, exclude_ids=product_filter.exclude_ids | {product_id})
    return services.store.search(found[product_id][1][None], k, own)[0]


def embed_photo(services: Services, data: bytes) -> PhotoVector:
    """One uploaded photo's embedding; raises BadImage with the reason."""
    s = services.settings
    image = decode_image(data, max_bytes=s.max_image_bytes, max_pixels=s.max_image_pixels)
    embedder = services.embedder
    return PhotoVector(embedder.name, embedder.embed([image])[0])


def embed_query_text(services: Services, text: str) -> np.ndarray:
    if services.text_embedder is None:
        raise Rejected("keyword search is off (VR_TEXT_EMBEDDER=none)")
    return services.text_embedder.embed([text])[0]


def search_products(services: Services, k: int, product_filter: ProductFilter, photo: PhotoVector | None,
                    text_vector: np.ndarray | None) -> list[Hit]:
    """By photo, by keywords, or both fused."""
    if photo is not None:
        store = services.store_to_search(photo)
        if text_vector is not None:
            return store.search_fused(photo.vector, text_vector, k, product_filter)
        return store.search(photo.vector[None], k, product_filter)[0]
    return services.store.search(text_vector[None], k, product_filter, using=TEXT)[0]


def embed_shelf_frames(services: Services, frames: list[ShelfFrame]
                       ) -> tuple[list[tuple[ShelfFrame, list[PhotoVector]]], list[tuple[ShelfFrame, str]]]:
    """Each frame's item crops, embedded; frames that cannot be read or hold no items are rejected."""
    usable, images, rejected = decode_images(services, frames)
    embedded = []
    for frame, image in zip(usable, images):
        try:
            crops = [item.crop for item in segment_items(image)]
        except BadShelfFrame as error:
            rejected.append((frame, str(error)))
            continue
        embedder = services.embedder
        embedded.append((frame, [PhotoVector(embedder.name, vector) for vector in embedder.embed(crops)]))
    return embedded, rejected


def count_shelf(services: Services, crops: list[PhotoVector]) -> dict[str, int]:
    """Items per catalog product on the shelf; crops that match nothing well enough count as unknown."""
    if not crops:
        return {}
    store = services.store_to_search(crops[0])
    best = store.search(np.stack([crop.vector for crop in crops]), limit=1,
                        product_filter=ProductFilter(in_stock_only=False))
    recognitions = [(hits[0].product.product_id, hits[0].score) if hits else (UNKNOWN, 0.0) for hits in best]
    return count_items(recognitions, services.settings.shelf_match_threshold)
