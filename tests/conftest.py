"""Shared fixtures: a real Kafka-protocol broker and real Faust workers.

The broker is noida-db started from its binary (``infra/local_broker.py``). On a host with
Docker, ``VR_TEST_BROKER=testcontainers`` runs Apache Kafka in a container instead; the
tests use whichever through the same bootstrap address.
"""
import os
from collections.abc import Iterator

import pytest

from infra.local_broker import free_port, start_broker, stop_broker
from infra.local_stack import Worker, isolated_settings, running_worker, settings_env  # noqa: F401 (shared)
from recommender.demo_data import demo_catalog
from streams import topics
from streams.client import TopicReader, produce


@pytest.fixture(scope="session")
def broker_url(tmp_path_factory) -> Iterator[str]:
    if os.environ.get("VR_TEST_BROKER") == "testcontainers":
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as kafka:
            yield "kafka://" + kafka.get_bootstrap_server()
        return
    port = free_port()
    process = start_broker(tmp_path_factory.mktemp("broker"), port)
    try:
        yield f"kafka://127.0.0.1:{port}"
    finally:
        stop_broker(process)


@pytest.fixture(scope="session")
def catalog():
    return demo_catalog(200)


@pytest.fixture(scope="session")
def shop(broker_url, catalog, tmp_path_factory):
    """One worker with the demo catalog indexed, shared by the pipeline and API tests.

    Yields (settings, the similar-items messages of the initial indexing, the worker).
    """
    settings = isolated_settings(broker_url)
    with running_worker(settings, tmp_path_factory.mktemp("logs")) as worker:
        produce(settings, topics.CATALOG, [(p.product_id, p.listing()) for p in catalog])
        reader = TopicReader(settings, topics.SIMILAR_ITEMS)
        wanted = {p.product_id for p in catalog}
        reader.until(lambda messages: wanted <= {m["product_id"] for m in messages}, timeout_s=300)
        reader.close()
        yield settings, reader.messages, worker
