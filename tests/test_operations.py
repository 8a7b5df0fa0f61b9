"""Operational endpoints of a running worker: consumer lag on /metrics."""
import time

import httpx
import pytest

from streams import topics

pytestmark = pytest.mark.integration


def test_metrics_report_consumer_lag_of_assigned_input_partitions(shop):
    settings, _, _ = shop
    catalog_topic = topics.topic_name(topics.CATALOG, settings)
    deadline = time.monotonic() + 30  # the lag timer runs every 5 s
    while True:
        lag_lines = [line for line in httpx.get(f"http://127.0.0.1:{settings.web_port}/metrics").text.splitlines()
                     if line.startswith("vr_consumer_lag{") and f'topic="{catalog_topic}"' in line]
        if lag_lines or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert len(lag_lines) == settings.kafka_partitions, lag_lines
    assert all(float(line.rsplit(" ", 1)[1]) == 0 for line in lag_lines), lag_lines  # everything is indexed
