"""Faust agents: parse, hand the work to a worker thread, send the results.

CPU work (image decoding, the CNN, the embedded vector store) runs in dedicated threads so
the event loop keeps fetching, committing and answering HTTP (faust-streaming #482). One
thread for the CNN and one for the store: each resource is used by a single thread, and a
slow embedding batch does not hold up a browsing event.
"""
import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.types import EventT
from pydantic import ValidationError

from streams import handlers, topics
from streams.app import (actions_topic, app, catalog_topic, catalog_vectors_topic, dead_letters_topic, profiles,
                         recommendations_topic, search_results_topic, settings, similar_items_topic, uploads_topic)
from streams.events import DeadLetter, ImageUpload, IndexedProduct, ProductListed, ShopperAction

log = logging.getLogger(__name__)
services = handlers.Services(settings)
cnn_thread = ThreadPoolExecutor(1, thread_name_prefix="cnn")
store_thread = ThreadPoolExecutor(1, thread_name_prefix="store")
# Set once this worker's store holds the whole catalog; agents that read the store wait for it.
catalog_loaded = asyncio.Event()


async def in_thread(executor: ThreadPoolExecutor, function, *args):
    return await asyncio.get_running_loop().run_in_executor(executor, partial(function, *args))


def _coordinates(event: EventT) -> str:
    message = event.message
    return f"{message.topic}:{message.partition}:{message.offset}"


async def dead_letter(event: EventT, reason: str, error: str = "Rejected") -> None:
    message = event.message
    key = message.key.decode("utf-8", "replace") if isinstance(message.key, bytes) else message.key
    value = message.value if isinstance(message.value, bytes) else b""
    letter = DeadLetter(topic=message.topic, partition=message.partition, offset=message.offset, key=key,
                        reason=reason, error=error, payload_preview=value[:200].decode("utf-8", "replace"))
    log.warning("dead letter from %s: %s", _coordinates(event), reason)
    await dead_letters_topic.send(key=message.topic.encode(), value=letter.model_dump_json().encode())


async def parse_batch(events: list[EventT], model):
    """The valid events of a batch with their Kafka events; the rest go to dead letters."""
    parsed = []
    for event in events:
        try:
            parsed.append((handlers.parse_event(model, event.message.value, _coordinates(event),
                                                settings.max_message_bytes), event))
        except handlers.Rejected as error:
            await dead_letter(event, str(error))
    return parsed


async def embed_batch(events: list[EventT], model):
    """Parse and embed a batch of image events; returns the usable ones and their vectors."""
    parsed = await parse_batch(events, model)
    source = {id(item): event for item, event in parsed}
    usable, vectors, rejected = await in_thread(cnn_thread, handlers.embed_images, services,
                                                [item for item, _ in parsed])
    for item, reason in rejected:
        await dead_letter(source[id(item)], reason, "BadImage")
    return usable, vectors


@app.agent(catalog_topic)
async def ingest_catalog(stream):
    """Listings -> embeddings on ``catalog.vectors`` (the CNN runs once per listing, on one worker)."""
    async for events in stream.take_events(settings.ingest_batch_size, within=settings.ingest_batch_wait_s):
        listings, vectors = await embed_batch(events, ProductListed)
        model = services.embedder.name
        for listing, vector in zip(listings, vectors):
            indexed = IndexedProduct.of(listing, vector, model)
            await catalog_vectors_topic.send(key=listing.product_id.encode(), value=indexed.model_dump_json().encode())


@app.agent(catalog_vectors_topic)
async def index_catalog(stream):
    """Embedded products -> store, and similar items for them and their new neighbours."""
    await catalog_loaded.wait()
    async for events in stream.take_events(settings.ingest_batch_size, within=settings.ingest_batch_wait_s):
        indexed = [item for item, _ in await parse_batch(events, IndexedProduct)]
        for similar in await in_thread(store_thread, handlers.index_products, services, indexed):
            await similar_items_topic.send(key=similar.product_id.encode(), value=similar.model_dump_json().encode())


@app.task
async def materialize_catalog() -> None:
    """Keep this worker's embedded store a full copy of ``catalog.vectors``.

    Agents see only their own partitions, but every worker answers queries over the whole
    catalog, so each one reads every partition of the compacted topic (no consumer group),
    from the start: a restarted worker rebuilds its store without running the CNN. A Qdrant
    server is shared by all workers and needs no copy.
    """
    if settings.qdrant_url:
        catalog_loaded.set()
        return
    consumer = AIOKafkaConsumer(bootstrap_servers=topics.bootstrap_servers(settings), group_id=None,
                                enable_auto_commit=False, **topics.security_options(settings))
    await consumer.start()
    try:
        topic = topics.topic_name(topics.CATALOG_VECTORS, settings)
        await consumer.topics()  # fetches metadata so the partitions are known
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        while True:
            batches = await consumer.getmany(timeout_ms=500, max_records=1000)
            items = []
            for record in (record for records in batches.values() for record in records):
                try:
                    items.append(IndexedProduct.model_validate_json(record.value))
                except ValidationError as error:  # written by our own agent: a bug, not bad input
                    log.error("skipping unreadable catalog vector at offset %s: %s", record.offset, error)
            if items:
                await in_thread(store_thread, handlers.materialize, services, items)
            if not catalog_loaded.is_set():
                positions = [await consumer.position(tp) for tp in partitions]
                if all(position >= ends[tp] for position, tp in zip(positions, partitions)):
                    log.info("catalog loaded into the local store: %s products", sum(ends.values()))
                    catalog_loaded.set()
            if not batches:
                await asyncio.sleep(0.2)  # the local broker answers empty fetches at once; don't spin
    finally:
        await consumer.stop()


@app.agent(actions_topic)
async def track_actions(stream):
    await catalog_loaded.wait()
    async for event in stream.events():
        parsed = await parse_batch([event], ShopperAction)
        if not parsed:
            continue
        action = parsed[0][0]
        try:
            profile, recommendations = await in_thread(store_thread, handlers.record_action, services,
                                                       profiles[action.user_id], action)
        except handlers.Rejected as error:
            await dead_letter(event, str(error))
            continue
        profiles[action.user_id] = profile
        await recommendations_topic.send(key=action.user_id.encode(),
                                         value=recommendations.model_dump_json().encode())


@app.agent(uploads_topic)
async def search_by_photo(stream):
    await catalog_loaded.wait()
    async for events in stream.take_events(settings.ingest_batch_size, within=settings.ingest_batch_wait_s):
        uploads, vectors = await embed_batch(events, ImageUpload)
        for result in await in_thread(store_thread, handlers.search_uploads, services, uploads, vectors):
            await search_results_topic.send(key=result.request_id.encode(), value=result.model_dump_json().encode())
