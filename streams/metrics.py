"""Prometheus metrics of the worker, served at /metrics."""
from prometheus_client import Counter, Gauge, Histogram

EVENTS = Counter("vr_events_total", "Input events handled, by agent and outcome", ["agent", "outcome"])
OUTPUTS = Counter("vr_outputs_total", "Messages sent to output topics", ["topic"])
FRESHNESS = Histogram("vr_event_to_output_seconds", "Event timestamp to its output being sent", ["agent"],
                      buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
STAGE_SECONDS = Histogram("vr_stage_seconds", "Time in one processing stage (a batch or one event)", ["stage"],
                          buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
CONSUMER_LAG = Gauge("vr_consumer_lag", "Messages behind the end of each assigned input partition",
                     ["topic", "partition"])
STORE_PRODUCTS = Gauge("vr_store_products", "Products in this worker's vector store")
