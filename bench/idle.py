"""CPU an idle worker uses on the local broker, with and without the pause after empty fetches.

Two workers run side by side on one local broker, each on its own topics with nothing to do:
one with the default ``VR_KAFKA_IDLE_FETCH_PAUSE_MS``, the baseline with 0 (aiokafka's own
fetch loop, which the local broker answers at once). Both are measured over the same
windows, so load from elsewhere on the host hits them alike; the figure is each worker
process's CPU seconds (all threads) per wall second, from /proc.
"""
import os
import statistics
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from bench.timing import machine_summary, table
from infra.local_broker import free_port, start_broker, stop_broker
from infra.local_stack import isolated_settings, running_worker
from recommender.settings import Settings


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def run(full: bool) -> None:
    rounds, window_s, settle_s = (5, 20.0, 10.0) if full else (3, 10.0, 10.0)
    default_pause = Settings().kafka_idle_fetch_pause_ms
    pauses = {"aiokafka's fetch loop (pause 0)": 0, f"pause {default_pause} ms (default)": default_pause}
    cores: dict[str, list[float]] = {name: [] for name in pauses}
    with tempfile.TemporaryDirectory() as folder, ExitStack() as workers:
        port = free_port()
        broker = start_broker(Path(folder) / "broker", port)
        workers.callback(stop_broker, broker)
        pids = {name: workers.enter_context(running_worker(
                    isolated_settings(f"kafka://127.0.0.1:{port}", text_embedder="none", kafka_idle_fetch_pause_ms=pause),
                    Path(folder))).process.pid
                for name, pause in pauses.items()}
        time.sleep(settle_s)  # start-up work (the CNN's first batches, table recovery) is over by then
        for _ in range(rounds):
            start, start_wall = {name: cpu_seconds(pid) for name, pid in pids.items()}, time.monotonic()
            time.sleep(window_s)
            wall = time.monotonic() - start_wall
            for name, pid in pids.items():
                cores[name].append((cpu_seconds(pid) - start[name]) / wall)
    baseline = statistics.median(cores[next(iter(pauses))])
    print(f"## Idle worker ({machine_summary()})\n")
    print(table(["worker with nothing to do", f"CPU cores used (median of {rounds} x {window_s:g} s)",
                 "ratio to aiokafka's loop"],
                [[name, f"{statistics.median(values):.3f}", f"{statistics.median(values) / baseline:.2f}"]
                 for name, values in cores.items()]))
