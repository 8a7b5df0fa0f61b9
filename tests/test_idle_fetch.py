"""The pause after empty fetches (streams/idle_fetch.py), with a real aiokafka consumer on the
test broker: an idle consumer fetches about once per pause instead of spinning, and records
that arrive during a pause are still all delivered."""
import asyncio
import os
import time
from collections import Counter

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.consumer.fetcher import Fetcher

from infra.local_stack import isolated_settings
from streams import idle_fetch, topics
from streams.client import produce
from streams.topics import TopicSpec, bootstrap_servers, security_options, topic_name

pytestmark = pytest.mark.integration
IDLE_S = 2.0
PAUSE_S = 0.1
QUIET = TopicSpec("idle.quiet", "a topic nobody writes to at first", "id")


async def fetches_while_idle_then_records(settings, fetch_count: Counter, records_after_idle: int) -> tuple[int, int]:
    """Fetch requests an assigned consumer sends while the topic stays empty for IDLE_S, and
    how many of the records then produced it receives."""
    consumer = AIOKafkaConsumer(topic_name(QUIET, settings), bootstrap_servers=bootstrap_servers(settings),
                                group_id=f"{settings.app_id}-idle", auto_offset_reset="earliest",
                                **security_options(settings))
    await consumer.start()
    try:
        while not consumer.assignment():
            await consumer.getmany(timeout_ms=100)
        fetches_before = fetch_count["fetches"]
        idle_until = time.monotonic() + IDLE_S
        while time.monotonic() < idle_until:
            assert not await consumer.getmany(timeout_ms=100)
        fetches = fetch_count["fetches"] - fetches_before
        await asyncio.to_thread(produce, settings, QUIET, [(str(i), {"id": i}) for i in range(records_after_idle)])
        received: list = []
        deadline = time.monotonic() + 30
        while len(received) < records_after_idle and time.monotonic() < deadline:
            received += [r for batch in (await consumer.getmany(timeout_ms=200)).values() for r in batch]
        return fetches, len(received)
    finally:
        await consumer.stop()


@pytest.fixture
def fetch_count(monkeypatch) -> Counter:
    """Counts the fetch requests aiokafka sends, paused or not; the fetch in use before comes back after."""
    count, fetch = Counter(), idle_fetch._fetch_from_node

    async def counted(*args):
        count["fetches"] += 1
        return await fetch(*args)

    monkeypatch.setattr(Fetcher, "_proc_fetch_request", Fetcher._proc_fetch_request)  # noted for the undo
    monkeypatch.setattr(idle_fetch, "_fetch_from_node", counted)
    return count


def test_an_idle_consumer_fetches_about_once_per_pause_and_still_gets_every_record(broker_url, fetch_count):
    paused_run, spinning_run = isolated_settings(broker_url), isolated_settings(broker_url)
    for settings in (paused_run, spinning_run):
        topics.create_topics(settings, (QUIET,))
    idle_fetch.pause_idle_fetches(PAUSE_S)
    paused, received = asyncio.run(fetches_while_idle_then_records(paused_run, fetch_count, records_after_idle=20))
    assert 0 < paused <= IDLE_S / PAUSE_S + 2  # one broker: at most one fetch in flight
    assert received == 20
    if os.environ.get("VR_TEST_BROKER") != "testcontainers":  # Apache Kafka holds empty fetches itself
        idle_fetch.pause_idle_fetches(0)
        spinning, received = asyncio.run(fetches_while_idle_then_records(spinning_run, fetch_count, records_after_idle=20))
        print(f"fetches in {IDLE_S:g} s idle: {paused} with a {PAUSE_S:g} s pause, {spinning} without")  # -rP
        assert spinning > 5 * paused and received == 20
