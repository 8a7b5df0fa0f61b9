"""A pause after an empty fetch that the broker answered at once, so that an idle worker idles.

Apache Kafka holds a fetch that finds no new records for up to its max wait (faust asks for
1.5 s) and answers as soon as records arrive, so an idle consumer costs next to nothing. The
local development broker (noida-db) answers at once, and aiokafka then fetches again
straight away: an idle worker used a whole core of this 2-core host (BENCHMARKS.md, "Idle
worker"), starving the processes that have work. With the pause, an empty answer that came
back sooner than the max wait is followed by a short sleep before that broker is asked
again. On Kafka nothing changes; on the local broker a new event waits up to the pause
longer to be fetched.
"""
import asyncio
import time

from aiokafka.consumer.fetcher import Fetcher

_fetch_from_node = Fetcher._proc_fetch_request


def pause_idle_fetches(pause_s: float) -> None:
    """Patch every aiokafka consumer of this process (0 restores aiokafka's own fetch)."""
    async def fetch_pausing_when_answered_empty_at_once(self: Fetcher, assignment, node_id, request) -> bool:
        sent = time.monotonic()
        got_records = await _fetch_from_node(self, assignment, node_id, request)
        if not got_records and time.monotonic() - sent < self._fetch_max_wait_ms / 1000:
            try:
                await asyncio.sleep(pause_s)
            except asyncio.CancelledError:  # unassigned or closing: return as aiokafka's fetch does
                return False
        return got_records

    Fetcher._proc_fetch_request = fetch_pausing_when_answered_empty_at_once if pause_s > 0 else _fetch_from_node
