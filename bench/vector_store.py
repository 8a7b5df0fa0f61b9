"""Vector store: upsert rate, search latency/QPS and recall@10 of each in-process backend.

Backends: qdrant-client's embedded store (``:memory:`` and ``path=``, through the
project's ``ProductStore``), Qdrant Edge (Qdrant's Rust engine in-process, HNSW index)
and numpy brute force, which is exact and so defines recall 1.0.

The catalog is synthetic: real Fashion-MNIST embeddings would take an hour per 100k at
~34 img/s. To mimic their structure the 1280-d unit vectors form a two-level Gaussian
mixture: 10 categories, each with 50 styles, items scattered around their style. Uniform
random vectors would be the worst case for HNSW and unlike any real embedding. Queries
are fresh items from the same mixture (not in the catalog), one per search call, like the
per-listing searches of ``streams.handlers``. Filtered searches keep one category (~1/10 of
the items): the query's own (the usual case: similar items of the same kind) or another one
(the hard case: every remaining item is about equally far from the query).
"""
import argparse
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import qdrant_edge as edge
from qdrant_client import QdrantClient

from bench.timing import machine_summary, percentile, table
from recommender.store import IMAGE, Product, ProductFilter, ProductStore

DIM = 1280
CATEGORIES = 10
STYLES_PER_CATEGORY = 50
K = 10
FILTERS = ("none", "own category", "other category")
UPSERT_BATCH = 32  # Settings.ingest_batch_size: how the catalog agent writes
# qdrant-client warns above 20,000 points that local mode is not meant for more. Loading
# 100k into it takes many minutes on the busy host (each point's upsert copies bookkeeping
# arrays with np.append) and each search scans everything, so it is measured up to here.
EMBEDDED_LIMIT = 20_000


@dataclass(frozen=True)
class Catalog:
    vectors: np.ndarray  # (n, DIM) float32, unit rows
    categories: np.ndarray  # (n,) int
    queries: np.ndarray
    query_categories: np.ndarray
    other_categories: np.ndarray  # a random category other than the query's own

    def filter_category(self, query_index: int, kind: str) -> int | None:
        return {"none": None, "own category": int(self.query_categories[query_index]),
                "other category": int(self.other_categories[query_index])}[kind]


def synthetic_catalog(size: int, queries: int, seed: int = 0) -> Catalog:
    """Unit vectors in a category -> style -> item mixture (cosine ~0.5 between styles of
    one category, ~0.74 between items of one style, ~0 across categories)."""
    rng = np.random.default_rng(seed)

    def unit(rows: np.ndarray) -> np.ndarray:
        return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)

    def random_directions(count: int) -> np.ndarray:
        return unit(rng.standard_normal((count, DIM), dtype=np.float32))

    category_centres = random_directions(CATEGORIES)
    style_category = np.repeat(np.arange(CATEGORIES), STYLES_PER_CATEGORY)
    style_centres = unit(category_centres[style_category] + random_directions(len(style_category)))

    def items(count: int) -> tuple[np.ndarray, np.ndarray]:
        styles = rng.integers(0, len(style_centres), count)
        return unit(style_centres[styles] + 0.6 * random_directions(count)), style_category[styles]

    vectors, categories = items(size)
    query_vectors, query_categories = items(queries)
    other_categories = (query_categories + rng.integers(1, CATEGORIES, queries)) % CATEGORIES
    return Catalog(vectors, categories, query_vectors, query_categories, other_categories)


@dataclass
class Backend:
    """A store under test: ``search(query, category or None)`` returns catalog row indices."""

    name: str
    search: Callable[[np.ndarray, int | None], list[int]]
    upsert_points_per_s: float | None = None
    index_build_s: float | None = None
    close: Callable[[], None] = lambda: None
    latencies: dict[str, list[float]] = field(default_factory=lambda: {kind: [] for kind in FILTERS})
    found: dict[str, list[list[int]]] = field(default_factory=lambda: {kind: [] for kind in FILTERS})


def brute_force(catalog: Catalog) -> Backend:
    vectors, categories = catalog.vectors, catalog.categories

    def search(query: np.ndarray, category: int | None) -> list[int]:
        scores = vectors @ query
        if category is not None:
            scores = np.where(categories == category, scores, -np.inf)
        top = np.argpartition(-scores, K)[:K]
        return top[np.argsort(-scores[top])].tolist()

    return Backend("numpy brute force (exact)", search)


def product_rows(catalog: Catalog) -> list[Product]:
    # The product id carries the row index, so search hits map straight back to the ground truth.
    return [Product(product_id=str(row), title=f"item {row}", price=10.0, category=f"c{category}")
            for row, category in enumerate(catalog.categories)]


def timed_upsert(write: Callable[[int, int], None], count: int) -> float:
    """Points/s writing rows [0, count) in ingest-sized batches."""
    start = time.perf_counter()
    for first in range(0, count, UPSERT_BATCH):
        write(first, min(count, first + UPSERT_BATCH))
    return count / (time.perf_counter() - start)


def qdrant_client_store(name: str, client: QdrantClient, catalog: Catalog, close: Callable[[], None]) -> Backend:
    store = ProductStore(client, "bench", DIM)
    products = product_rows(catalog)
    rate = timed_upsert(lambda first, end: store.upsert_products(products[first:end], catalog.vectors[first:end]),
                        len(products))

    def search(query: np.ndarray, category: int | None) -> list[int]:
        # in_stock_only=False: every product is in stock, and the in-stock condition would
        # otherwise make every "unfiltered" search a filtered one.
        product_filter = ProductFilter(category=None if category is None else f"c{category}", in_stock_only=False)
        return [int(hit.product.product_id) for hit in store.search(query, K, product_filter)[0]]

    return Backend(name, search, rate, close=close)


def qdrant_client_upsert_rate_on_disk(catalog: Catalog, count: int) -> float:
    """Upsert rate of the embedded on-disk store (SQLite under the hood). Its search is the
    same numpy scan as ``:memory:`` over vectors it keeps in RAM, so only writes differ."""
    folder = tempfile.mkdtemp(prefix="bench-qdrant-")
    client = QdrantClient(path=folder)
    try:
        store = ProductStore(client, "bench", DIM)
        products = product_rows(catalog)[:count]
        return timed_upsert(lambda first, end: store.upsert_products(products[first:end], catalog.vectors[first:end]),
                            count)
    finally:
        client.close()
        shutil.rmtree(folder, ignore_errors=True)


def qdrant_edge_shard(name: str, catalog: Catalog, quantized: bool, hnsw_ef: int) -> list[Backend]:
    """Qdrant Edge with an HNSW index (built by ``optimize()``, timed separately from upserts).

    Two backends share the shard: plain HNSW search, and the same with ACORN, which widens
    the graph walk past neighbours the filter rejects (it only changes filtered searches)."""
    folder = tempfile.mkdtemp(prefix="bench-edge-")
    config = edge.EdgeConfig(
        vectors={IMAGE: edge.EdgeVectorParams(size=DIM, distance=edge.Distance.Cosine)},
        # One search and one indexing thread: the other core belongs to the embedder.
        max_search_threads=1,
        hnsw_config=edge.HnswIndexConfig(m=16, ef_construct=100, full_scan_threshold=10_000, max_indexing_threads=1),
        quantization_config=edge.ScalarQuantizationConfig(edge.ScalarType.Int8, memory=edge.Memory.Pinned)
        if quantized else None,
        payload_memory=edge.Memory.Cached)
    shard = edge.EdgeShard.create(folder, config)
    shard.update(edge.UpdateOperation.create_field_index("category", edge.PayloadSchemaType.Keyword))

    def write(first: int, end: int) -> None:
        shard.update(edge.UpdateOperation.upsert_points([
            edge.Point(row, {IMAGE: catalog.vectors[row].tolist()}, {"category": f"c{catalog.categories[row]}"})
            for row in range(first, end)]))

    rate = timed_upsert(write, len(catalog.vectors))
    start = time.perf_counter()
    shard.optimize()
    build_s = time.perf_counter() - start
    # Rescoring the int8 candidates with the float vectors keeps recall near the float index.
    quantization = edge.QuantizationSearchParams(rescore=True, oversampling=2.0) if quantized else None

    def searcher(params: edge.SearchParams) -> Callable[[np.ndarray, int | None], list[int]]:
        def search(query: np.ndarray, category: int | None) -> list[int]:
            query_filter = None if category is None else edge.Filter(
                must=[edge.FieldCondition(key="category", match=edge.MatchValue(f"c{category}"))])
            points = shard.query(edge.QueryRequest(limit=K, query=edge.Query.Nearest(query.tolist(), using=IMAGE),
                                                   filter=query_filter, params=params, with_payload=True))
            return [point.id for point in points]
        return search

    def close() -> None:
        shard.close()
        shutil.rmtree(folder, ignore_errors=True)

    plain = edge.SearchParams(hnsw_ef=hnsw_ef, quantization=quantization)
    acorn = edge.SearchParams(hnsw_ef=hnsw_ef, quantization=quantization, acorn=edge.AcornSearchParams(enable=True))
    return [Backend(name, searcher(plain), rate, build_s, close),
            Backend(f"{name}, ACORN", searcher(acorn), rate, build_s)]


def run_queries(backends: Sequence[Backend], catalog: Catalog, budget_s: float) -> None:
    """Each query goes to every backend in turn (so load drift hits all alike), for each kind of
    filter in turn. The order is shuffled per query: two backends sharing one Edge shard would
    otherwise always find the second one's graph path still in cache. A backend that has used
    up ``budget_s`` on a kind of search stops taking more of it once it has answered 10; its
    figures are then over fewer queries (the table says how many)."""
    for kind in FILTERS:
        for index, query in enumerate(catalog.queries):
            category = catalog.filter_category(index, kind)
            for backend in random.Random(index).sample(list(backends), len(backends)):
                latencies = backend.latencies[kind]
                if len(latencies) < index or (len(latencies) >= 10 and sum(latencies) > budget_s):
                    continue
                start = time.perf_counter()
                found = backend.search(query, category)
                latencies.append(time.perf_counter() - start)
                backend.found[kind].append(found)


def recall(found: list[list[int]], truth: list[list[int]]) -> float:
    return statistics.mean(len(set(hits) & set(exact)) / K for hits, exact in zip(found, truth))


def report(size: int, backends: Sequence[Backend]) -> None:
    exact = backends[0]
    qps = lambda backend, kind: len(backend.latencies[kind]) / sum(backend.latencies[kind])
    rows = []
    for backend in backends:
        for kind in FILTERS:
            latencies = backend.latencies[kind]
            rows.append((backend.name, kind,
                         "-" if backend.upsert_points_per_s is None else backend.upsert_points_per_s,
                         "-" if backend.index_build_s is None else backend.index_build_s,
                         len(latencies), 1000 * percentile(latencies, 0.5), 1000 * percentile(latencies, 0.95),
                         qps(backend, kind), recall(backend.found[kind], exact.found[kind]),
                         qps(backend, kind) / qps(exact, kind), qps(backend, kind) / qps(backend, "none")))
    print(f"\n### {size:,} items\n")
    print(table(["backend", "filter", "upsert pts/s", "index build s", "queries", "p50 ms", "p95 ms", "QPS",
                 "recall@10", "QPS vs brute force", "QPS vs own unfiltered"], rows))


def run(full: bool = False) -> None:
    sizes = (10_000, 100_000) if full else (10_000,)
    queries, budget_s = (200, 30.0) if full else (100, 10.0)
    on_disk_points = 10_000 if full else 2_000
    print(f"## Vector store ({DIM}-d synthetic unit vectors, {CATEGORIES} categories x {STYLES_PER_CATEGORY} styles, "
          f"top {K}, single-query calls, a category filter keeps ~1/{CATEGORIES})\n\n{machine_summary()}")
    for size in sizes:
        catalog = synthetic_catalog(size, queries)
        backends = [brute_force(catalog)]
        if size <= EMBEDDED_LIMIT:
            memory_client = QdrantClient(location=":memory:")
            backends.append(qdrant_client_store("qdrant-client :memory:", memory_client, catalog, memory_client.close))
        backends += qdrant_edge_shard("qdrant-edge HNSW int8+rescore", catalog, quantized=True, hnsw_ef=128)
        if size <= 10_000:
            # A float32 HNSW build is several times slower than the int8 one; at 100k it takes many minutes.
            backends += qdrant_edge_shard("qdrant-edge HNSW float32", catalog, quantized=False, hnsw_ef=128)
        run_queries(backends, catalog, budget_s)
        report(size, backends)
        for backend in backends:
            backend.close()
    rate = qdrant_client_upsert_rate_on_disk(synthetic_catalog(on_disk_points, 0), on_disk_points)
    print(f"\nqdrant-client path= (on disk): upsert {rate:.0f} points/s over {on_disk_points:,} points "
          f"in batches of {UPSERT_BATCH} (search as :memory:, which it mirrors in RAM)")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="also 100k items, more queries, 10k on-disk upserts")
    run(parser.parse_args(argv).full)


if __name__ == "__main__":
    main()
