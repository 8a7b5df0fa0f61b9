"""Plain Kafka producer and consumer helpers for the demo, the CLI and the tests."""
import json
import time
from collections.abc import Callable, Iterable
from urllib.request import urlopen

from kafka import KafkaConsumer, KafkaProducer

from recommender.settings import Settings
from streams.topics import SEARCH_RESULTS, TopicSpec, bootstrap_servers, security_options, topic_name


def produce(settings: Settings, spec: TopicSpec, messages: Iterable[tuple[str | None, dict | bytes]]) -> int:
    """Send (key, value) pairs; dict values are JSON-encoded, bytes sent as they are.

    Raises if the broker refused any of them (a message over the topic's size limit, say)."""
    producer = KafkaProducer(bootstrap_servers=bootstrap_servers(settings), linger_ms=5, acks="all",
                             max_request_size=32_000_000, **security_options(settings))
    try:
        deliveries = [producer.send(topic_name(spec, settings), key=key.encode() if key else None,
                                    value=value if isinstance(value, bytes) else json.dumps(value).encode())
                      for key, value in messages]
        producer.flush()
        for delivery in deliveries:
            delivery.get()  # raises the broker's error; flush() alone drops it silently
    finally:
        producer.close()
    return len(deliveries)


class TopicReader:
    """Reads a topic from the beginning; ``until`` waits for the messages a test expects."""

    def __init__(self, settings: Settings, spec: TopicSpec, from_start: bool = True):
        self.messages: list[dict] = []
        self._consumer = KafkaConsumer(topic_name(spec, settings), bootstrap_servers=bootstrap_servers(settings),
                                       auto_offset_reset="earliest" if from_start else "latest",
                                       enable_auto_commit=False, group_id=None, fetch_max_wait_ms=100,
                                       **security_options(settings))
        if not from_start:
            self.poll(0.5)  # joins the partitions at their current end, so only later messages are read

    def poll(self, timeout_s: float = 0.2) -> list[dict]:
        fresh = [json.loads(record.value) for batch in self._consumer.poll(timeout_ms=int(timeout_s * 1000)).values()
                 for record in batch]
        self.messages.extend(fresh)
        return fresh

    def read_to_end(self, timeout_s: float = 120.0) -> list[dict]:
        """Every message on the topic up to the end offsets seen now."""
        self.poll(0.5)  # joins the partitions
        partitions = list(self._consumer.assignment())
        ends = self._consumer.end_offsets(partitions)
        return self.until(lambda _: all(self._consumer.position(tp) >= ends[tp] for tp in partitions), timeout_s)

    def until(self, done: Callable[[list[dict]], bool], timeout_s: float) -> list[dict]:
        deadline = time.monotonic() + timeout_s
        while not done(self.messages):
            if time.monotonic() > deadline:
                raise TimeoutError(f"gave up after {timeout_s} s with {len(self.messages)} messages")
            self.poll()
        return self.messages

    def close(self) -> None:
        self._consumer.close()


def search_result(settings: Settings, request_id: str, timeout_s: float = 60.0) -> dict:
    """The answer to one photo upload on recs.search-results. Other uploads' answers share the
    topic and arrive in any order across partitions, so it is picked by its request id."""
    reader = TopicReader(settings, SEARCH_RESULTS)
    try:
        messages = reader.until(lambda ms: any(m["request_id"] == request_id for m in ms), timeout_s)
    finally:
        reader.close()
    return next(m for m in messages if m["request_id"] == request_id)


def profile_owners(worker_url: str) -> dict[str, set[int]]:
    """Worker (canonical URL) -> the user-profile partitions it holds, as the consumer group's
    assignment reads on the worker at ``worker_url`` (Faust's router endpoint)."""
    with urlopen(f"{worker_url}/router/user-profiles/", timeout=5) as response:
        by_worker = json.load(response)
    return {url: {partition for partitions in changelogs.values() for partition in partitions}
            for url, changelogs in by_worker.items() if any(changelogs.values())}
