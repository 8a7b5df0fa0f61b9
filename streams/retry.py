"""Riding out outages of the vector store and the broker: retry with backoff, report while waiting.

Agents must never let a transient error escape: faust's ``take_events`` acks a batch in a
``finally`` block even when the agent body raises, so an escaped error loses the batch and
a retry on the next delivery never comes. Agents therefore retry here, for as long as the
outage lasts, and the worker's /health says "degraded" with the reason meanwhile.
"""
import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import httpx
from aiokafka.errors import KafkaError, KafkaTimeoutError
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

log = logging.getLogger(__name__)
T = TypeVar("T")


def is_transient(error: BaseException) -> bool:
    """True when the error says "unreachable or overloaded right now", not "this event is bad"."""
    if isinstance(error, UnexpectedResponse):  # Qdrant answered, with an error status
        return error.status_code is not None and (error.status_code >= 500 or error.status_code == 429)
    if isinstance(error, ResponseHandlingException):  # qdrant-client wraps the transport error
        return is_transient(error.source)
    if isinstance(error, KafkaTimeoutError):  # aiokafka calls it final, but the broker may come back
        return True
    if isinstance(error, KafkaError):
        return error.retriable
    return isinstance(error, (httpx.TransportError, ConnectionError, TimeoutError))


@dataclass(frozen=True)
class Backoff:
    """Exponential delays with jitter, so workers that failed together do not retry together."""

    first_s: float = 0.2
    longest_s: float = 30.0

    def delays(self) -> Iterator[float]:
        delay = self.first_s
        while True:
            yield delay * random.uniform(0.5, 1.0)
            delay = min(delay * 2, self.longest_s)


class Outage:
    """Why a resource is failing while calls to it are retried; ``reason`` is None when healthy."""

    def __init__(self, resource: str):
        self.resource = resource
        self.reason: str | None = None
        self._since = 0.0

    def begin(self, error: BaseException) -> None:
        if self.reason is None:
            self._since = time.monotonic()
        # The type only: messages may carry host names or credentials, and /health is unauthenticated.
        self.reason = f"{self.resource} unavailable ({type(error).__name__}), retrying"

    def end(self) -> None:
        if self.reason is not None:
            log.warning("%s is back after %.1f s", self.resource, time.monotonic() - self._since)
        self.reason = None


async def retry_transient(call: Callable[[], Awaitable[T]], outage: Outage, backoff: Backoff = Backoff()) -> T:
    """Await ``call()`` until it succeeds; transient errors are retried for ever, others raised."""
    delays = backoff.delays()
    while True:
        try:
            result = await call()
        except Exception as error:
            if not is_transient(error):
                raise
            outage.begin(error)
            delay = next(delays)
            log.warning("%s; next try in %.1f s", outage.reason, delay)
            await asyncio.sleep(delay)
        else:
            outage.end()
            return result
