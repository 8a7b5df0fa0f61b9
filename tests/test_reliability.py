"""Delivery guarantees through a real broker and real workers: replay, crash, broker and store outages.

Delivery is at-least-once: nothing may be lost, duplicates are allowed and counted, and
every output names the event it answers (``source_event_id``) so consumers can drop them.
The crash, broker-outage and rejoin runs are ``bench/chaos.py`` at a small size; ``python -m
bench.chaos crash --events 100000`` runs the long version.
"""
import math
import time

import httpx
import pytest

from bench import chaos
from infra.local_broker import free_port, start_broker, stop_broker
from infra.local_stack import expire_members, isolated_settings, running_worker
from recommender.demo_data import demo_catalog
from streams import topics
from streams.client import TopicReader, produce
from streams.events import (DeadLetter, IndexedProduct, PopularityScore, ProductActivity, Recommendations,
                            SearchResults, SimilarItems)

pytestmark = pytest.mark.integration


def test_every_output_type_names_its_source_event():
    for output in (IndexedProduct, SimilarItems, Recommendations, SearchResults, ProductActivity, PopularityScore,
                   DeadLetter):
        assert "source_event_id" in output.model_fields, output.__name__


def same_image(settings, first: str, second: str) -> bool:
    """Two listings of one photo: each is the other's nearest neighbour at cosine 1."""
    similar = httpx.get(f"http://127.0.0.1:{settings.web_port}/api/products/{first}/similar", params={"k": 5},
                        timeout=60).json()
    return any(item["product_id"] == second and item["score"] > 0.9999 for item in similar["items"])


def first_by_event(messages: list[dict], event_ids: set[str]) -> dict[str, dict]:
    """Each event's first answer. A worker may answer an event again after its start-up seek
    (at-least-once), from the profile as it is by then; the first answer is the one given in
    partition order, from the profile as of that event."""
    answers: dict[str, dict] = {}
    for message in messages:
        if message["source_event_id"] in event_ids:
            answers.setdefault(message["source_event_id"], message)
    return answers


def test_replaying_the_actions_into_a_fresh_worker_gives_the_same_recommendations(shop, catalog, tmp_path):
    settings, _, _ = shop
    events = chaos.browsing_events(catalog, users=6, count=60, seed=11, user_prefix="replay")
    wanted = {event["event_id"] for event in events}
    produce(settings, topics.ACTIONS, [(event["user_id"], event) for event in events])
    reader = TopicReader(settings, topics.RECOMMENDATIONS)
    reader.until(lambda ms: wanted <= {m["source_event_id"] for m in ms}, 300)
    reader.read_to_end()
    first_run = first_by_event(reader.messages, wanted)
    seen = len(reader.messages)

    # Same topics, new app id: a new consumer group that reads shopper.actions from offset 0,
    # an empty profile table and an empty store rebuilt from catalog.vectors.
    fresh = isolated_settings(settings.kafka_broker, topic_prefix=settings.topic_prefix)
    with running_worker(fresh, tmp_path):
        reader.until(lambda ms: wanted <= {m["source_event_id"] for m in ms[seen:]}, 600)
    replay = first_by_event(reader.messages[seen:], wanted)
    reader.close()

    for event_id in wanted:
        before, after = first_run[event_id], replay[event_id]
        assert (after["strategy"], after["interests"]) == (before["strategy"], before["interests"]), event_id
        assert len(after["items"]) == len(before["items"]), event_id
        for old, new in zip(before["items"], after["items"]):
            # The replay re-embedded the catalog: scores agree to float noise, and two
            # products with the same image (other tests list copies of catalog photos) tie
            # and may swap places.
            assert math.isclose(new["score"], old["score"], abs_tol=1e-4), event_id
            assert new["product_id"] == old["product_id"] or \
                same_image(settings, old["product_id"], new["product_id"]), (event_id, old, new)
    users = {event["user_id"] for event in events}
    first_profiles, replayed_profiles = chaos.changelog_profiles(settings), chaos.changelog_profiles(fresh)
    assert {u: replayed_profiles[u] for u in users} == {u: first_profiles[u] for u in users}


def assert_nothing_lost(report: chaos.Report, users: int) -> None:
    print("\n" + "\n".join(report.lines()))  # shown with -rP
    assert report.lost == 0
    assert report.dead_letters == 0
    assert report.profiles_checked == users and report.profiles_wrong == 0
    assert report.store_points_compared >= users and report.store_points_different == []


# Both runs below lost events on faust-streaming 0.12.1 alone (up to 433 of 3,000 after a
# SIGKILL, 116 of 600 after a broker restart), in a timing-dependent way; streams/faust_fixes.py
# fixes the causes found (BENCHMARKS.md, "Reliability"). The counts print with -rP.
def test_a_worker_killed_mid_stream_loses_nothing_and_keeps_its_profiles(broker_url, tmp_path):
    # Sent faster than the worker answers, so the restarted worker finds a backlog to fetch
    # while its table recovers (on the code before 47d7df0, faust-streaming lost about 40% of
    # the events here: see BENCHMARKS.md).
    settings = isolated_settings(broker_url, **chaos.WORKER_KNOBS)
    report = chaos.run(settings, tmp_path, events=1000, users=100, catalog_size=60, per_second=500,
                       fault=chaos.WORKER_CRASH, timeout_s=240)
    assert_nothing_lost(report, users=100)
    assert report.purchased_items_shown == 0
    # Only events not yet committed when the worker died may be answered again (some of them
    # twice: the restarted worker may answer events before its recovery's seek takes it back).
    assert report.repeated_below_commit == 0


# The broker forgets the group, so the worker rejoins it. Not asserted (printed with -rP):
# after a rejoin some events are first answered after later events of their user, and such an
# answer can show an item the user had bought; that is open (BENCHMARKS.md, "Reliability").
# Before fix 5 in streams/faust_fixes.py a clean-clone CI run lost 47 events here (partition 1,
# offsets 135-181: the first batch after the outage); traces here showed such a batch skipped
# while the recovery had its partitions paused, the way fix 5 closes (BENCHMARKS.md, session 7).
def test_a_broker_restart_mid_stream_loses_nothing(tmp_path):
    data_dir, port = tmp_path / "broker", free_port()
    brokers = [start_broker(data_dir, port)]
    try:
        settings = isolated_settings(f"kafka://127.0.0.1:{port}", **chaos.WORKER_KNOBS)
        report = chaos.run(settings, tmp_path, events=600, users=60, catalog_size=60, per_second=15,
                           fault=chaos.broker_outage(8.0, data_dir, port, brokers), timeout_s=240)
    finally:
        stop_broker(brokers[-1], timeout_s=120)
    assert_nothing_lost(report, users=60)


# Each rejoin makes the worker recover its tables while events keep coming. Before fix 4 in
# streams/faust_fixes.py such a recovery could wait for ever for changelog records that a
# fetch had taken and faust had dropped (BENCHMARKS.md, "Reliability"): rare per rejoin, so
# this catches it only sometimes; `python -m bench.chaos rejoins` runs many more. Answers out
# of order are not asserted, as in the broker-restart test above.
def test_a_worker_removed_from_its_group_again_and_again_loses_nothing(broker_url, tmp_path):
    settings = isolated_settings(broker_url, **chaos.WORKER_KNOBS)
    report = chaos.run(settings, tmp_path, events=1200, users=60, catalog_size=60, per_second=20,
                       fault=chaos.rejoins(rounds=8), fault_at=0.05, timeout_s=240)
    assert_nothing_lost(report, users=60)


def wait_for(condition, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while not (result := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)
    return result


def test_while_the_store_is_down_events_wait_unacked_and_health_says_why(broker_url, tmp_path):
    catalog = demo_catalog(12)
    dead_store = f"http://127.0.0.1:{free_port()}"  # nothing listens there: connections are refused
    settings = isolated_settings(broker_url, qdrant_url=dead_store, text_embedder="none")
    actions = [{"event_id": f"held-{i}", "user_id": f"held-user-{i % 3}", "product_id": catalog[i].product_id,
                "action": "view", "ts": 1_000.0 + i} for i in range(9)]
    with running_worker(settings, tmp_path) as worker, httpx.Client(
            base_url=f"http://127.0.0.1:{settings.web_port}", timeout=30) as http:
        produce(settings, topics.CATALOG, [(p.product_id, p.listing()) for p in catalog])
        produce(settings, topics.ACTIONS, [(a["user_id"], a) for a in actions])

        def health_while_retrying():
            response = http.get("/health")
            return response if "retrying" in response.json().get("store", "") else None

        health = wait_for(health_while_retrying, 180, "/health to report the retries")
        assert health.status_code == 503
        assert health.json() == {"status": "degraded", "catalog_loaded": True,
                                 "store": "vector store unavailable (ResponseHandlingException), retrying"}
        answer = http.get(f"/api/products/{catalog[0].product_id}/similar")
        assert answer.status_code == 503
        assert answer.json() == {"error": "temporarily unavailable, try again shortly"}
        # The CNN needs no store: every listing was embedded, and the index agent holds them.
        TopicReader(settings, topics.CATALOG_VECTORS).until(lambda ms: len(ms) >= len(catalog), 180)
        time.sleep(10)  # several commit intervals of faust (2.8 s) while retrying
        assert not any(chaos.committed_offsets(settings, topics.CATALOG_VECTORS).values())
        assert not any(chaos.committed_offsets(settings, topics.ACTIONS).values())
        assert worker.alive()
    # Asked to stop while retrying, the worker waits for the held events (faust's wait_empty)
    # until the harness kills it after 30 s: nothing was committed, so nothing was acked.
    assert not any(chaos.committed_offsets(settings, topics.CATALOG_VECTORS).values())
    assert not any(chaos.committed_offsets(settings, topics.ACTIONS).values())
    expire_members(settings)  # the killed member's session never expires on noida-db
    letters, similar = TopicReader(settings, topics.DEAD_LETTERS), TopicReader(settings, topics.SIMILAR_ITEMS)
    assert not letters.poll(2.0) and not similar.poll(2.0)

    # The same consumer group with a store that answers (embedded): the held events are processed.
    working_store = settings.model_copy(update={"qdrant_url": None, "web_port": free_port()})
    with running_worker(working_store, tmp_path):
        similar.until(lambda ms: {m["product_id"] for m in ms} >= {p.product_id for p in catalog}, 300)
        TopicReader(settings, topics.RECOMMENDATIONS).until(
            lambda ms: {m["source_event_id"] for m in ms} >= {a["event_id"] for a in actions}, 300)
    assert not letters.poll(1.0)
