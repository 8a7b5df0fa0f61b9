"""Faust agents: parse, hand the work to a worker thread, send the results.

CPU work (image decoding, the CNN, the embedded vector store) runs in dedicated threads so
the event loop keeps fetching, committing and answering HTTP (faust-streaming #482). One
thread for the CNN and one for the store: each resource is used by a single thread, and a
slow embedding batch does not hold up a browsing event.
"""
import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.types import EventT
from pydantic import BaseModel, ValidationError

from models.embedders import EmbedderSpec
from recommender.analytics import conversion_rates
from recommender.interests import ACTION_WEIGHTS
from recommender.shelf import stock_change
from recommender.popularity import PopularItem
from streams import handlers, metrics, retry, topics
from streams.app import (actions_topic, app, catalog_flags_topic, catalog_topic, catalog_vectors_topic,
                         category_actions_topic, category_counts, category_predictions_topic, category_stats_topic,
                         dead_letters_topic, inventory_updates_topic, popularity, popularity_topic,
                         product_actions_topic, profiles, recommendations_topic, references_topic,
                         search_results_topic, settings, shelf_frames_topic, shelf_stock, similar_items_topic,
                         uploads_topic)
from streams.events import (CategoryActivity, CategoryWindowStats, DeadLetter, ImageUpload, IndexedProduct,
                            InventoryUpdate, PopularityScore, ProductActivity, ProductListed, ReferenceImage,
                            ShelfFrame, ShopperAction)

log = logging.getLogger(__name__)
services = handlers.Services(settings)
cnn_thread = ThreadPoolExecutor(1, thread_name_prefix="cnn")
store_thread = ThreadPoolExecutor(1, thread_name_prefix="store")
reindex_thread = ThreadPoolExecutor(1, thread_name_prefix="reindex")  # a model switch's CNN work, off the serving path
# Progress of the latest model switch, shown by GET /api/admin/model.
model_switch: dict = {"state": "idle", "current": services.spec.name}
_background: set[asyncio.Task] = set()
# Set once this worker's store holds the whole catalog; agents that read the store wait for it.
catalog_loaded = asyncio.Event()
# Latest popularity score per product (sent by publish_window_results).
pending_popularity: dict[str, PopularityScore] = {}
# Set while store calls fail with transient errors and are being retried; /health reports it.
store_outage = retry.Outage("vector store")


async def in_thread(executor: ThreadPoolExecutor, function, *args):
    return await asyncio.get_running_loop().run_in_executor(executor, partial(function, *args))


async def in_store_thread(function, *args):
    """A call that uses the store, in the store thread, retried for as long as the store is unreachable."""
    return await retry.retry_transient(lambda: in_thread(store_thread, function, *args), store_outage)


def _coordinates(event: EventT) -> str:
    message = event.message
    return f"{message.topic}:{message.partition}:{message.offset}"


async def emit(topic, key: str, message: BaseModel, agent: str, event_ts: float | None = None) -> None:
    await topic.send(key=key.encode(), value=message.model_dump_json().encode())
    metrics.OUTPUTS.labels(topic.get_topic_name()).inc()
    if event_ts is not None:
        metrics.FRESHNESS.labels(agent).observe(max(0.0, time.time() - event_ts))


async def emit_category_activity(category: str, action: str, ts: float, source_event_id: str, agent: str) -> None:
    """An action or upload, re-keyed by category for the windowed analytics."""
    await emit(category_actions_topic, category, CategoryActivity(category=category, action=action, ts=ts,
                                                                  source_event_id=source_event_id), agent)


async def dead_letter(event: EventT, reason: str, agent: str, error: str = "Rejected") -> None:
    message = event.message
    key = message.key.decode("utf-8", "replace") if isinstance(message.key, bytes) else message.key
    value = message.value if isinstance(message.value, bytes) else b""
    letter = DeadLetter(topic=message.topic, partition=message.partition, offset=message.offset, key=key,
                        source_event_id=_coordinates(event), reason=reason, error=error,
                        payload_preview=value[:200].decode("utf-8", "replace"))
    log.warning("dead letter from %s: %s", _coordinates(event), reason)
    metrics.EVENTS.labels(agent, "dead_letter").inc()
    await emit(dead_letters_topic, message.topic, letter, agent)


async def parse_batch(events: list[EventT], model, agent: str):
    """The valid events of a batch with their Kafka events; the rest go to dead letters."""
    parsed = []
    for event in events:
        try:
            parsed.append((handlers.parse_event(model, event.message.value, _coordinates(event),
                                                settings.max_message_bytes), event))
        except handlers.Rejected as error:
            await dead_letter(event, str(error), agent)
    return parsed


async def embed_batch(events: list[EventT], model, embed, agent: str, with_offsets: bool = False):
    """Parse a batch of image events and embed them in the CNN thread; bad ones go to dead letters.
    ``with_offsets`` also hands ``embed`` the events' offsets (listings keep them as revisions)."""
    parsed = await parse_batch(events, model, agent)
    source = {id(item): event for item, event in parsed}
    items = [item for item, _ in parsed]
    offsets = ([event.message.offset for _, event in parsed],) if with_offsets else ()
    with metrics.STAGE_SECONDS.labels(f"{agent}.embed").time():
        embedded, rejected = await in_thread(cnn_thread, embed, services, items, *offsets)
    for item, reason in rejected:
        await dead_letter(source[id(item)], reason, agent, "BadImage")
    metrics.EVENTS.labels(agent, "ok").inc(len(embedded))
    return embedded


async def process_or_dead_letter(events: list[EventT], agent: str,
                                 process: Callable[[list[EventT]], Awaitable[None]]) -> None:
    """Run ``process`` on a batch so that no exception leaves the agent.

    faust acks a batch even when the agent body raises (see ``streams.retry``), so an
    escaped error would lose the whole batch. Transient errors are retried inside
    ``process``; anything else is a poison event or a bug. Then the batch runs again event
    by event, and only the events that fail on their own go to dead letters; the others may
    be emitted twice, which at-least-once delivery allows.
    """
    try:
        await process(events)
    except Exception as error:
        if len(events) > 1:
            for event in events:
                await process_or_dead_letter([event], agent, process)
            return
        log.exception("%s failed on %s", agent, _coordinates(events[0]))
        await dead_letter(events[0], f"internal error: {type(error).__name__}", agent, "InternalError")


async def ingest_listings(events: list[EventT]) -> None:
    for indexed in await embed_batch(events, ProductListed, handlers.embed_listings, "ingest_catalog",
                                     with_offsets=True):
        await emit(catalog_vectors_topic, indexed.product_id, indexed, "ingest_catalog")


@app.agent(catalog_topic)
async def ingest_catalog(stream):
    """Listings -> embeddings on ``catalog.vectors`` (the CNN runs once per listing, on one worker)."""
    async for events in stream.take_events(settings.ingest_batch_size, within=settings.ingest_batch_wait_s):
        await process_or_dead_letter(events, "ingest_catalog", ingest_listings)


async def index_vectors(events: list[EventT]) -> None:
    indexed = [item for item, _ in await parse_batch(events, IndexedProduct, "index_catalog")]
    with metrics.STAGE_SECONDS.labels("index_catalog.store").time():
        result = await in_store_thread(handlers.index_products, services, indexed)
    metrics.EVENTS.labels("index_catalog", "ok").inc(len(indexed))
    for similar in result.similar:
        await emit(similar_items_topic, similar.product_id, similar, "index_catalog")
    for prediction in result.categories:
        await emit(category_predictions_topic, prediction.product_id, prediction, "index_catalog")
    for flag in result.flags:
        await emit(catalog_flags_topic, flag.product_id, flag, "index_catalog")


async def ingest_reference_images(events: list[EventT]) -> None:
    for indexed in await embed_batch(events, ReferenceImage, handlers.embed_listings, "ingest_references",
                                     with_offsets=True):
        await emit(catalog_vectors_topic, indexed.product_id, indexed, "ingest_references")


@app.agent(references_topic)
async def ingest_references(stream):
    """Brands' genuine images -> embeddings on ``catalog.vectors``, stored beside (not among) listings."""
    async for events in stream.take_events(settings.ingest_batch_size, within=settings.ingest_batch_wait_s):
        await process_or_dead_letter(events, "ingest_references", ingest_reference_images)


@app.agent(catalog_vectors_topic)
async def index_catalog(stream):
    """Embedded products -> store, and similar items for them and their new neighbours."""
    await catalog_loaded.wait()
    async for events in stream.take_events(settings.ingest_batch_size, within=settings.ingest_batch_wait_s):
        await process_or_dead_letter(events, "index_catalog", index_vectors)


async def recommend_after_actions(events: list[EventT]) -> None:
    parsed = await parse_batch(events, ShopperAction, "track_actions")
    actions = [action for action, _ in parsed]
    with metrics.STAGE_SECONDS.labels("track_actions.recommend").time():
        recorded = await in_store_thread(handlers.record_actions, services,
                                         {action.user_id: profiles[action.user_id.encode()] for action in actions}, actions)
    for user_id, profile in recorded.profiles.items():
        profiles[user_id.encode()] = profile
    for (action, event), outcome in zip(parsed, recorded.outcomes):
        if isinstance(outcome, handlers.Rejected):
            await dead_letter(event, str(outcome), "track_actions")
            continue
        recommendations, activity = outcome
        metrics.EVENTS.labels("track_actions", "ok").inc()
        await emit(recommendations_topic, action.user_id, recommendations, "track_actions", action.ts)
        await emit(product_actions_topic, activity.product_id, activity, "track_actions")
        if activity.category:
            await emit_category_activity(activity.category, activity.action, activity.ts, activity.source_event_id,
                                         "track_actions")


@app.agent(actions_topic)
async def track_actions(stream):
    """Action -> profile table -> recommendations (and the action re-keyed by product for analytics)."""
    await catalog_loaded.wait()
    async for events in stream.take_events(settings.action_batch_size, within=settings.action_batch_wait_s):
        await process_or_dead_letter(events, "track_actions", recommend_after_actions)


async def count_activities(events: list[EventT]) -> None:
    for activity, event in await parse_batch(events, ProductActivity, "count_popularity"):
        popularity[activity.product_id] += ACTION_WEIGHTS[activity.action]
        _, window_end = popularity.table.window.current(event.message.timestamp)
        pending_popularity[activity.product_id] = PopularityScore(
            product_id=activity.product_id, category=activity.category, window_end=window_end,
            score=popularity[activity.product_id].current(), source_event_id=activity.source_event_id)
        metrics.EVENTS.labels("count_popularity", "ok").inc()


@app.agent(product_actions_topic)
async def count_popularity(stream):
    """Action-weighted counts per product in hopping windows; the scores feed cold-start lists."""
    async for event in stream.events():
        await process_or_dead_letter([event], "count_popularity", count_activities)


async def answer_uploads(events: list[EventT]) -> None:
    embedded = await embed_batch(events, ImageUpload, handlers.embed_uploads, "search_by_photo")
    with metrics.STAGE_SECONDS.labels("search_by_photo.search").time():
        results = await in_store_thread(handlers.search_uploads, services, embedded)
    for (upload, _), result in zip(embedded, results):
        await emit(search_results_topic, result.request_id, result, "search_by_photo", upload.ts)
        if result.predicted_category:
            await emit_category_activity(result.predicted_category, "upload", upload.ts, result.request_id,
                                         "search_by_photo")


@app.agent(uploads_topic)
async def search_by_photo(stream):
    await catalog_loaded.wait()
    async for events in stream.take_events(settings.ingest_batch_size, within=settings.ingest_batch_wait_s):
        await process_or_dead_letter(events, "search_by_photo", answer_uploads)


async def count_shelf_frames(events: list[EventT]) -> None:
    for frame, crops in await embed_batch(events, ShelfFrame, handlers.embed_shelf_frames, "count_shelves"):
        counts = await in_store_thread(handlers.count_shelf, services, crops)
        shelf = f"{frame.store_id}/{frame.shelf_id}"
        changes = stock_change(shelf_stock[shelf], counts)
        shelf_stock[shelf] = counts
        for change in changes:
            await emit(inventory_updates_topic, frame.store_id, InventoryUpdate(
                store_id=frame.store_id, shelf_id=frame.shelf_id, product_id=change.product_id, count=change.count,
                change=change.change, ts=frame.ts, source_event_id=frame.event_id), "count_shelves", frame.ts)


@app.agent(shelf_frames_topic)
async def count_shelves(stream):
    """Shelf-camera frame -> items found and recognized -> stock per shelf -> inventory changes."""
    await catalog_loaded.wait()
    async for event in stream.events():  # one at a time: the shelf table is read and written per frame
        await process_or_dead_letter([event], "count_shelves", count_shelf_frames)


ANALYTICS_ACTIONS = ("view", "click", "add_to_cart", "purchase", "upload")
# Latest window counts per category (sent by publish_window_results).
pending_category_stats: dict[str, CategoryWindowStats] = {}


async def count_category_activities(events: list[EventT]) -> None:
    for activity, event in await parse_batch(events, CategoryActivity, "category_analytics"):
        category_counts[f"{activity.category}|{activity.action}"] += 1
        start, _ = category_counts.table.window.current(event.message.timestamp)
        end = start + settings.analytics_window_s  # Faust's own range ends 0.1 s early (inclusive end)
        counts = {action: category_counts[f"{activity.category}|{action}"].current()
                  for action in ANALYTICS_ACTIONS}
        rate = conversion_rates({(activity.category, a): n for a, n in counts.items()})[activity.category]
        pending_category_stats[activity.category] = CategoryWindowStats(
            category=activity.category, window_start=start, window_end=end, counts=counts, view_to_purchase=rate)
        metrics.EVENTS.labels("category_analytics", "ok").inc()


@app.agent(category_actions_topic)
async def category_analytics(stream):
    """Actions and uploads per category in tumbling windows, with view-to-purchase conversion."""
    async for event in stream.events():
        await process_or_dead_letter([event], "category_analytics", count_category_activities)


# Windowed results change with every event; each key's latest goes out once a second.
PENDING_WINDOW_RESULTS = ((popularity_topic, "count_popularity", pending_popularity),
                          (category_stats_topic, "category_analytics", pending_category_stats))


@app.timer(1.0)
async def publish_window_results() -> None:
    for topic, agent, pending in PENDING_WINDOW_RESULTS:
        latest = dict(pending)
        pending.clear()
        for key, message in latest.items():
            await emit(topic, key, message, agent)


class TopicSnapshotReader:
    """Reads every partition of a topic from the start, without a consumer group.

    Agents see only their own partitions, but every worker answers for the whole catalog,
    so views every worker needs are read this way. ``caught_up()`` tells when the end
    offsets seen at start (or at the last ``mark_end()``) have been reached.
    """

    def __init__(self, spec: topics.TopicSpec):
        self.topic = topics.topic_name(spec, settings)
        self._consumer = AIOKafkaConsumer(bootstrap_servers=topics.bootstrap_servers(settings), group_id=None,
                                          enable_auto_commit=False, **topics.security_options(settings))
        self._partitions: list[TopicPartition] = []
        self._ends: dict[TopicPartition, int] = {}

    async def start(self) -> None:
        await self._consumer.start()
        await self._consumer.topics()  # fetches metadata so the partitions are known
        self._partitions = [TopicPartition(self.topic, p)
                            for p in sorted(self._consumer.partitions_for_topic(self.topic) or ())]
        self._consumer.assign(self._partitions)
        await self._consumer.seek_to_beginning(*self._partitions)
        await self.mark_end()

    async def mark_end(self) -> None:
        self._ends = await self._consumer.end_offsets(self._partitions)

    async def read(self, model: type[BaseModel], max_records: int) -> list[tuple[BaseModel, int]]:
        """The next readable messages, each with its offset."""
        batches = await self._consumer.getmany(timeout_ms=500, max_records=max_records)
        items = []
        for record in (record for records in batches.values() for record in records):
            try:
                items.append((model.model_validate_json(record.value), record.offset))
            except ValidationError as error:
                log.warning("skipping unreadable %s message at offset %s: %s", self.topic, record.offset, error)
        if not batches:
            await asyncio.sleep(0.2)  # the local broker answers empty fetches at once; don't spin
        return items

    async def caught_up(self) -> bool:
        positions = [await self._consumer.position(tp) for tp in self._partitions]
        return all(position >= self._ends[tp] for position, tp in zip(positions, self._partitions))

    async def stop(self) -> None:
        await self._consumer.stop()


async def follow_compacted(spec: topics.TopicSpec, model: type[BaseModel],
                           apply: Callable[[list], Awaitable[None]], caught_up: asyncio.Event | None = None) -> None:
    """Apply every message of a compacted topic, all partitions, from the start, for ever."""
    reader = TopicSnapshotReader(spec)
    await reader.start()
    try:
        while True:
            items = [item for item, _ in await reader.read(model, 1000)]
            if items:
                await apply(items)
            if caught_up is not None and not caught_up.is_set() and await reader.caught_up():
                log.info("caught up with %s", reader.topic)
                caught_up.set()
    finally:
        await reader.stop()


@app.task
async def materialize_catalog() -> None:
    """Keep this worker's embedded store a full copy of ``catalog.vectors``; a restarted
    worker rebuilds it without running the CNN. A Qdrant server is shared and needs no copy."""
    if settings.qdrant_url:
        catalog_loaded.set()
        return

    async def upsert(items: list[IndexedProduct]) -> None:
        await in_thread(store_thread, handlers.materialize, services, items)

    loaded = asyncio.Event()
    follower = asyncio.create_task(follow_compacted(topics.CATALOG_VECTORS, IndexedProduct, upsert, loaded))
    await loaded.wait()
    await in_thread(store_thread, services.store.optimize)  # index the bulk load before serving from it
    catalog_loaded.set()
    await follower


@app.task
async def follow_popularity() -> None:
    async def update(scores: list[PopularityScore]) -> None:
        items = [PopularItem(s.product_id, s.category, s.score, s.window_end) for s in scores]
        await in_thread(store_thread, services.popularity.update, items)

    await follow_compacted(topics.POPULARITY, PopularityScore, update)


async def publish_all_similar_items(source_event_id: str) -> None:
    """Re-emit every product's similar items (the lists all change when the model does)."""
    offset = None
    while True:
        outputs, offset = await in_thread(store_thread, handlers.similar_items_page, services, 64, offset,
                                          source_event_id)
        for similar in outputs:
            await emit(similar_items_topic, similar.product_id, similar, "reindex")
        if offset is None:
            return


def start_model_switch(spec: EmbedderSpec) -> None:
    model_switch.update(state="reindexing", to=spec.name, indexed=0, error=None)
    task = asyncio.create_task(reindex_and_switch(spec))
    _background.add(task)  # the loop keeps only a weak reference to tasks
    task.add_done_callback(_background.discard)


async def reindex_and_switch(spec: EmbedderSpec) -> None:
    """Re-embed the whole catalog with ``spec`` while the current model keeps serving, then switch.

    The catalog topic (compacted, with the images) is read from the start in a thread of
    its own; the new vectors go to ``catalog.vectors`` (so other workers and restarts can
    load them without the CNN) and into the new model's collection. Once caught up, the
    read alias and the model in service swap in one step on the event loop; listings that
    slipped in meanwhile are re-read and embedded by the new model right after.
    """
    services.pending = spec
    reader = TopicSnapshotReader(topics.CATALOG)
    await reader.start()
    try:
        switched = False
        while True:
            read = await reader.read(ProductListed, settings.ingest_batch_size)
            if read:
                listings, offsets = zip(*read)
                indexed, _ = await in_thread(reindex_thread, handlers.embed_listings, services, listings, offsets, spec)
                await in_thread(store_thread, handlers.materialize, services, indexed)
                for item in indexed:
                    await emit(catalog_vectors_topic, item.product_id, item, "reindex")
                model_switch["indexed"] += len(indexed)
            if await reader.caught_up():
                if switched:
                    break
                await in_thread(store_thread, services.switch_model)
                model_switch.update(state="switched", current=spec.name)
                log.info("switched to model %s after re-indexing %s products", spec.name, model_switch["indexed"])
                switched = True
                await reader.mark_end()
        await publish_all_similar_items(f"model-switch:{spec.name}")
        model_switch["state"] = "done"
    except Exception as error:  # the old model keeps serving; the operator sees why in /api/admin/model
        services.pending = None
        model_switch.update(state="failed", error=f"{type(error).__name__}: {error}")
        log.exception("model switch to %s failed", spec.name)
    finally:
        await reader.stop()
