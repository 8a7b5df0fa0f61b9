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

from faust.types import EventT

from streams import handlers
from streams.app import (actions_topic, app, catalog_topic, dead_letters_topic, profiles, recommendations_topic,
                         search_results_topic, settings, similar_items_topic, uploads_topic)
from streams.events import DeadLetter, ImageUpload, ProductListed, ShopperAction

log = logging.getLogger(__name__)
services = handlers.Services(settings)
cnn_thread = ThreadPoolExecutor(1, thread_name_prefix="cnn")
store_thread = ThreadPoolExecutor(1, thread_name_prefix="store")


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
    async for events in stream.take_events(settings.ingest_batch_size, within=settings.ingest_batch_wait_s):
        listings, vectors = await embed_batch(events, ProductListed)
        if not listings:
            continue
        for similar in await in_thread(store_thread, handlers.index_listings, services, listings, vectors):
            await similar_items_topic.send(key=similar.product_id.encode(), value=similar.model_dump_json().encode())


@app.agent(actions_topic)
async def track_actions(stream):
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
    async for events in stream.take_events(settings.ingest_batch_size, within=settings.ingest_batch_wait_s):
        uploads, vectors = await embed_batch(events, ImageUpload)
        for result in await in_thread(store_thread, handlers.search_uploads, services, uploads, vectors):
            await search_results_topic.send(key=result.request_id.encode(), value=result.model_dump_json().encode())
