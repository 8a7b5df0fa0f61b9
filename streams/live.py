"""Live recommendations: each new list on ``recs.user-recommendations`` goes to the browsers
watching that user (the demo page's server-sent events).

Every worker follows all partitions of the output topic (no consumer group), so a browser
connected to any worker sees every update for its user, whichever worker owns the user's
profile; the cost is that each worker reads every recommendation list. Subscribers live in
this process only: a browser reconnects (EventSource does so by itself) after a restart.
"""
import asyncio
import logging
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import ValidationError

from streams import topics
from streams.app import app, settings
from streams.events import Recommendations

log = logging.getLogger(__name__)

# A browser that stops reading loses its oldest updates rather than growing the queue.
MAX_QUEUED = 20

_subscribers: dict[str, set[asyncio.Queue]] = defaultdict(set)


@contextmanager
def subscription(user_id: str) -> Iterator[asyncio.Queue]:
    """A queue that receives the user's new recommendations, and None when the worker stops."""
    queue: asyncio.Queue = asyncio.Queue(MAX_QUEUED)
    _subscribers[user_id].add(queue)
    try:
        yield queue
    finally:
        _subscribers[user_id].discard(queue)
        if not _subscribers[user_id]:
            del _subscribers[user_id]


def _offer(queue: asyncio.Queue, item: Recommendations | None) -> None:
    if queue.full():
        queue.get_nowait()
    queue.put_nowait(item)


def publish(recommendations: Recommendations) -> None:
    for queue in _subscribers.get(recommendations.user_id, ()):
        _offer(queue, recommendations)


def close_all() -> None:
    """Ends every open stream, so the web server's shutdown need not wait for them."""
    for queues in _subscribers.values():
        for queue in queues:
            _offer(queue, None)


@app.task
async def follow_recommendations() -> None:
    """Publish every recommendation list written from now on, from all partitions."""
    topic = topics.topic_name(topics.RECOMMENDATIONS, settings)
    consumer = AIOKafkaConsumer(bootstrap_servers=topics.bootstrap_servers(settings), group_id=None,
                                enable_auto_commit=False, **topics.security_options(settings))
    await consumer.start()
    try:
        await consumer.topics()  # fetches metadata so the partitions are known
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(partitions)
        await consumer.seek_to_end(*partitions)
        while True:
            batches = await consumer.getmany(timeout_ms=500)
            for record in (record for records in batches.values() for record in records):
                try:
                    publish(Recommendations.model_validate_json(record.value))
                except ValidationError as error:  # written by our own agent: a bug, not bad input
                    log.error("skipping unreadable %s message at offset %s: %s", topic, record.offset, error)
            if not batches:
                await asyncio.sleep(0.2)  # the local broker answers empty fetches at once; don't spin
    finally:
        await consumer.stop()
