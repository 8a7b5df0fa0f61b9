"""Qdrant Edge (Qdrant's Rust engine in-process, with HNSW) behind ``ProductStore``.

qdrant-client's embedded mode scans every vector in numpy for each search;
bench/vector_store.py shows where that stops being fast enough. Qdrant Edge runs the
server's engine in-process instead. Rather than a second store class repeating
``ProductStore``'s ids, payloads and filters, ``EdgeClient`` answers the handful of
``QdrantClient`` calls ``ProductStore`` makes, so the same class (and the same contract
test) runs on it::

    store = ProductStore(EdgeClient("var/qdrant-edge"), model, dim)

Each collection is one Edge shard in its own folder below ``root``; aliases live in
``aliases.json`` beside them. Edge has no background optimizer: new points are searched
exactly in an appendable segment until ``EdgeClient.optimize()`` builds the HNSW index,
so call it after bulk loads (and from time to time while listings stream in).
"""
import json
import shutil
import threading
from pathlib import Path
from types import SimpleNamespace

import qdrant_edge as edge
from qdrant_client import models as qm

_DISTANCES = {qm.Distance.COSINE: edge.Distance.Cosine, qm.Distance.DOT: edge.Distance.Dot,
              qm.Distance.EUCLID: edge.Distance.Euclid, qm.Distance.MANHATTAN: edge.Distance.Manhattan}
_PAYLOAD_TYPES = {qm.PayloadSchemaType.KEYWORD: edge.PayloadSchemaType.Keyword,
                  qm.PayloadSchemaType.FLOAT: edge.PayloadSchemaType.Float,
                  qm.PayloadSchemaType.INTEGER: edge.PayloadSchemaType.Integer}
_ALIASES = "aliases.json"


def _bool_shadow(key: str) -> str:
    """qdrant-edge-py 0.9.0 matches no point for MatchValue(True) or MatchValue(False) (with
    or without a bool index), so each bool payload field gets a "true"/"false" keyword copy
    under this name, and bool matches are asked of the copy."""
    return f"{key}__bool"


def _vector_params(params: qm.VectorParams) -> edge.EdgeVectorParams:
    multivector = None
    if params.multivector_config is not None:
        # MAX_SIM is the only comparator Qdrant has.
        multivector = edge.MultiVectorConfig(edge.MultiVectorComparator.MaxSim)
    return edge.EdgeVectorParams(size=params.size, distance=_DISTANCES[params.distance],
                                 multivector_config=multivector)


def _condition(condition: qm.Condition):
    if isinstance(condition, qm.HasIdCondition):
        return edge.HasIdCondition(set(map(str, condition.has_id)))
    if isinstance(condition, qm.FieldCondition) and isinstance(condition.match, qm.MatchValue):
        value = condition.match.value
        if isinstance(value, bool):
            return edge.FieldCondition(key=_bool_shadow(condition.key), match=edge.MatchValue(str(value).lower()))
        return edge.FieldCondition(key=condition.key, match=edge.MatchValue(value))
    if isinstance(condition, qm.FieldCondition) and isinstance(condition.range, qm.Range):
        bounds = condition.range
        return edge.FieldCondition(key=condition.key, range=edge.RangeFloat(gte=bounds.gte, gt=bounds.gt,
                                                                            lte=bounds.lte, lt=bounds.lt))
    raise NotImplementedError(f"{condition!r} has no Qdrant Edge translation yet")


def _filter(query_filter: qm.Filter | None) -> edge.Filter | None:
    if query_filter is None:
        return None
    convert = lambda conditions: None if conditions is None else [_condition(c) for c in conditions]
    return edge.Filter(must=convert(query_filter.must), should=convert(query_filter.should),
                       must_not=convert(query_filter.must_not))


class EdgeClient:
    """The subset of ``QdrantClient`` that ``ProductStore`` (and its contract test) uses."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._shards: dict[str, edge.EdgeShard] = {}
        # Shards open on first use, possibly from two threads at once; Edge locks a shard's WAL,
        # so a second open of it fails ("Can't init WAL: WouldBlock").
        self._opening = threading.Lock()
        # Read once: a folder has a single opener (Edge locks its shards), so this client is
        # the only writer of the alias file and its copy stays current.
        path = self.root / _ALIASES
        self._alias_map: dict[str, str] = json.loads(path.read_text()) if path.is_file() else {}

    # collections and aliases ----------------------------------------------------------------
    def _aliases(self) -> dict[str, str]:
        return dict(self._alias_map)

    def _save_aliases(self, aliases: dict[str, str]) -> None:
        # Write-then-rename, so a crash leaves the old or the new alias map, never half of one.
        staged = self.root / (_ALIASES + ".new")
        staged.write_text(json.dumps(aliases))
        staged.replace(self.root / _ALIASES)
        self._alias_map = dict(aliases)

    def _shard(self, name: str) -> edge.EdgeShard:
        """The shard of a collection, by its name or an alias of it."""
        collection = self._alias_map.get(name, name)
        with self._opening:
            if collection not in self._shards:
                if not self.collection_exists(collection):
                    raise ValueError(f"collection {collection!r} does not exist")
                self._shards[collection] = edge.EdgeShard.load(str(self.root / collection))
            return self._shards[collection]

    def collection_exists(self, collection_name: str) -> bool:
        return (self.root / collection_name).is_dir()

    def create_collection(self, collection_name: str, vectors_config: dict[str, qm.VectorParams]) -> None:
        config = edge.EdgeConfig(vectors={name: _vector_params(params) for name, params in vectors_config.items()})
        self._shards[collection_name] = edge.EdgeShard.create(str(self.root / collection_name), config)

    def create_payload_index(self, collection_name: str, field_name: str, field_schema: qm.PayloadSchemaType) -> None:
        if field_schema == qm.PayloadSchemaType.BOOL:
            field_name, field_schema = _bool_shadow(field_name), qm.PayloadSchemaType.KEYWORD
        self._shard(collection_name).update(
            edge.UpdateOperation.create_field_index(field_name, _PAYLOAD_TYPES[field_schema]))

    def get_collections(self) -> qm.CollectionsResponse:
        return qm.CollectionsResponse(collections=[qm.CollectionDescription(name=path.name)
                                                   for path in sorted(self.root.iterdir()) if path.is_dir()])

    def delete_collection(self, collection_name: str) -> None:
        shard = self._shards.pop(collection_name, None)
        if shard is not None:
            shard.close()
        shutil.rmtree(self.root / collection_name, ignore_errors=True)
        self._save_aliases({alias: target for alias, target in self._aliases().items() if target != collection_name})

    def get_aliases(self) -> qm.CollectionsAliasesResponse:
        return qm.CollectionsAliasesResponse(aliases=[qm.AliasDescription(alias_name=alias, collection_name=target)
                                                      for alias, target in self._aliases().items()])

    def update_collection_aliases(self, change_aliases_operations: list[qm.CreateAliasOperation]) -> None:
        aliases = self._aliases()
        for operation in change_aliases_operations:
            if not isinstance(operation, qm.CreateAliasOperation):
                raise NotImplementedError(f"{type(operation).__name__} has no Qdrant Edge translation yet")
            aliases[operation.create_alias.alias_name] = operation.create_alias.collection_name
        self._save_aliases(aliases)

    # points -----------------------------------------------------------------------------------
    def upsert(self, collection_name: str, points: list[qm.PointStruct]) -> None:
        def with_bool_shadows(payload: dict | None) -> dict | None:
            if payload is None:
                return None
            shadows = {_bool_shadow(key): str(value).lower() for key, value in payload.items() if isinstance(value, bool)}
            return {**payload, **shadows}

        self._shard(collection_name).update(edge.UpdateOperation.upsert_points(
            [edge.Point(str(point.id), point.vector, with_bool_shadows(point.payload)) for point in points]))

    def retrieve(self, collection_name: str, ids: list, with_payload: bool = True,
                 with_vectors: bool | list[str] = False) -> list[edge.Record]:
        return self._shard(collection_name).retrieve([str(point_id) for point_id in ids], with_payload, with_vectors)

    def count(self, collection_name: str, exact: bool = True) -> SimpleNamespace:
        return SimpleNamespace(count=self._shard(collection_name).count(edge.CountRequest(exact=exact)))

    def query_batch_points(self, collection_name: str, requests: list[qm.QueryRequest]) -> list[SimpleNamespace]:
        batch = edge.QueryBatchRequest([edge.QueryRequest(
            limit=request.limit, query=edge.Query.Nearest(request.query, using=request.using),
            filter=_filter(request.filter), with_payload=request.with_payload, with_vector=request.with_vector)
            for request in requests])
        return [SimpleNamespace(points=points) for points in self._shard(collection_name).query_batch(batch)]

    def query_points(self, collection_name: str, prefetch: list[qm.Prefetch], query: qm.FusionQuery, limit: int,
                     with_payload: bool = True) -> SimpleNamespace:
        """Prefetched nearest-neighbour lists merged by fusion (the only multi-stage query the store makes)."""
        if not isinstance(query, qm.FusionQuery) or query.fusion != qm.Fusion.RRF:
            raise NotImplementedError(f"{query!r} has no Qdrant Edge translation yet")
        stages = [edge.Prefetch(limit=stage.limit, query=edge.Query.Nearest(stage.query, using=stage.using),
                                filter=_filter(stage.filter)) for stage in prefetch]
        # k=2 is Qdrant's own default for RRF, so results match the other backends.
        request = edge.QueryRequest(limit=limit, query=edge.Fusion.Rrf(k=2), prefetches=stages,
                                    with_payload=with_payload)
        return SimpleNamespace(points=self._shard(collection_name).query(request))

    def scroll(self, collection_name: str, limit: int, offset=None, with_payload: bool = True,
               scroll_filter: qm.Filter | None = None) -> tuple[list[edge.Record], object]:
        return self._shard(collection_name).scroll(edge.ScrollRequest(
            offset=offset, limit=limit, filter=_filter(scroll_filter), with_payload=with_payload))

    def facet(self, collection_name: str, key: str, limit: int = 10, exact: bool = False) -> SimpleNamespace:
        return SimpleNamespace(hits=self._shard(collection_name).facet(edge.FacetRequest(key, limit, exact)).hits)

    # maintenance ------------------------------------------------------------------------------
    def optimize(self) -> None:
        """Build HNSW indexes (and merge segments) in every open collection; blocks until done."""
        for shard in self._shards.values():
            shard.optimize()

    def close(self) -> None:
        for shard in self._shards.values():
            shard.close()
        self._shards.clear()
