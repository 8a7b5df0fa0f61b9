"""Browsing events through the recommendation agent vs a raw Kafka pass-through, same broker.

Throughput: N events are produced at once; the rate is N over the time until the last
output arrives. The baseline is an aiokafka consumer that copies each message to another
topic, the least any Kafka pipeline can do. Freshness: events are offered at a fixed rate
and each one's latency is the time from its timestamp to its recommendation being read
back by a consumer on the output topic (so the figure includes that consumer's polling).
Both run on the local broker started here, with a worker started here. ``--profile``
samples the worker with py-spy while it works through the throughput run and prints where
its threads spend their time.
"""
import asyncio
import json
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import contextmanager, nullcontext
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench.timing import machine_summary, percentile, table
from infra.local_broker import free_port, start_broker, stop_broker
from infra.local_stack import isolated_settings, running_worker
from recommender.demo_data import demo_catalog
from streams import topics
from streams.client import TopicReader, produce
from streams.topics import TopicSpec, bootstrap_servers, topic_name

PASS_IN = TopicSpec("bench.pass-in", "pass-through baseline input", "user_id")
PASS_OUT = TopicSpec("bench.pass-out", "pass-through baseline output", "user_id")


def browsing_events(catalog, count: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    return [{"event_id": f"bench-{seed}-{i}", "user_id": f"user-{rng.randrange(500)}",
             "product_id": rng.choice(catalog).product_id, "action": rng.choice(["view", "view", "click"]),
             "ts": time.time()} for i in range(count)]


async def pass_through(settings, count: int) -> None:
    """Copy ``count`` messages from PASS_IN to PASS_OUT in a consumer group, committing as we go."""
    servers = bootstrap_servers(settings)
    consumer = AIOKafkaConsumer(topic_name(PASS_IN, settings), bootstrap_servers=servers,
                                group_id=f"{settings.app_id}-pass", auto_offset_reset="earliest")
    producer = AIOKafkaProducer(bootstrap_servers=servers, linger_ms=1)
    await consumer.start()
    await producer.start()
    try:
        copied = 0
        while copied < count:
            for records in (await consumer.getmany(timeout_ms=200, max_records=500)).values():
                for record in records:
                    await producer.send(topic_name(PASS_OUT, settings), key=record.key, value=record.value)
                    copied += 1
        await producer.flush()
    finally:
        await producer.stop()
        await consumer.stop()


def throughput(settings, events: list[dict], spec_in: TopicSpec, spec_out: TopicSpec, run_copier: bool) -> float:
    reader = TopicReader(settings, spec_out)
    wanted = {event["event_id"] for event in events}
    start = time.perf_counter()
    produce(settings, spec_in, [(event["user_id"], event) for event in events])
    if run_copier:
        asyncio.run(pass_through(settings, len(events)))
    key = "event_id" if spec_out is PASS_OUT else "source_event_id"
    reader.until(lambda messages: wanted <= {m[key] for m in messages}, timeout_s=1800)
    elapsed = time.perf_counter() - start
    reader.close()
    return len(events) / elapsed


async def offered_load(settings, events: list[dict], rate: float) -> dict[str, float]:
    """Send events at ``rate`` per second; latency = output read back minus the event's ts."""
    servers = bootstrap_servers(settings)
    consumer = AIOKafkaConsumer(topic_name(topics.RECOMMENDATIONS, settings), bootstrap_servers=servers,
                                group_id=None, auto_offset_reset="latest")
    producer = AIOKafkaProducer(bootstrap_servers=servers, linger_ms=0)
    await consumer.start()
    await producer.start()
    latencies: dict[str, float] = {}
    wanted = {event["event_id"] for event in events}

    async def collect():
        while not wanted <= latencies.keys():
            for records in (await consumer.getmany(timeout_ms=100)).values():
                now = time.time()
                for record in records:
                    message = json.loads(record.value)
                    if message["source_event_id"] in wanted:
                        latencies[message["source_event_id"]] = now - sent[message["source_event_id"]]

    sent: dict[str, float] = {}
    collector = asyncio.create_task(collect())
    try:
        start = time.perf_counter()
        for index, event in enumerate(events):
            await asyncio.sleep(max(0.0, start + index / rate - time.perf_counter()))
            event = {**event, "ts": time.time()}
            sent[event["event_id"]] = event["ts"]
            await producer.send(topic_name(topics.ACTIONS, settings), key=event["user_id"].encode(),
                                value=json.dumps(event).encode())
        await asyncio.wait_for(collector, timeout=600)
    finally:
        await producer.stop()
        await consumer.stop()
    values = sorted(latencies.values())
    return {"p50": percentile(values, 0.5), "p95": percentile(values, 0.95), "p99": percentile(values, 0.99)}


# Where a sample is, by the first of these found in its stack (innermost frame first).
PROFILE_PARTS = [
    ("recommendation handler (store thread: interests, Qdrant, ranking)", ("streams/handlers.py",)),
    ("CNN (catalog embedding)", ("models/embedders.py",)),
    ("Kafka client: aiokafka fetch/produce, protocol, sockets", ("aiokafka/",)),
    ("Faust: tables, changelogs, channels, serializers", ("faust/tables", "faust/channels", "faust/topics",
                                                          "faust/serializers", "faust/transport")),
    ("our agents: parsing, pydantic, emit", ("streams/agents.py",)),
    ("event loop and other", ("",)),
]


@contextmanager
def sampled(pid: int, output: Path):
    """py-spy samples process ``pid`` (all threads, idle ones left out) until the block ends."""
    spy = subprocess.Popen([str(Path(sys.executable).with_name("py-spy")), "record", "-p", str(pid), "--rate", "100",
                            "--nonblocking", "--format", "raw", "-o", str(output)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        spy.wait(60)


def profile_shares(raw_profile: Path) -> list[list[str]]:
    """Share of samples per part of the worker (``PROFILE_PARTS``), from py-spy's raw output."""
    counts: Counter[str] = Counter()
    for line in raw_profile.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        frames = stack.split(";")[::-1]
        part = next(name for name, markers in PROFILE_PARTS
                    if any(marker in frame for frame in frames for marker in markers))
        counts[part] += int(samples)
    total = sum(counts.values())
    return [[name, f"{counts[name] / total:.0%}"] for name, _ in PROFILE_PARTS]


def run(full: bool, profile: bool = False) -> None:
    count, rate, seconds = (5000, 500, 20) if full else (1000, 100, 10)
    with tempfile.TemporaryDirectory() as folder:
        port = free_port()
        broker = start_broker(Path(folder) / "broker", port)
        try:
            settings = isolated_settings(f"kafka://127.0.0.1:{port}", kafka_partitions=4, text_embedder="none")
            with running_worker(settings, Path(folder)) as worker:
                topics.create_topics(settings)
                topics.create_topics(settings, (PASS_IN, PASS_OUT))
                catalog = demo_catalog(100)
                produce(settings, topics.CATALOG, [(p.product_id, p.listing()) for p in catalog])
                TopicReader(settings, topics.SIMILAR_ITEMS).until(
                    lambda ms: len({m["product_id"] for m in ms}) >= len(catalog), 600)
                baseline = throughput(settings, browsing_events(catalog, count, 1), PASS_IN, PASS_OUT, True)
                raw_profile = Path(folder) / "worker.pyspy"
                with sampled(worker.process.pid, raw_profile) if profile else nullcontext():
                    pipeline = throughput(settings, browsing_events(catalog, count, 2), topics.ACTIONS,
                                          topics.RECOMMENDATIONS, False)
                shares = profile_shares(raw_profile) if profile else None
                fresh = asyncio.run(offered_load(settings, browsing_events(catalog, int(rate * seconds), 3), rate))
        finally:
            stop_broker(broker)
    print(f"## Pipeline ({machine_summary()})\n")
    print(table(["path", "events", "events/s", "ratio to pass-through"],
                [["raw aiokafka pass-through", count, f"{baseline:.0f}", "1.00"],
                 ["track_actions: table, interests, Qdrant, output", count, f"{pipeline:.0f}",
                  f"{pipeline / baseline:.2f}"]]))
    print()
    print(table(["offered load", "events", "p50 ms", "p95 ms", "p99 ms"],
                [[f"{rate} events/s for {seconds} s", int(rate * seconds)] +
                 [f"{fresh[key] * 1000:.0f}" for key in ("p50", "p95", "p99")]]))
    if shares:
        print()
        print(f"py-spy samples of the worker during the {count}-event throughput run:\n")
        print(table(["part of the worker", "share of samples"], shares))
