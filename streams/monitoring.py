"""Consumer lag for /metrics: how many messages each assigned partition is behind its end."""
import logging

from aiokafka.errors import IllegalStateError
from faust.exceptions import ConsumerNotStarted

from streams import metrics
from streams.app import app

log = logging.getLogger(__name__)


@app.timer(5.0)
async def record_consumer_lag() -> None:
    """Highwater (next offset to be written) minus position (next offset to fetch), per partition.

    The highwater comes with fetch responses, so a partition not fetched yet is left out.
    Partitions this worker no longer owns after a rebalance disappear from the gauge.
    """
    consumer = app.consumer
    lags = {}
    try:
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            position = await consumer.position(tp)
            if highwater is not None and position is not None:
                lags[tp.topic, str(tp.partition)] = max(0, highwater - position)
    except (ConsumerNotStarted, IllegalStateError) as error:  # starting, or a rebalance took a partition away
        log.debug("consumer lag skipped this round: %r", error)
        return
    metrics.CONSUMER_LAG.clear()
    for (topic, partition), lag in lags.items():
        metrics.CONSUMER_LAG.labels(topic, partition).set(lag)
