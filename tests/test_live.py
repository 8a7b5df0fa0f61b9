"""Live recommendation subscriptions (streams/live.py) without a broker."""
from streams import live
from streams.events import Recommendations


def recommendations(user_id: str, event_id: str) -> Recommendations:
    return Recommendations(user_id=user_id, source_event_id=event_id, strategy="interests", interests=1, items=[])


def test_each_subscriber_gets_only_its_users_lists_until_it_leaves():
    with live.subscription("ana") as ana, live.subscription("ana") as ana_again, live.subscription("ben") as ben:
        live.publish(recommendations("ana", "a1"))
        assert ana.get_nowait().source_event_id == "a1" and ana_again.get_nowait().source_event_id == "a1"
        assert ben.empty()
    live.publish(recommendations("ana", "a2"))  # nobody listens any more: nothing is kept
    assert "ana" not in live._subscribers


def test_a_subscriber_that_stops_reading_keeps_the_newest_lists():
    with live.subscription("ana") as updates:
        for number in range(live.MAX_QUEUED + 5):
            live.publish(recommendations("ana", f"a{number}"))
        kept = [updates.get_nowait().source_event_id for _ in range(updates.qsize())]
    assert kept == [f"a{number}" for number in range(5, live.MAX_QUEUED + 5)]


def test_closing_ends_every_stream():
    with live.subscription("ana") as ana, live.subscription("ben") as ben:
        live.close_all()
        assert ana.get_nowait() is None and ben.get_nowait() is None
