"""Workers as subprocesses, with settings isolated per run: for tests and benchmarks.

Each run gets fresh topic names, consumer group and web port, so runs that share one
broker never see each other's events.
"""
import atexit
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from kafka import KafkaAdminClient
from kafka.admin import MemberToRemove

from infra.local_broker import free_port, wait_for_port
from recommender.settings import Settings
from streams.topics import bootstrap_servers, create_topics, security_options

REPO = Path(__file__).resolve().parents[1]


def isolated_settings(broker_url: str, **overrides) -> Settings:
    """Settings with fresh topic names and consumer group, so tests sharing a broker never meet."""
    run = uuid.uuid4().hex[:8]
    values = {"kafka_broker": broker_url, "topic_prefix": f"t{run}.", "app_id": f"test-{run}",
              "kafka_partitions": 2, "qdrant_path": scratch_store_dir(), "web_port": free_port(), **overrides}
    return Settings(**values)


def scratch_store_dir() -> str:
    """A fresh directory for a run's embedded store, removed when this process exits (the workers
    using it have stopped by then), so test and benchmark runs leave no stores in /tmp."""
    path = tempfile.mkdtemp(prefix="vr-store-")
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def group_member(settings: Settings) -> Settings:
    """Settings for one more worker of the same consumer group (same app id and topics): its
    own web port (which also names its embedded store's subfolder)."""
    return settings.model_copy(update={"web_port": free_port()})


def expire_members(settings: Settings) -> None:
    """Remove every member from the worker's consumer group, as Kafka does to a member whose
    session has timed out. noida-db never expires one: a SIGKILLed member, or the old id of a
    member that rejoined under a new one, stays in the group for ever and no rebalance
    completes (docs/scale.md). Live members removed too simply join again."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers(settings), **security_options(settings))
    try:
        members = admin.describe_groups([settings.app_id])[settings.app_id]["members"]
        admin.remove_group_members(settings.app_id, [MemberToRemove(member_id=m["member_id"]) for m in members])
    finally:
        admin.close()


def settings_env(settings: Settings) -> dict[str, str]:
    env = {f"VR_{name.upper()}": str(value) for name, value in settings.model_dump().items() if value is not None}
    return {**os.environ, **env, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


class Worker:
    def __init__(self, settings: Settings, log_path: Path):
        self.settings = settings
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def start(self, timeout_s: float = 240.0) -> "Worker":
        """Start the worker and wait until it is ready; on a busy 2-core host that can take minutes."""
        log = open(self.log_path, "ab")
        earlier_log = log.tell()  # a restarted worker appends: only what this start writes counts
        self.process = subprocess.Popen(
            [sys.executable, "-m", "streams", "worker", "-l", "info", "--web-port", str(self.settings.web_port)],
            cwd=REPO, env=settings_env(self.settings), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while b"Worker ready" not in self.log_path.read_bytes()[earlier_log:]:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop(signal.SIGKILL)  # a worker that never came up must not linger
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

    def recoveries(self) -> int:
        """How many times the worker has been ready: after its start and after each rebalance's
        table recovery."""
        return self.log_path.read_bytes().count(b"Worker ready")

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
