"""The retry helper agents wrap store and broker calls in, against a port that refuses connections."""
import asyncio
import socket

import pytest
from qdrant_client.http.exceptions import UnexpectedResponse

from infra.local_broker import free_port
from recommender.settings import Settings
from recommender.store import ProductStore
from streams.handlers import Rejected
from streams.retry import Backoff, Outage, is_transient, retry_transient

FAST = Backoff(first_s=0.01, longest_s=0.04)


def refused_error() -> BaseException:
    """What qdrant-client raises when the server's port is closed."""
    with pytest.raises(Exception) as caught:
        ProductStore.from_settings(Settings(qdrant_url=f"http://127.0.0.1:{free_port()}"), "m", 4)
    return caught.value


def test_a_closed_qdrant_port_is_transient_and_bad_requests_are_not():
    assert is_transient(refused_error())
    assert is_transient(UnexpectedResponse(503, "Service Unavailable", b"", {}))
    assert not is_transient(UnexpectedResponse(400, "Bad Request", b"wrong vector size", {}))
    assert not is_transient(Rejected("unknown product_id 'x'"))
    assert not is_transient(ValueError("a bug"))


def test_delays_double_up_to_the_cap_with_jitter():
    delays = Backoff(first_s=1.0, longest_s=8.0).delays()
    observed = [next(delays) for _ in range(6)]
    for delay, nominal in zip(observed, [1, 2, 4, 8, 8, 8]):
        assert nominal / 2 <= delay <= nominal


def test_retries_until_the_store_answers_and_reports_the_outage_meanwhile():
    outage = Outage("vector store")
    attempts, reasons_seen = [], []

    async def store_call():
        attempts.append(1)
        reasons_seen.append(outage.reason)
        if len(attempts) <= 3:
            with socket.create_connection(("127.0.0.1", free_port()), timeout=1):
                pass  # never reached: nothing listens there
        return "stored"

    assert asyncio.run(retry_transient(store_call, outage, FAST)) == "stored"
    assert len(attempts) == 4
    assert reasons_seen[0] is None
    assert reasons_seen[1] == "vector store unavailable (ConnectionRefusedError), retrying"
    assert outage.reason is None  # healthy again


def test_errors_that_are_not_transient_are_raised_at_once():
    outage = Outage("vector store")
    attempts = []

    async def bad_event():
        attempts.append(1)
        raise Rejected("unknown product_id 'x'")

    with pytest.raises(Rejected):
        asyncio.run(retry_transient(bad_event, outage, FAST))
    assert len(attempts) == 1 and outage.reason is None
