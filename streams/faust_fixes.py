"""Five fixes for faust-streaming 0.12.1 losing events around restarts and rebalances.

1. Acks that commit offsets of events no agent processed.

While flow control is off (a worker starting and recovering its tables, a rebalance, a
shutdown) or an event was fetched in an older group generation, a stream skips the event
and acks it "so that lag does not grow". That ack counts towards the offset the consumer
commits next, so the event is never read again: a worker stopped with SIGTERM commits past
the events still in its stream buffers, and a restarted worker can commit past events it
skipped during recovery. Measured here before this fix: the handover test (tests/test_scale.py)
lost 45-50 of 360 events, all fetched by the worker being stopped and never answered.

Here such an ack releases the message (so shutdown and rebalances do not wait for it) but
does not move the committed offset: the event is read again from there, by this worker
after its seek to the committed offsets or by the partition's next owner. An event that
was processed and is only acked during such a window may therefore be processed twice,
which at-least-once delivery allows; none is skipped.

2. A batch fetched before a seek moving the read offset past the sought one.

After a rebalance or recovery, faust seeks each partition back to its committed offset and
sets the partition's read offset (below which the fetch loop drops messages as already
delivered) to that offset. The fetch loop (``Consumer._drain_messages``) may at that moment
still be delivering a batch fetched before the seek; when the message in flight is handed
over, the loop sets the read offset to that message's offset, overwriting the seek's. The
events re-read from the committed offset then fall below it and are dropped: never
processed, never acked, so that partition's commits also stop there. Measured here before
this fix: a restart after SIGKILL lost 111 of 1,000 events, all of one partition, offsets
212-322 (committed offset 212); the restarted worker's log showed 786-1,382 such drops per
run (``DEVLOG=1``: "DROPPED MESSAGE").

The same drop happens without a batch in flight: faust sets the read offsets only once it
has sought every partition (``Consumer.perform_seek``), and a batch re-read from a partition
sought first can arrive before that, while the partition's read offset is still the last
one delivered before the seek (a broker-restart run's log showed 52 such drops). Those events were
delivered before, but if that was just before a rebalance they were thrown out of the
agents' queues unprocessed.

Here aiokafka's fetcher, in the consumer thread, counts the seeks of each partition and
notes the counts as of each fetch. The fetch loop then skips messages of a partition sought
since their batch was fetched (the seek moved the fetch position back, so they come again,
or they lie before the new position), and the first batch fetched after a seek sets its
partition's read offset to the seek's target before its first message is handed over.

3. Events delivered while a recovery finishes, discarded when flow resumes.

A worker recovering its tables resumes flow to read the changelogs, then resumes its input
partitions, seeks them to the committed offsets and resumes flow again; that last resume
(mode's ``FlowControlEvent.resume``) empties every agent's queue. The events fetched and
queued in between, often the very events re-read from the committed offsets, are thrown
away unacked while later ones go on, and nothing reads them again. Measured here before
this fix, with fixes 1 and 2: the broker-restart test lost events in 5 of 9 runs (3-88, a
run of offsets on one partition, whose committed offset stuck at the first). Here resuming
flow keeps what is queued, so events are processed in partition order; events processed in
that window come again after the seek, which at-least-once delivery allows. Queues are still
emptied when flow stops at a rebalance (``FlowControlEvent.clear``). Re-reading the
discarded events instead (a seek before the next fetch) lost nothing either, but answered
events after a discarded one before it: a purchase re-read after the views that followed it.

4. A batch fetched across a rebalance, discarded with its changelog records.

A fetch still waiting when a rebalance stops the flow can return after the new assignment's
table recovery has sought the changelogs to where each table stands, with changelog records
from there. Flow is still stopped, so faust's ``Consumer.getmany`` drops the whole batch and
seeks every partition back to its committed offset; but changelogs have no committed offset,
so theirs stay past the dropped records. The recovery then waits for ever for records
below the highwater that nothing will fetch again ("No event received for active tp ...
since recovery start"), and the worker answers nothing more. Measured here before this fix:
the broker-restart test hung this way in 1 of 8 runs (300 of 600 events unanswered), the
two-worker SIGKILL test once in CI (120 of 360), and forced rejoins under load (what
``python -m bench.chaos rejoins`` does) once in about 260 rejoins. Here such a batch's partitions are
sought back to its first record before it is dropped, unless a seek moved them after the
fetch (then that seek's position stands) or their position is already at or before it.

5. Records of paused partitions, skipped without a word.

faust pauses a partition only in its own books (its set of active partitions; aiokafka goes
on fetching it) and hands aiokafka that very set to pick buffered records from, which
aiokafka reads again each time it looks while it waits. A recovery pauses the input
partitions; once it has read the changelogs it pauses those too, and the set is empty for a
moment. aiokafka takes an empty set for "every partition", so a fetch waiting then returns
records of paused partitions, and ``Consumer.getmany`` skips them silently, their fetch
position already past them. If the recovery's seek back to the committed offsets came first
(the order varies), nothing reads them again, and the partition's next event makes faust
count the skipped offsets as a gap, that is as done. Seen here in a broker-restart run's
trace (``DEVLOG=1`` plus a trace of every fetch): the first batch after the restart (offsets
135-181 and 165-217 of the two partitions) came back while its partitions were paused, just
before the seek, so nothing was lost that time; a CI run lost a batch of that shape (47
events, offsets 135-181 of one partition). Here aiokafka gets a copy of the set as it is
when the fetch starts, and the partitions of a returned batch that faust will not deliver
(paused meanwhile, or the flow stopped as in fix 4) are sought back as in fix 4.
"""

from collections import Counter

from aiokafka.consumer.fetcher import Fetcher

from faust.transport.consumer import Consumer, ThreadDelegateConsumer
from mode.utils.futures import notify
from mode.utils.queues import FlowControlEvent

_ack_counting_towards_commit = Consumer.ack


def _ack_skipping_nothing(self: Consumer, message) -> bool:
    app = self.app
    if app.flow_control.is_active() and message.generation_id == app.consumer_generation_id:
        return _ack_counting_towards_commit(self, message)
    if not message.acked:
        message.acked = True
        self._unacked_messages.discard(message)
        notify(self._waiting_for_ack)
    return False


Consumer.ack = _ack_skipping_nothing


_fetcher_init = Fetcher.__init__
_seek_fetch_position = Fetcher.seek_to
_fetched_records = Fetcher.fetched_records


def _fetcher_init_with_seek_ledger(self: Fetcher, *args, **kwargs) -> None:
    _fetcher_init(self, *args, **kwargs)
    self.seeks = Counter()  # per partition, as done in the consumer thread
    self.seek_targets = {}
    self.seeks_at_last_fetch = Counter()
    self.seeks_read_on_from = Counter()  # seeks whose target faust's read offset has taken


def _seek_counted(self: Fetcher, tp, offset: int) -> None:
    _seek_fetch_position(self, tp, offset)
    self.seeks[tp] += 1
    self.seek_targets[tp] = offset


async def _fetched_records_noting_seeks(self: Fetcher, *args, **kwargs):
    records = await _fetched_records(self, *args, **kwargs)
    self.seeks_at_last_fetch = self.seeks.copy()
    return records


Fetcher.__init__ = _fetcher_init_with_seek_ledger
Fetcher.seek_to = _seek_counted
Fetcher.fetched_records = _fetched_records_noting_seeks

_fetch_batch = Consumer.getmany


async def _fetch_batch_without_stale_messages(self: Consumer, timeout: float):
    fetcher = self._thread._ensure_consumer()._fetcher
    seeks_at_fetch = None
    async for tp, message in _fetch_batch(self, timeout):
        if seeks_at_fetch is None:  # the batch has arrived: the thread noted the counts before handing it over
            seeks_at_fetch = fetcher.seeks_at_last_fetch
        if fetcher.seeks[tp] != seeks_at_fetch[tp]:
            continue  # sought since the fetch: what is still wanted comes again from the new position
        if fetcher.seeks_read_on_from[tp] != seeks_at_fetch[tp]:  # the first batch since a seek
            target = fetcher.seek_targets[tp]
            self._read_offset[tp] = target if target else None
            fetcher.seeks_read_on_from[tp] = seeks_at_fetch[tp]
        yield tp, message


Consumer.getmany = _fetch_batch_without_stale_messages


_wait_next_batch = Consumer._wait_next_records


def _seek_back_unless_sought(consumer, first_offsets) -> dict:  # in the consumer thread
    fetcher, assigned = consumer._fetcher, consumer.assignment()
    sought_back = {}
    for tp, offset in first_offsets.items():
        if tp in assigned and fetcher.seeks[tp] == fetcher.seeks_at_last_fetch[tp]:
            state = consumer._subscription.subscription.assignment.state_value(tp)
            if state.has_valid_position and state.position > offset:  # only ever back, never past anything
                consumer.seek(tp, offset)
                sought_back[tp] = offset
    return sought_back


def _delivered(consumer: Consumer, tp, active_partitions) -> bool:
    """Whether ``Consumer.getmany`` hands this partition's records to the agents (its own test)."""
    return consumer.flow_active and (active_partitions is None or tp in active_partitions
                                     or tp in consumer._buffered_partitions)


async def _wait_next_batch_kept_if_dropped(self: Consumer, timeout: float):
    records, active_partitions = await _wait_next_batch(self, timeout)
    first_offsets = {tp: batch[0].offset for tp, batch in (records or {}).items()
                     if not _delivered(self, tp, active_partitions)}
    if first_offsets:  # getmany drops these records: have them fetched again
        sought_back = await self._thread.call_thread(_seek_back_unless_sought, self._thread._ensure_consumer(),
                                                     first_offsets)
        self.log.dev("Records not delivered (flow stopped or partition paused); sought back %r", sought_back)
    return records, active_partitions


Consumer._wait_next_records = _wait_next_batch_kept_if_dropped

_fetch_through_thread = ThreadDelegateConsumer._getmany


async def _fetch_partitions_active_at_start(self: ThreadDelegateConsumer, active_partitions, timeout: float):
    snapshot = None if active_partitions is None else set(active_partitions)
    return await _fetch_through_thread(self, snapshot, timeout)


ThreadDelegateConsumer._getmany = _fetch_partitions_active_at_start


def _resume_keeping_queued_events(self: FlowControlEvent) -> None:
    self._suspend.clear()
    self._resume.set()


FlowControlEvent.resume = _resume_keeping_queued_events
