"""Chaos runs on a real broker and real workers: ``python -m bench.chaos crash|broker-outage``.

crash          a worker is killed with SIGKILL in the middle of a stream of browsing events,
               then started again with the same consumer group.
broker-outage  the broker is stopped with SIGTERM mid-stream, then started again on the
               same port and data folder.
rejoins        the worker is removed from its consumer group again and again mid-stream, as
               Kafka does to a member whose session timed out: each time it rejoins and its
               tables recover while events keep coming.

Each prints events in, outputs (recs.user-recommendations), dead letters, duplicates (an
event answered more than once) and lost (an event never answered), and checks that the
user profiles on the changelog equal the profiles the events should have built. Then a
clean worker (a new consumer group, no fault) processes the same topics from the start,
and every product and user point of the two workers' stores is compared. The pytest
versions (tests/test_reliability.py) run the same code at a small size.
"""
import argparse
import json
import random
import signal
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import astuple, dataclass
from pathlib import Path

import numpy as np
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from infra.local_broker import free_port, start_broker, stop_broker
from infra.local_stack import Worker, expire_members, isolated_settings, scratch_store_dir
from models.embedders import resolve_spec
from recommender.demo_data import DemoProduct, demo_catalog, shopping_session
from recommender.interests import UserProfile
from recommender.settings import Settings
from recommender.store import ProductStore
from streams import topics
from streams.client import TopicReader, produce

# Small knobs keep one recommendation cheap (the embedded store filters in Python), so a
# 2-core machine gets through thousands of events; what is measured does not depend on them.
WORKER_KNOBS = {"profile_max_actions": 10, "max_interests": 2, "text_embedder": "none"}


@dataclass
class Report:
    events_in: int
    outputs: int
    dead_letters: int
    duplicates: int
    lost: int
    lost_at: list[str]  # where the lost events sit on shopper.actions: "partition:first-last" offsets
    uncommitted_at_fault: int | None  # answered but not committed when the worker died
    repeated_below_commit: int | None  # answered twice though committed before the fault: must be 0
    profiles_checked: int
    profiles_wrong: int
    purchased_items_shown: int  # outputs recommending an item the user had bought before that event
    answered_out_of_order: int  # events first answered after a later event of the same user
    seconds: float
    store_points_compared: int  # products and users in the store, against a clean run's store
    store_points_different: list[str]  # those that differ (must be none)

    def lines(self) -> list[str]:
        return [f"{name.replace('_', ' '):22} {round(value, 1) if isinstance(value, float) else value}"
                for name, value in vars(self).items()]


def browsing_events(catalog: list[DemoProduct], users: int, count: int, seed: int = 1,
                    user_prefix: str = "user") -> list[dict]:
    """``count`` shopper actions from ``users`` users who each browse two categories, interleaved."""
    rng = random.Random(seed)
    categories = sorted({product.category for product in catalog})
    per_user = -(-count // users)
    sessions = [shopping_session(f"{user_prefix}-{user}", catalog, rng.sample(categories, 2), per_user, rng,
                                 1_000_000.0) for user in range(users)]
    return [session[step] for step in range(per_user) for session in sessions][:count]


def expected_profiles(events: list[dict], max_actions: int) -> dict[str, UserProfile]:
    profiles: dict[str, UserProfile] = defaultdict(UserProfile)
    for event in events:
        profiles[event["user_id"]] = profiles[event["user_id"]].record(event["product_id"], event["action"],
                                                                       event["ts"], max_actions)
    return profiles


def purchased_before(events: list[dict]) -> dict[str, set[str]]:
    """Event id -> what its user had bought up to and including that event."""
    bought: dict[str, set[str]] = defaultdict(set)
    before = {}
    for event in sorted(events, key=lambda e: e["ts"]):
        if event["action"] == "purchase":
            bought[event["user_id"]].add(event["product_id"])
        before[event["event_id"]] = set(bought[event["user_id"]])
    return before


def answered_out_of_order(events: list[dict], outputs: list[dict]) -> int:
    """Events whose first answer came after the first answer to a later event of the same user.
    A user's answers share one partition (keyed by user), so their order on it is the order the
    worker answered in; duplicates re-answer old events, which is why only first answers count."""
    position = {event["event_id"]: index for index, event in enumerate(events)}
    latest: dict[str, int] = {}
    answered: set[str] = set()
    late = 0
    for message in outputs:
        event_id = message["source_event_id"]
        if event_id in answered or event_id not in position:
            continue
        answered.add(event_id)
        user = message["user_id"]
        late += position[event_id] < latest.get(user, -1)
        latest[user] = max(latest.get(user, -1), position[event_id])
    return late


class Feeder(threading.Thread):
    """Produces events in chunks at a steady rate; a chunk the broker refuses is sent again."""

    def __init__(self, settings: Settings, events: list[dict], per_second: float, chunk: int = 100):
        super().__init__(daemon=True)
        self.settings, self.events, self.per_second, self.chunk = settings, events, per_second, chunk
        self.sent = 0
        self.retries = 0
        self.last_error: Exception | None = None
        self.running = threading.Event()  # cleared: hold the next chunk back
        self.running.set()
        self.idle = threading.Event()  # set while no chunk is being sent

    def run(self) -> None:
        started = time.monotonic()
        for start in range(0, len(self.events), self.chunk):
            batch = self.events[start:start + self.chunk]
            self.idle.set()
            self.running.wait()
            self.idle.clear()
            while True:
                try:
                    produce(self.settings, topics.ACTIONS, [(event["user_id"], event) for event in batch])
                    break
                except Exception as error:  # broker down: at-least-once from the producer too
                    self.retries += 1
                    self.last_error = error
                    time.sleep(0.5)
            self.sent += len(batch)
            time.sleep(max(0.0, started + self.sent / self.per_second - time.monotonic()))
        self.idle.set()

    def hold(self) -> None:
        """Return once no chunk is in flight; no new one starts until ``release``."""
        self.running.clear()
        self.idle.wait()

    def release(self) -> None:
        self.running.set()


@dataclass
class Fault:
    hit: Callable[[Worker, Feeder], None]
    recover: Callable[[Worker], Worker]  # returns the worker that carries on
    broker_up_after_hit: bool  # then the group's committed offsets can be read between hit and recovery


def committed_offsets(settings: Settings, spec: topics.TopicSpec) -> dict[int, int]:
    """Partition -> the consumer group's committed offset on ``spec`` (partitions with none left out)."""
    admin = KafkaAdminClient(bootstrap_servers=topics.bootstrap_servers(settings), **topics.security_options(settings))
    try:
        offsets = admin.list_group_offsets({settings.app_id: None})[settings.app_id]
    finally:
        admin.close()
    name = topics.topic_name(spec, settings)
    return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == name and meta.offset >= 0}


def records(settings: Settings, topic: str, timeout_s: float = 120) -> list[ConsumerRecord]:
    """Every record on ``topic`` up to the end offsets seen now."""
    consumer = KafkaConsumer(bootstrap_servers=topics.bootstrap_servers(settings), enable_auto_commit=False,
                             group_id=None, **topics.security_options(settings))
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        if not partitions:
            return []
        consumer.assign(partitions)
        consumer.seek_to_beginning()
        ends = consumer.end_offsets(partitions)
        found: list[ConsumerRecord] = []
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < ends[tp] for tp in partitions):
            if time.monotonic() > deadline:
                raise TimeoutError(f"read {len(found)} records of {topic} in {timeout_s} s, not up to {ends}")
            found.extend(record for batch in consumer.poll(timeout_ms=500).values() for record in batch)
        return found
    finally:
        consumer.close()


def changelog_profiles(settings: Settings) -> dict[str, UserProfile]:
    """The latest profile per user on the worker's changelog topic (what a restart recovers)."""
    return {record.key.decode(): UserProfile.from_json(json.loads(record.value))
            for record in records(settings, f"{settings.app_id}-user-profiles-changelog")}


def input_offsets(settings: Settings, event_ids: set[str]) -> dict[str, tuple[int, int]]:
    """Event id -> (partition, offset) on shopper.actions."""
    return {event_id: (record.partition, record.offset)
            for record in records(settings, topics.topic_name(topics.ACTIONS, settings))
            if (event_id := json.loads(record.value)["event_id"]) in event_ids}


def offset_ranges(positions: Iterable[tuple[int, int]]) -> list[str]:
    """(partition, offset) positions as "partition:first-last" per run of consecutive offsets."""
    offsets = sorted(positions)
    runs: list[list[int]] = []  # [partition, first, last]
    for partition, offset in offsets:
        if runs and runs[-1][0] == partition and runs[-1][2] == offset - 1:
            runs[-1][2] = offset
        else:
            runs.append([partition, offset, offset])
    return [f"{partition}:{first}" + (f"-{last}" if last > first else "") for partition, first, last in runs]


def wait_until_committed(settings: Settings, timeout_s: float = 300, partitions: Iterable[int] | None = None) -> None:
    """Until the worker's group has committed every action already on shopper.actions (or on
    ``partitions`` of it). An action is answered before it is committed, and a worker that
    re-reads events after a restart writes its users' older states again meanwhile: only then
    is its store final."""
    consumer = KafkaConsumer(bootstrap_servers=topics.bootstrap_servers(settings), group_id=None,
                             **topics.security_options(settings))
    try:
        name = topics.topic_name(topics.ACTIONS, settings)
        wanted = consumer.partitions_for_topic(name) if partitions is None else partitions
        ends = {tp.partition: offset for tp, offset in consumer.end_offsets(
            [TopicPartition(name, p) for p in wanted]).items()}
    finally:
        consumer.close()
    deadline = time.monotonic() + timeout_s
    while not all((committed := committed_offsets(settings, topics.ACTIONS)).get(p, 0) >= end
                  for p, end in ends.items()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{settings.app_id} committed {committed} of {ends} in {timeout_s} s")
        time.sleep(0.5)


StoreState = dict[str, tuple[tuple, np.ndarray]]


def store_state(settings: Settings, user_ids: Iterable[str]) -> StoreState:
    """Every product point (payload, image vector) and the points of ``user_ids`` (latest list,
    time, interest vectors) in a stopped worker's embedded store."""
    spec = resolve_spec(settings.embedder)
    store = ProductStore.from_settings(settings, spec.name, spec.dim)
    try:
        state: StoreState = {}
        offset = None
        while True:
            page, offset = store.browse(256, offset)
            for product, vector in store.get_products([p.product_id for p in page], with_vectors=True).values():
                state[f"product {product.product_id}"] = (astuple(product), vector)
            if offset is None:
                break
        for user_id in user_ids:
            if (user := store.get_user(user_id)) is not None:
                state[f"user {user_id}"] = ((user["recommended"], user["updated_at"]), user["interests"])
        return state
    finally:
        store.client.close()


def clean_run_state(settings: Settings, log_dir: Path, user_ids: Iterable[str], timeout_s: float) -> StoreState:
    """The store of a worker that processes the same topics from the start with no fault:
    a new consumer group and an empty store of its own."""
    clean = settings.model_copy(update={"app_id": f"{settings.app_id}-clean", "web_port": free_port(),
                                        "qdrant_path": scratch_store_dir()})
    worker = Worker(clean, log_dir / "worker-clean.log").start(timeout_s=300)
    try:
        wait_until_committed(clean, timeout_s)
    finally:
        worker.stop()
    return store_state(clean, user_ids)


def different_points(first: StoreState, second: StoreState) -> list[str]:
    """Keys of points missing from either state or unequal (vectors to float32 rounding)."""
    return sorted(key for key in first.keys() | second.keys()
                  if key not in first or key not in second or first[key][0] != second[key][0]
                  or not np.allclose(first[key][1], second[key][1], atol=1e-6))


def load_catalog(settings: Settings, catalog: list[DemoProduct], timeout_s: float = 600) -> None:
    produce(settings, topics.CATALOG, [(p.product_id, p.listing()) for p in catalog])
    reader = TopicReader(settings, topics.SIMILAR_ITEMS)
    wanted = {p.product_id for p in catalog}
    reader.until(lambda messages: wanted <= {m["product_id"] for m in messages}, timeout_s)
    reader.close()


def progress(started: float, message: str) -> None:
    print(f"[{time.monotonic() - started:6.1f} s] {message}", flush=True)


def answered_ids(reader: TopicReader) -> Counter:
    return Counter(message["source_event_id"] for message in reader.messages)


def run(settings: Settings, log_dir: Path, events: int, users: int, catalog_size: int, per_second: float,
        fault: Fault, fault_at: float = 0.4, timeout_s: float = 1800) -> Report:
    """Stream ``events`` browsing events through a worker, hit it with ``fault`` once ``fault_at``
    of them are answered, recover, and wait until every event is answered (or ``timeout_s`` passes).
    Then compare the worker's store with a clean run's."""
    started = time.monotonic()
    topics.create_topics(settings)
    catalog = demo_catalog(catalog_size)
    worker = Worker(settings, log_dir / "worker.log").start()
    try:
        progress(started, f"worker up; indexing {catalog_size} products")
        load_catalog(settings, catalog)
        actions = browsing_events(catalog, users, events)
        wanted = {event["event_id"] for event in actions}
        outputs = TopicReader(settings, topics.RECOMMENDATIONS)
        progress(started, f"catalog indexed; streaming {len(actions)} events at {per_second:g}/s")
        streaming = time.monotonic()
        feeder = Feeder(settings, actions, per_second)
        feeder.start()
        while len(answered_ids(outputs).keys() & wanted) < fault_at * len(actions):
            outputs.poll(0.5)
        progress(started, f"fault at {len(answered_ids(outputs).keys() & wanted)} answered, {feeder.sent} sent")
        fault.hit(worker, feeder)
        uncommitted = committed = None
        if fault.broker_up_after_hit:
            outputs.read_to_end()
            committed = committed_offsets(settings, topics.ACTIONS)
            uncommitted = len(answered_ids(outputs).keys() & wanted) - sum(committed.values())
            progress(started, f"committed offsets (partition: offset) {committed}, {uncommitted} answered after them")
        worker = fault.recover(worker)
        progress(started, "recovered; waiting for every event to be answered")
        deadline = streaming + timeout_s
        next_report = time.monotonic() + 30
        while not wanted <= answered_ids(outputs).keys() and time.monotonic() < deadline:
            outputs.poll(0.5)
            if time.monotonic() > next_report:
                next_report += 30
                progress(started, f"{len(answered_ids(outputs).keys() & wanted)} answered, {feeder.sent} sent, "
                                  f"{feeder.retries} sends retried (last error: {feeder.last_error!r})")
        seconds = time.monotonic() - streaming
        progress(started, f"{len(answered_ids(outputs).keys() & wanted)} of {len(wanted)} answered")
        feeder.join()
        outputs.read_to_end()  # late duplicates
        letters = TopicReader(settings, topics.DEAD_LETTERS)
        letters.read_to_end()
        answered = answered_ids(outputs)
        lost = wanted - answered.keys()
        expected = expected_profiles(actions, settings.profile_max_actions)
        recovered = changelog_profiles(settings)
        bought = purchased_before(actions)
        shown_bought = sum(bool(bought[m["source_event_id"]] & {item["product_id"] for item in m["items"]})
                           for m in outputs.messages if m["source_event_id"] in bought)
        repeated = {event_id for event_id, count in answered.items() if count > 1} & wanted
        # One read of shopper.actions places both the lost and the repeated events.
        positions = input_offsets(settings, lost | repeated) if lost or repeated else {}
        repeated_below_commit = None if committed is None else sum(
            positions[event_id][1] < committed.get(positions[event_id][0], 0) for event_id in repeated)
        outputs.close()
        letters.close()
        counts = dict(events_in=len(wanted), outputs=len(outputs.messages), dead_letters=len(letters.messages),
                      duplicates=sum(count - 1 for count in answered.values()), lost=len(lost),
                      lost_at=offset_ranges(positions[event_id] for event_id in lost),
                      uncommitted_at_fault=uncommitted, repeated_below_commit=repeated_below_commit,
                      profiles_checked=len(expected),
                      profiles_wrong=sum(recovered.get(user) != profile for user, profile in expected.items()),
                      purchased_items_shown=shown_bought,
                      answered_out_of_order=answered_out_of_order(actions, outputs.messages), seconds=seconds)
        if not lost:  # (a worker stuck with events unanswered would never commit them all)
            wait_until_committed(settings)
    finally:
        worker.stop()
    users = set(expected)
    faulted = store_state(settings, users)
    # Printed now: on a long run the clean worker takes about as long again.
    progress(started, "; ".join(f"{name.replace('_', ' ')} {value}" for name, value in counts.items()))
    progress(started, f"store read: {len(faulted)} points; a clean worker processes the same topics")
    clean = clean_run_state(settings, log_dir, users, timeout_s)
    return Report(**counts, store_points_compared=len(faulted.keys() | clean.keys()),
                  store_points_different=different_points(faulted, clean))


def kill(worker: Worker, _: Feeder) -> None:
    worker.stop(signal.SIGKILL)
    expire_members(worker.settings)


def restart(worker: Worker) -> Worker:
    """The same settings, so the same app id: consumer group, changelog and committed offsets."""
    return Worker(worker.settings, worker.log_path.with_name("worker-restarted.log")).start(timeout_s=300)


WORKER_CRASH = Fault(hit=kill, recover=restart, broker_up_after_hit=True)


def broker_outage(outage_s: float, data_dir: Path, port: int, brokers: list) -> Fault:
    """Stop the broker (SIGTERM saves its data), wait, start it again on the same port and data;
    ``brokers`` holds the running broker process, last.

    noida-db 0.2.3 saves its data when told to stop, then goes on acknowledging writes for
    up to seconds while it shuts down, and those are lost (a plain producer lost 87 to 3,165
    acknowledged messages this way). A Kafka broker does not acknowledge what it has not
    written. So the clients are held still while the broker stops, then let go: the worker
    runs on through the outage, and the feeder retries."""
    def hit(worker: Worker, feeder: Feeder) -> None:
        feeder.hold()
        worker.process.send_signal(signal.SIGSTOP)
        time.sleep(0.5)  # requests already sent reach the broker before it is told to stop
        stop_broker(brokers[-1], timeout_s=120)
        worker.process.send_signal(signal.SIGCONT)
        feeder.release()

    def recover(worker: Worker) -> Worker:
        time.sleep(outage_s)
        brokers.append(start_broker(data_dir, port))
        return worker

    return Fault(hit, recover, broker_up_after_hit=False)


def rejoins(rounds: int, seconds_apart: tuple[float, float] = (2.0, 8.0), seed: int = 1) -> Fault:
    """Remove the worker from its group ``rounds`` times, a random few seconds apart, each time
    once its last recovery has finished. A recovery that has not finished a minute later ends
    the storm; the events it holds up then count as lost."""
    def hit(worker: Worker, _: Feeder) -> None:
        rng = random.Random(seed)
        for round_number in range(1, rounds + 1):
            time.sleep(rng.uniform(*seconds_apart))
            recoveries = worker.recoveries()
            expire_members(worker.settings)
            deadline = time.monotonic() + 60
            while worker.recoveries() == recoveries and time.monotonic() < deadline:
                time.sleep(0.2)
            if worker.recoveries() == recoveries:
                print(f"rejoin {round_number} of {rounds}: the recovery did not finish in 60 s", flush=True)
                return
        print(f"{rounds} rejoins, each recovered", flush=True)

    return Fault(hit, recover=lambda worker: worker, broker_up_after_hit=False)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__.splitlines()[0])
    parser.add_argument("scenario", choices=["crash", "broker-outage", "rejoins"])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--catalog", type=int, default=100, help="products in the catalog")
    parser.add_argument("--rate", type=float, default=200.0, help="events produced per second")
    parser.add_argument("--outage", type=float, default=10.0, help="broker-outage: seconds the broker is down")
    parser.add_argument("--rounds", type=int, default=60, help="rejoins: times the worker is removed from its group")
    parser.add_argument("--timeout", type=float, default=1800.0,
                        help="seconds from the first event sent until every event must be answered")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("stopped"))  # still stop the broker and workers
    work = Path(tempfile.mkdtemp(prefix="chaos-"))
    data_dir, port = work / "broker", free_port()
    brokers = [start_broker(data_dir, port)]
    settings = isolated_settings(f"kafka://127.0.0.1:{port}", **WORKER_KNOBS)
    fault = {"crash": WORKER_CRASH, "broker-outage": broker_outage(args.outage, data_dir, port, brokers),
             "rejoins": rejoins(args.rounds)}[args.scenario]
    fault_at = 0.05 if args.scenario == "rejoins" else 0.4  # a storm of rejoins needs the stream to go on
    try:
        report = run(settings, work, args.events, args.users, args.catalog, args.rate, fault, fault_at,
                     timeout_s=args.timeout)
    finally:
        stop_broker(brokers[-1])
    print(f"# chaos {args.scenario}: {args.events} events, {args.users} users, {args.catalog} products, "
          f"{args.rate:g}/s offered (logs in {work})")
    print("\n".join(report.lines()))


if __name__ == "__main__":
    main()
