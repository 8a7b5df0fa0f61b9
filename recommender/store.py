"""The vector store: products (image and title vectors) and user profiles in Qdrant.

One class serves every deployment: qdrant-client's embedded mode (``:memory:`` or a folder)
and a Qdrant server or cluster by URL, so the same tests cover all of them. Point ids are
uuid5 of the business id, which makes every write idempotent: replaying a topic rewrites the
same points instead of adding new ones.

Each model has its own collection (``products__<model>``): a re-index with a new model
runs beside the old one. The alias ``products`` names the collection in service, for
readers outside this service; our own queries go to the collection of the model that made
the query vector, so a query never compares vectors of two different models.
"""
import uuid
import warnings
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from qdrant_client import QdrantClient
from qdrant_client import models as qm
from qdrant_client.http.exceptions import UnexpectedResponse

from recommender.edge_store import EdgeClient
from recommender.settings import Settings

IMAGE = "image"
TEXT = "text"
INTERESTS = "interests"
TEXT_DIM = 384  # all-MiniLM-L6-v2
_ID_NAMESPACE = uuid.UUID("6f1c0a53-3f1e-4c1e-9a57-6d0b8f2a4e11")


def point_id(business_id: str) -> str:
    return str(uuid.uuid5(_ID_NAMESPACE, business_id))


@dataclass(frozen=True)
class Product:
    product_id: str
    title: str
    price: float
    category: str | None = None
    in_stock: bool = True
    seller_id: str = "shop"
    thumbnail_b64: str | None = field(default=None, repr=False)
    kind: str = "listing"  # or "reference": a brand's genuine photo, kept for copy checks only
    image_hash: str | None = None  # 64-bit perceptual hash, hex
    # The offset of the listing event this version comes from, on its input topic. Workers
    # replay history (catalog.vectors from the start when a store is rebuilt, the catalog when
    # a new consumer group re-embeds it) while later listings are already stored, so an upsert
    # never replaces a later revision with an earlier one. None always applies.
    revision: int | None = None


@dataclass(frozen=True)
class Hit:
    product: Product
    score: float
    vector: np.ndarray | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class ProductFilter:
    category: str | None = None
    max_price: float | None = None
    in_stock_only: bool = True
    exclude_ids: frozenset[str] = field(default_factory=frozenset)
    kind: str | None = "listing"  # None = listings and references alike

    def accepts(self, product: "Product") -> bool:
        """The same test as ``to_qdrant``, for products already in hand."""
        return ((self.kind is None or product.kind == self.kind)
                and (not self.in_stock_only or product.in_stock)
                and (self.category is None or product.category == self.category)
                and (self.max_price is None or product.price <= self.max_price)
                and product.product_id not in self.exclude_ids)

    def to_qdrant(self) -> qm.Filter | None:
        must: list[qm.Condition] = []
        if self.kind is not None:
            must.append(qm.FieldCondition(key="kind", match=qm.MatchValue(value=self.kind)))
        if self.in_stock_only:
            must.append(qm.FieldCondition(key="in_stock", match=qm.MatchValue(value=True)))
        if self.category is not None:
            must.append(qm.FieldCondition(key="category", match=qm.MatchValue(value=self.category)))
        if self.max_price is not None:
            must.append(qm.FieldCondition(key="price", range=qm.Range(lte=self.max_price)))
        must_not: list[qm.Condition] = []
        if self.exclude_ids:
            must_not.append(qm.HasIdCondition(has_id=[point_id(pid) for pid in sorted(self.exclude_ids)]))
        return qm.Filter(must=must or None, must_not=must_not or None) if (must or must_not) else None


def _older(revision: int | None, stored_revision: int | None) -> bool:
    return revision is not None and stored_revision is not None and revision < stored_revision


def _product(payload: dict) -> Product:
    return Product(**{key: payload[key] for key in Product.__dataclass_fields__ if key in payload})


class VectorCache:
    """Image vectors by product id, the most recently used ``capacity`` of them.

    Recommendations need the vectors of their candidates (for diversity) and of the user's
    items (for interests). Asking the store to return them cost two thirds of a search's CPU
    (1,280 floats per hit turned into Python lists and back), so the store keeps a bounded
    copy instead. It is only coherent where this process makes every write, as with an
    embedded store; with a shared server the capacity is 0 and vectors come from the server.
    """

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._vectors: OrderedDict[str, np.ndarray] = OrderedDict()

    def get(self, product_ids: Iterable[str]) -> dict[str, np.ndarray]:
        found = {}
        for product_id in product_ids:
            vector = self._vectors.get(product_id)
            if vector is not None:
                self._vectors.move_to_end(product_id)
                found[product_id] = vector
        return found

    def put(self, product_id: str, vector: np.ndarray) -> None:
        if self.capacity <= 0:
            return
        self._vectors[product_id] = vector
        self._vectors.move_to_end(product_id)
        if len(self._vectors) > self.capacity:
            self._vectors.popitem(last=False)


class ProductStore:
    def __init__(self, client: QdrantClient, model: str, image_dim: int, prefix: str = "",
                 sharding: dict[str, int | None] | None = None, vector_cache_items: int = 0):
        self.client = client
        self.model = model
        self.vector_cache = VectorCache(vector_cache_items)
        self.sharding = sharding or {}  # shard_number / replication_factor of the collections created here
        self.alias = f"{prefix}products"
        self.collection = f"{prefix}products__{model}"
        self.users = f"{prefix}users__{model}"
        self._ensure_collections(image_dim)

    @classmethod
    def from_settings(cls, settings: Settings, model: str, image_dim: int) -> "ProductStore":
        sharding, vector_cache_items = None, settings.vector_cache_items
        if settings.qdrant_url:
            client = QdrantClient(url=settings.qdrant_url, api_key=settings.qdrant_api_key)
            # Only a server shards and replicates; unset values keep the server's defaults.
            sharding = {"shard_number": settings.qdrant_shard_number,
                        "replication_factor": settings.qdrant_replication_factor}
            vector_cache_items = 0  # other workers write to the server too: a copy here could go stale
        elif settings.qdrant_path == ":memory:":
            client = QdrantClient(location=":memory:")
        else:
            # One folder per worker: an embedded store has a single opener, and workers of
            # one app may share a host.
            folder = Path(settings.qdrant_path) / f"{settings.app_id}-{settings.web_port}"
            client = EdgeClient(folder) if settings.embedded_store == "edge" else QdrantClient(path=str(folder))
        return cls(client, model, image_dim, settings.collection_prefix, sharding, vector_cache_items)

    def optimize(self) -> None:
        """Build search indexes after a bulk load (Qdrant Edge has no background optimizer)."""
        if isinstance(self.client, EdgeClient):
            self.client.optimize()

    def _create_collection(self, name: str, vectors_config: dict[str, qm.VectorParams]) -> bool:
        """Create ``name`` unless it exists; True if this call created it."""
        if self.client.collection_exists(name):
            return False
        try:
            self.client.create_collection(name, vectors_config=vectors_config, **self.sharding)
        except UnexpectedResponse:
            # Workers started together on one server race to create it; losing that race is fine.
            if not self.client.collection_exists(name):
                raise
            return False
        return True

    def _ensure_collections(self, image_dim: int) -> None:
        if self._create_collection(self.collection, {
                IMAGE: qm.VectorParams(size=image_dim, distance=qm.Distance.COSINE),
                TEXT: qm.VectorParams(size=TEXT_DIM, distance=qm.Distance.COSINE)}):
            with warnings.catch_warnings():
                # Embedded mode ignores payload indexes (and says so); a server needs them for fast filters.
                warnings.simplefilter("ignore", UserWarning)
                for key, schema in (("category", qm.PayloadSchemaType.KEYWORD), ("kind", qm.PayloadSchemaType.KEYWORD),
                                    ("in_stock", qm.PayloadSchemaType.BOOL), ("price", qm.PayloadSchemaType.FLOAT)):
                    self.client.create_payload_index(self.collection, key, schema)
        self._create_collection(self.users, {INTERESTS: qm.VectorParams(
            size=image_dim, distance=qm.Distance.COSINE,
            multivector_config=qm.MultiVectorConfig(comparator=qm.MultiVectorComparator.MAX_SIM))})
        if not any(alias.alias_name == self.alias for alias in self.client.get_aliases().aliases):
            self.switch_alias(self.collection)

    def switch_alias(self, collection: str) -> None:
        """Point the ``products`` alias at ``collection`` in one atomic step."""
        self.client.update_collection_aliases(change_aliases_operations=[
            qm.CreateAliasOperation(create_alias=qm.CreateAlias(collection_name=collection, alias_name=self.alias))])

    # products -------------------------------------------------------------------------------
    def upsert_products(self, products: Sequence[Product], image_vectors: np.ndarray,
                        text_vectors: Sequence[np.ndarray | None] | None = None) -> list[int]:
        """Insert or replace products, except where the store holds a later revision of one.
        Returns the positions (in ``products``) of those written."""
        versioned = [product.product_id for product in products if product.revision is not None]
        stored = {product_id: product.revision for product_id, (product, _) in self.get_products(versioned).items()}
        rows = [row for row, product in enumerate(products)
                if not _older(product.revision, stored.get(product.product_id))]
        points = []
        for row in rows:
            product = products[row]
            vectors = {IMAGE: image_vectors[row].tolist()}
            if text_vectors is not None and text_vectors[row] is not None:
                vectors[TEXT] = text_vectors[row].tolist()
            points.append(qm.PointStruct(id=point_id(product.product_id), vector=vectors, payload=asdict(product)))
        if points:
            self.client.upsert(self.collection, points=points)
        for row in rows:
            self.vector_cache.put(products[row].product_id, np.asarray(image_vectors[row], dtype=np.float32))
        return rows

    def get_products(self, product_ids: Iterable[str], with_vectors: bool = False
                     ) -> dict[str, tuple[Product, np.ndarray | None]]:
        """Known products by id (unknown ids are simply absent), optionally with image vectors."""
        ids = list(dict.fromkeys(product_ids))
        if not ids:
            return {}
        cached = self.vector_cache.get(ids) if with_vectors else {}
        fetch_vectors = with_vectors and len(cached) < len(ids)  # in the same call as the payloads
        records = self.client.retrieve(self.collection, ids=[point_id(pid) for pid in ids], with_payload=True,
                                       with_vectors=[IMAGE] if fetch_vectors else False)
        found = {}
        for record in records:
            product = _product(record.payload)
            vector = cached.get(product.product_id)
            if with_vectors and vector is None:
                vector = self._cached_vector(product.product_id, record.vector[IMAGE])
            found[product.product_id] = (product, vector)
        return found

    def _cached_vector(self, product_id: str, vector) -> np.ndarray:
        vector = np.asarray(vector, dtype=np.float32)
        self.vector_cache.put(product_id, vector)
        return vector

    def image_vectors(self, product_ids: Iterable[str]) -> dict[str, np.ndarray]:
        """Image vectors of known products: from the cache, and one retrieve for the rest."""
        vectors = self.vector_cache.get(product_ids)
        missing = [product_id for product_id in dict.fromkeys(product_ids) if product_id not in vectors]
        if missing:
            by_point = {point_id(product_id): product_id for product_id in missing}
            for record in self.client.retrieve(self.collection, ids=list(by_point), with_payload=False,
                                               with_vectors=[IMAGE]):
                product_id = by_point[str(record.id)]
                vectors[product_id] = self._cached_vector(product_id, record.vector[IMAGE])
        return vectors

    def count(self) -> int:
        return self.client.count(self.collection, exact=True).count

    def search(self, vectors: np.ndarray, limit: int, product_filter: ProductFilter = ProductFilter(),
               using: str = IMAGE, with_vectors: bool = False) -> list[list[Hit]]:
        """Nearest products for each query vector (one batched call), optionally with image vectors.

        With a vector cache the hits come without vectors and the cache fills them in; without
        one (a server store) they come with the hits, in the same call.
        """
        if with_vectors and using != IMAGE:
            raise ValueError("hits carry image vectors only")
        vectors_with_hits = with_vectors and self.vector_cache.capacity <= 0
        query_filter = product_filter.to_qdrant()
        requests = [qm.QueryRequest(query=vector.tolist(), using=using, limit=limit, filter=query_filter,
                                    with_payload=True, with_vector=[IMAGE] if vectors_with_hits else False)
                    for vector in np.atleast_2d(vectors)]
        responses = self.client.query_batch_points(self.collection, requests=requests)
        hit_lists = [[Hit(_product(point.payload), point.score,
                          np.asarray(point.vector[IMAGE], dtype=np.float32) if vectors_with_hits else None)
                      for point in response.points] for response in responses]
        if not with_vectors or vectors_with_hits:
            return hit_lists
        found = self.image_vectors([hit.product.product_id for hits in hit_lists for hit in hits])
        return [[Hit(hit.product, hit.score, found[hit.product.product_id]) for hit in hits
                 if hit.product.product_id in found] for hits in hit_lists]

    def search_fused(self, image_vector: np.ndarray, text_vector: np.ndarray, limit: int,
                     product_filter: ProductFilter = ProductFilter()) -> list[Hit]:
        """Photo and keywords together: both rankings merged by reciprocal rank fusion."""
        query_filter = product_filter.to_qdrant()
        response = self.client.query_points(self.collection, prefetch=[
            qm.Prefetch(query=image_vector.tolist(), using=IMAGE, limit=limit * 4, filter=query_filter),
            qm.Prefetch(query=text_vector.tolist(), using=TEXT, limit=limit * 4, filter=query_filter),
        ], query=qm.FusionQuery(fusion=qm.Fusion.RRF), limit=limit, with_payload=True)
        return [Hit(_product(point.payload), point.score) for point in response.points]

    def browse(self, limit: int, offset: str | None = None, category: str | None = None
               ) -> tuple[list[Product], str | None]:
        """A page of the catalog in id order, and the offset of the next page (None at the end)."""
        records, next_offset = self.client.scroll(
            self.collection, limit=limit, offset=offset, with_payload=True,
            scroll_filter=ProductFilter(category=category, in_stock_only=False).to_qdrant())
        return [_product(record.payload) for record in records], None if next_offset is None else str(next_offset)

    def categories(self) -> dict[str, int]:
        """Number of products in each category (a facet count: the server answers from its keyword index)."""
        response = self.client.facet(self.collection, key="category", limit=1000, exact=True)
        return {hit.value: hit.count for hit in response.hits}

    # users ----------------------------------------------------------------------------------
    def save_users(self, users: Sequence[tuple[str, np.ndarray, Sequence[str], float]]) -> None:
        """Each user's interest vectors, latest recommended ids and time: (user_id, interests, recommended, updated_at)."""
        points = [qm.PointStruct(id=point_id(user_id), vector={INTERESTS: np.atleast_2d(interests).tolist()},
                                 payload={"user_id": user_id, "recommended": list(recommended), "updated_at": updated_at})
                  for user_id, interests, recommended, updated_at in users]
        if points:
            self.client.upsert(self.users, points=points)

    def get_user(self, user_id: str) -> dict | None:
        records = self.client.retrieve(self.users, ids=[point_id(user_id)], with_payload=True, with_vectors=True)
        if not records:
            return None
        return {**records[0].payload, "interests": np.asarray(records[0].vector[INTERESTS], dtype=np.float32)}
