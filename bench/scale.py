"""Browsing events per second per worker: one worker, then two in one consumer group, same stream.

``python -m bench.scale [--events 2000] [--rounds 3]`` starts the local broker, embeds the
demo catalog once (a real worker runs the CNN), then for each configuration gives a fresh
set of topics the embedded catalog (on catalog.vectors, as a worker would have written
it), starts the workers, warms them up with a few users' first events, and times a burst of
browsing events from the first one sent to the last recommendation read back. The two
configurations take turns in each round and the median per configuration is reported
(``bench.timing``: other engineers' jobs come and go on this shared host).
"""
import argparse
import random
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.timing import machine_summary, table
from infra.local_broker import free_port, start_broker, stop_broker
from infra.local_stack import Worker, group_member, isolated_settings
from recommender.demo_data import DemoProduct, demo_catalog, shopping_session
from streams import topics
from streams.client import TopicReader, produce, profile_owners

PARTITIONS = 4
CATALOG_SIZE = 100
USERS = 200
CATEGORIES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
              "Ankle boot"]


def embedded_catalog(broker_url: str, catalog: list[DemoProduct], log_dir: Path) -> list[tuple[str, dict]]:
    """The catalog.vectors messages of the demo catalog, written by a worker running the CNN."""
    settings = isolated_settings(broker_url, kafka_partitions=PARTITIONS)
    topics.create_topics(settings)
    worker = Worker(settings, log_dir / "catalog.log").start(timeout_s=300)
    try:
        produce(settings, topics.CATALOG, [(p.product_id, p.listing()) for p in catalog])
        reader = TopicReader(settings, topics.CATALOG_VECTORS)
        vectors = reader.until(lambda messages: len(messages) >= len(catalog), timeout_s=600)
        reader.close()
    finally:
        worker.stop()
    return [(message["product_id"], message) for message in vectors]


def browsing(catalog: list[DemoProduct], events: int, seed: int) -> list[dict]:
    """``events`` views, clicks and purchases by USERS simulated shoppers, interleaved in time."""
    rng = random.Random(seed)
    per_user = -(-events // USERS)
    sessions = [shopping_session(f"{seed}-user-{n}", catalog, rng.sample(CATEGORIES, 2), per_user, rng, 1_000.0)
                for n in range(USERS)]
    return [session[step] for step in range(per_user) for session in sessions][:events]


def events_per_second(broker_url: str, vectors: list[tuple[str, dict]], catalog: list[DemoProduct],
                      workers: int, events: int, seed: int, log_dir: Path) -> float:
    """Browsing events per second through ``workers`` workers of one consumer group."""
    settings = isolated_settings(broker_url, kafka_partitions=PARTITIONS)
    topics.create_topics(settings)
    group = [Worker(group_member(settings), log_dir / f"w{workers}-{seed}-{n}.log") for n in range(workers)]
    recommendations = TopicReader(settings, topics.RECOMMENDATIONS)
    similar = TopicReader(settings, topics.SIMILAR_ITEMS)
    try:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(lambda worker: worker.start(timeout_s=300), group))
        # The catalog comes once the group has formed: the local broker rejects a commit
        # made during a rebalance and the group then never settles (docs/scale.md), and
        # a worker with nothing consumed yet has nothing to commit.
        wait_for_group(group, timeout_s=120)
        produce(settings, topics.CATALOG_VECTORS, vectors)
        similar.until(lambda messages: len({m["product_id"] for m in messages}) >= len(vectors), timeout_s=600)
        # Warm-up: 40 users' first events reach every partition (store, caches, first profiles).
        warm_up = browsing(catalog, 40, seed + 1)
        produce(settings, topics.ACTIONS, [(e["user_id"], e) for e in warm_up])
        wait_for_answers(recommendations, {e["event_id"] for e in warm_up}, timeout_s=600)
        burst = browsing(catalog, events, seed)
        started = time.perf_counter()
        produce(settings, topics.ACTIONS, [(e["user_id"], e) for e in burst])
        wait_for_answers(recommendations, {e["event_id"] for e in burst}, timeout_s=1200)
        return events / (time.perf_counter() - started)
    finally:
        recommendations.close()
        similar.close()
        for worker in group:
            worker.stop()


def wait_for_group(group: list[Worker], timeout_s: float) -> None:
    """Wait until every worker of the group holds some of the partitions."""
    deadline = time.monotonic() + timeout_s
    while len(profile_owners(f"http://127.0.0.1:{group[0].settings.web_port}")) < len(group):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(group)} workers never shared the partitions")
        time.sleep(0.5)


def wait_for_answers(reader: TopicReader, event_ids: set[str], timeout_s: float) -> None:
    reader.until(lambda messages: event_ids <= {m["source_event_id"] for m in messages}, timeout_s)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000, help="browsing events timed per run")
    parser.add_argument("--rounds", type=int, default=3, help="runs per configuration, taking turns")
    args = parser.parse_args()
    print(machine_summary())
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as work:
        work_dir = Path(work)
        port = free_port()
        broker = start_broker(work_dir / "broker", port)
        try:
            broker_url = f"kafka://127.0.0.1:{port}"
            catalog = demo_catalog(CATALOG_SIZE)
            vectors = embedded_catalog(broker_url, catalog, work_dir)
            rates: dict[int, list[float]] = {1: [], 2: []}
            for round_number in range(args.rounds):
                for workers in rates:
                    rate = events_per_second(broker_url, vectors, catalog, workers, args.events,
                                             seed=100 * round_number + workers, log_dir=work_dir)
                    rates[workers].append(rate)
                    print(f"round {round_number + 1}: {workers} worker(s) {rate:.1f} events/s", flush=True)
        finally:
            stop_broker(broker)
    median = {workers: statistics.median(values) for workers, values in rates.items()}
    print(f"\n{args.events} browsing events, {USERS} users, {PARTITIONS} partitions, {CATALOG_SIZE} products, "
          f"median of {args.rounds} rounds\n")
    print(table(["workers", "events/s", "events/s per worker", "runs (events/s)"],
                [[workers, median[workers], median[workers] / workers, ", ".join(f"{r:.1f}" for r in values)]
                 for workers, values in rates.items()]))
    print(f"\nspeed-up with 2 workers: {median[2] / median[1]:.2f}x")


if __name__ == "__main__":
    main()
