"""Shared fixtures: a real Kafka-protocol broker and real Faust workers.

The broker is noida-db started from its binary (``infra/local_broker.py``). On a host with
Docker, ``VR_TEST_BROKER=testcontainers`` runs Apache Kafka in a container instead; the
tests use whichever through the same bootstrap address.
"""
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from infra.local_broker import free_port, start_broker, stop_broker, wait_for_port
from recommender.demo_data import demo_catalog
from recommender.settings import Settings
from streams import topics
from streams.client import TopicReader, produce
from streams.topics import create_topics

REPO = Path(__file__).resolve().parents[1]


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


def isolated_settings(broker_url: str, **overrides) -> Settings:
    """Settings with fresh topic names and consumer group, so tests sharing a broker never meet."""
    run = uuid.uuid4().hex[:8]
    values = {"kafka_broker": broker_url, "topic_prefix": f"t{run}.", "app_id": f"test-{run}",
              "kafka_partitions": 2, "qdrant_path": ":memory:", "web_port": free_port(), **overrides}
    return Settings(**values)


def settings_env(settings: Settings) -> dict[str, str]:
    env = {f"VR_{name.upper()}": str(value) for name, value in settings.model_dump().items() if value is not None}
    return {**os.environ, **env, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


class Worker:
    def __init__(self, settings: Settings, log_path: Path):
        self.settings = settings
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def start(self, timeout_s: float = 90.0) -> "Worker":
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "streams", "worker", "-l", "info", "--web-port", str(self.settings.web_port)],
            cwd=REPO, env=settings_env(self.settings), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while "Worker ready" not in self.log_path.read_text(errors="replace"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start:\n{self.log_tail()}")
            time.sleep(0.2)
        wait_for_port(self.settings.web_port, self.process)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@contextmanager
def running_worker(settings: Settings, log_dir: Path) -> Iterator[Worker]:
    create_topics(settings)
    worker = Worker(settings, log_dir / f"worker-{settings.web_port}.log").start()
    try:
        yield worker
    finally:
        worker.stop()


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
