"""Timing helpers for a noisy shared host: interleaved rounds, medians, CPU-time rates, tables.

Other engineers' training jobs come and go while a benchmark runs. Timing variant A for a
minute and then variant B would credit B with whatever load changed in between, so every
variant gets a short slot in each round and the reported rate is the median over rounds.
With the host oversubscribed (load average 10 on 2 cores) a process gets anywhere from a
third to all of a core, so wall-clock rates swing 2x between slots; items per CPU-second
of this process (all its threads) measure the work itself and give the steadier ratios.
"""
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone


@dataclass(frozen=True)
class Variant:
    """One way of doing the work: ``run`` processes some items and returns how many."""

    name: str
    run: Callable[[], int]
    prepare: Callable[[], None] = lambda: None  # e.g. set torch's thread count before each slot


@dataclass(frozen=True)
class Rate:
    wall: float  # items per elapsed second: what a user waits for
    cpu: float  # items per CPU-second of this process: the work, whatever share of the cores it got


def rate_in_slot(variant: Variant, seconds: float) -> Rate:
    """Rates over whole calls of ``variant.run`` lasting at least ``seconds``."""
    variant.prepare()
    items, start, start_cpu = 0, time.perf_counter(), time.process_time()
    while True:
        items += variant.run()
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return Rate(items / elapsed, items / (time.process_time() - start_cpu))


def interleaved_rates(variants: Sequence[Variant], rounds: int, seconds: float) -> dict[str, Rate]:
    """Median rates per variant, each timed once per round in turn (after one warm-up call)."""
    for variant in variants:
        variant.prepare()
        variant.run()  # first calls pay for lazy initialisation (oneDNN kernels, caches)
    samples: dict[str, list[Rate]] = {variant.name: [] for variant in variants}
    for _ in range(rounds):
        for variant in variants:
            samples[variant.name].append(rate_in_slot(variant, seconds))
    return {name: Rate(statistics.median(r.wall for r in rates), statistics.median(r.cpu for r in rates))
            for name, rates in samples.items()}


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def machine_summary() -> str:
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    return (f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC | nproc {os.cpu_count()} | {model} | "
            f"load average {load} (shared host) | Python {platform.python_version()}")


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table, so the output can be pasted into BENCHMARKS.md as it is."""
    def cell(value: object) -> str:
        if isinstance(value, float):
            return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"
        return str(value)

    lines = [[cell(value) for value in row] for row in rows]
    widths = [max(len(header), *(len(line[column]) for line in lines)) for column, header in enumerate(headers)]
    render = lambda values: "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths)) + " |"
    return "\n".join([render(headers), render(["-" * w for w in widths]), *map(render, lines)])
