"""Scale-out: workers in one consumer group share the partitions; when one stops, the other
takes over its partitions and the user profiles stored on them, and no event goes unanswered.

Two real workers (same app id and topic prefix, their own web ports) share 4 partitions.
Every user first views items of three distant categories; then, while the leaving worker is
stopped in the middle of its users' stream, every user views a few more items of one category.
Checked on recs.user-recommendations:
  * every event has a recommendation (matched by source_event_id): none lost;
  * duplicates are counted and printed (at-least-once allows them; ``-rP`` shows the line);
  * every user's last recommendation still has 3 interests, and no recommendation shows an
    item the user acted on before: the profile moved with its partition (a profile rebuilt
    from the events after the handover alone would hold one category, so at most 2 interests).

Runs on the local broker, or on Apache Kafka in Docker with ``VR_TEST_BROKER=testcontainers``
(both through conftest's ``broker_url``). The local broker never expires a member whose
session has timed out (a killed worker, or the old id of a member that rejoined), so there
the test does what Kafka's session timeout would: see ``wait_for_sole_owner``.
"""
import os
import signal
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import httpx
import pytest
from kafka.partitioner.default import murmur2

from bench import chaos
from infra.local_stack import Worker, expire_members, group_member, isolated_settings
from recommender.demo_data import demo_catalog
from recommender.settings import Settings
from streams import topics
from streams.client import TopicReader, produce, profile_owners

ON_APACHE_KAFKA = os.environ.get("VR_TEST_BROKER") == "testcontainers"
# On the local broker, runs before the fixes in streams/faust_fixes.py lost 1-50 of the 360
# events at the handover, and the survivor's rejoin could hang its table recovery (fix 4; in a
# clean-clone CI run 120 of 360 went unanswered): docs/scale.md.
# Timeouts are generous because the host is shared: at load averages of 15-35 on 2 cores
# one run took 9-11 minutes, past pytest's default limit here (600 s).
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]
PARTITIONS = 4
CATALOG_SIZE = 60
USERS = 40
# Far apart under the CNN (cross-category cosine about 0.5, below the 0.6 that merges two
# interests), so a user who viewed all three has exactly three interests.
CATEGORIES = ("Bag", "Sneaker", "Trouser")
ROUNDS_BEFORE = 2  # views of every category per user before the stop
VIEWS_AFTER = 3  # then views of one category per user, around and after the stop
EVENTS_PER_SECOND = 30


@pytest.fixture(scope="module")
def scale_catalog():
    return demo_catalog(CATALOG_SIZE)


def user_partition(user_id: str) -> int:
    """The partition of a key under Kafka's default partitioner (what every producer here uses)."""
    return (murmur2(user_id.encode()) & 0x7FFFFFFF) % PARTITIONS


def browsing(catalog) -> tuple[list[dict], list[dict]]:
    """Each user's views of all categories (before the stop), then of one category (after)."""
    by_category = {category: [p.product_id for p in catalog if p.category == category] for category in CATEGORIES}
    before, after = [], []
    for step in range(ROUNDS_BEFORE * len(CATEGORIES) + VIEWS_AFTER):
        for number in range(USERS):
            user = f"user-{number}"
            if step < ROUNDS_BEFORE * len(CATEGORIES):
                category, phase = CATEGORIES[step % len(CATEGORIES)], before
            else:
                category, phase = CATEGORIES[number % len(CATEGORIES)], after
            products = by_category[category]
            phase.append({"event_id": f"{user}-{step}", "user_id": user, "action": "view", "ts": 1_000.0 + step,
                          "product_id": products[(number + 7 * step) % len(products)]})
    return before, after


def owners_by_port(worker: Worker) -> dict[int, set[int]]:
    """Web port -> user-profile partitions held, as the group's assignment reads on ``worker``."""
    return {urlsplit(url).port: partitions
            for url, partitions in profile_owners(f"http://127.0.0.1:{worker.settings.web_port}").items()}


def wait_for_owners(worker: Worker, ports: set[int], timeout_s: float) -> dict[int, set[int]]:
    """Wait until the workers on ``ports``, and no others, hold all partitions between them."""
    deadline = time.monotonic() + timeout_s
    owners: dict[int, set[int]] = {}
    while time.monotonic() < deadline:
        owners = owners_by_port(worker)
        if set(owners) == ports and set().union(*owners.values()) == set(range(PARTITIONS)):
            return owners
        time.sleep(0.5)
    raise TimeoutError(f"partitions never settled on ports {ports}: last seen {owners}\n{worker.log_tail()}")


def wait_for_sole_owner(staying: Worker, timeout_s: float) -> bool:
    """Wait until ``staying`` holds every partition. Returns whether stale members had to be
    expired for that.

    When a member's commit is refused during the rebalance, it rejoins under a new id, and
    Kafka expires the old id once its session times out (10 s here), as it does a killed
    member. The local broker never expires a member, so its group would wait for the old id
    for ever (docs/scale.md, run 17): after a minute the test expires them itself, as Kafka
    would have long before.
    """
    ports = {staying.settings.web_port}
    if ON_APACHE_KAFKA:
        wait_for_owners(staying, ports, timeout_s)
        return False
    try:
        wait_for_owners(staying, ports, timeout_s=60)
        return False
    except TimeoutError:
        expire_members(staying.settings)
    wait_for_owners(staying, ports, timeout_s)
    return True


def produce_paced(settings: Settings, events: list[dict]) -> None:
    for start in range(0, len(events), 10):
        produce(settings, topics.ACTIONS, [(e["user_id"], e) for e in events[start:start + 10]])
        time.sleep(10 / EVENTS_PER_SECOND)


def wait_for_answers(reader: TopicReader, event_ids: set[str], timeout_s: float) -> set[str]:
    """Read recommendations until every event has one or time runs out; returns the unanswered."""
    deadline = time.monotonic() + timeout_s
    unanswered = set(event_ids) - {m["source_event_id"] for m in reader.messages}
    while unanswered and time.monotonic() < deadline:
        unanswered -= {m["source_event_id"] for m in reader.poll(0.5)}
    return unanswered


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_survivor_takes_over_partitions_and_profiles_without_losing_events(broker_url, scale_catalog, tmp_path,
                                                                           monkeypatch, stop_signal):
    # Faust reads these from the environment: a killed worker's partitions move once its
    # session times out (60 s by default), and heartbeats must come more often than that.
    monkeypatch.setenv("BROKER_SESSION_TIMEOUT", "10")
    monkeypatch.setenv("BROKER_HEARTBEAT_INTERVAL", "1")
    settings = isolated_settings(broker_url, kafka_partitions=PARTITIONS)
    topics.create_topics(settings)
    # One consumer group: same app id and topic prefix; each worker its own web port and store.
    staying = Worker(settings, tmp_path / "staying.log")
    leaving = Worker(group_member(settings), tmp_path / "leaving.log")
    recommendations = TopicReader(settings, topics.RECOMMENDATIONS)
    try:
        with ThreadPoolExecutor(2) as pool:  # a generous start timeout: the host is shared
            list(pool.map(lambda worker: worker.start(timeout_s=180), (staying, leaving)))
        produce(settings, topics.CATALOG, [(p.product_id, p.listing()) for p in scale_catalog])
        similar = TopicReader(settings, topics.SIMILAR_ITEMS)
        wanted = {p.product_id for p in scale_catalog}
        similar.until(lambda messages: wanted <= {m["product_id"] for m in messages}, timeout_s=600)
        similar.close()
        owners = wait_for_owners(staying, {staying.settings.web_port, leaving.settings.web_port}, timeout_s=30)
        moving = owners[leaving.settings.web_port]

        before, after = browsing(scale_catalog)
        produce(settings, topics.ACTIONS, [(e["user_id"], e) for e in before])
        assert not wait_for_answers(recommendations, {e["event_id"] for e in before}, timeout_s=300)
        # Either worker answers for every user: it forwards a request to the owner of the
        # user's partition, whose profile holds all three interests.
        for user in sorted({e["user_id"] for e in before}):
            answer = httpx.get(f"http://127.0.0.1:{leaving.settings.web_port}/api/users/{user}/recommendations",
                               timeout=60).json()
            assert answer["interests"] == len(CATEGORIES), (user, user_partition(user), moving, answer)

        # The leaving worker is stopped in the middle of its users' stream. The survivor is
        # idle with its offsets committed at that instant: the local broker rejects a commit
        # sent during the rebalance and the group never settles (docs/scale.md); Apache
        # Kafka accepts it. Its users' events follow once it owns every partition.
        moved_users = {e["user_id"] for e in before if user_partition(e["user_id"]) in moving}
        assert moved_users, "the leaving worker owns no user: nothing would move"
        stream = threading.Thread(target=produce_paced,
                                  args=(settings, [e for e in after if e["user_id"] in moved_users]))
        stream.start()
        chaos.wait_until_committed(settings, timeout_s=30, partitions=set(range(PARTITIONS)) - moving)
        leaving.stop(stop_signal)
        stream.join()
        expired = wait_for_sole_owner(staying, timeout_s=120)
        produce(settings, topics.ACTIONS, [(e["user_id"], e) for e in after if e["user_id"] not in moved_users])

        events = before + after
        unanswered = wait_for_answers(recommendations, {e["event_id"] for e in events}, timeout_s=300)
        duplicates = sum(count - 1 for count in Counter(m["source_event_id"] for m in recommendations.messages).values())
        print(f"{stop_signal.name}: {len(events)} events, {len(unanswered)} lost, {duplicates} duplicates; "
              f"{len(moved_users)} of {USERS} users moved with partitions {sorted(moving)}; "
              f"stale members expired by the test: {expired}")

        # Profiles first, so a run that loses events still shows whether they moved.
        acted_on_before: dict[str, set[str]] = {}  # event id -> products its user acted on earlier
        acted_on: dict[str, set[str]] = {}
        for event in (e for e in events if e["event_id"] not in unanswered):
            acted_on_before[event["event_id"]] = set(acted_on.get(event["user_id"], ()))
            acted_on.setdefault(event["user_id"], set()).add(event["product_id"])
        for message in recommendations.messages:
            shown = {item["product_id"] for item in message["items"]}
            assert not shown & acted_on_before[message["source_event_id"]], message
        last = {m["user_id"]: m for m in recommendations.messages}  # a user's outputs arrive in order
        forgetful = {user: m["interests"] for user, m in last.items() if m["interests"] != len(CATEGORIES)}
        assert not forgetful, f"users whose profile lost earlier interests (user: interests): {forgetful}"
        assert not unanswered, f"{len(unanswered)} events without a recommendation, e.g. {sorted(unanswered)[:5]}"
    finally:
        recommendations.close()
        for worker in (leaving, staying):
            worker.stop()
