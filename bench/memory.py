"""Resident memory of one worker process: embedder, catalog in the embedded store, user profiles.

Stages are loaded one after another into this process and the RSS growth of each is
printed beside the raw size of its data (float32 vectors, JSON text), so the overhead of
each structure is visible. Catalog vectors are random unit vectors: their values do not
change their size. Profiles are ``UserProfile.to_json()`` dicts, the form the Faust table
``user-profiles`` (``store="memory://"``) holds in RAM.
"""
import argparse
import gc
import json
import random
import tracemalloc
from collections.abc import Sequence

import numpy as np
from PIL import Image
from qdrant_client import QdrantClient

from bench.timing import machine_summary, table
from models.embedders import load_embedder
from recommender.interests import UserProfile
from recommender.settings import Settings
from recommender.store import Product, ProductStore

DIM = 1280
ACTIONS_PER_USER = 50  # Settings.profile_max_actions
UPSERT_BATCH = 1000


def process_memory_mib() -> dict[str, float]:
    """Current (VmRSS) and peak (VmHWM) resident memory of this process, from /proc/self/status."""
    with open("/proc/self/status") as status:
        fields = dict(line.split(":", 1) for line in status)
    return {key: int(fields[key].split()[0]) / 1024 for key in ("VmRSS", "VmHWM")}


def fill_store(store: ProductStore, items: int, seed: int = 0) -> None:
    """Random unit vectors in batches, so no full copy of the catalog outlives the loop."""
    rng = np.random.default_rng(seed)
    for first in range(0, items, UPSERT_BATCH):
        count = min(UPSERT_BATCH, items - first)
        vectors = rng.standard_normal((count, DIM), dtype=np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        products = [Product(product_id=f"fm-train-{first + row}", title=f"Grey basic t-shirt/top {first + row}",
                            price=19.99, category="T-shirt/top") for row in range(count)]
        store.upsert_products(products, vectors)


def user_profiles(users: int, catalog_items: int, seed: int = 0) -> dict[str, dict]:
    """``users`` full profiles (``ACTIONS_PER_USER`` actions each) as the Faust table holds them."""
    rng = random.Random(seed)
    profiles = {}
    for user in range(users):
        profile = UserProfile()
        for step in range(ACTIONS_PER_USER):
            action = rng.choices(["view", "click", "add_to_cart", "purchase"], weights=[10, 4, 2, 1])[0]
            profile = profile.record(f"fm-train-{rng.randrange(catalog_items)}", action, 1.7e9 + step,
                                     ACTIONS_PER_USER)
        profiles[f"user-{user}"] = profile.to_json()
    return profiles


def run(full: bool = False) -> None:
    items, users = (100_000, 10_000) if full else (20_000, 2_000)
    settings = Settings()
    stages = [("Python + torch + qdrant-client imported", process_memory_mib(), None)]

    embedder = load_embedder(settings.embedder, settings.torch_threads, settings.forward_batch)
    embedder.embed([Image.new("RGB", (28, 28))] * settings.forward_batch)  # allocates the activation buffers
    stages.append((f"+ embedder ({embedder.name}, one forward batch run)", process_memory_mib(), None))

    store = ProductStore(QdrantClient(location=":memory:"), embedder.name, embedder.dim)
    fill_store(store, items)
    gc.collect()
    raw_vectors_mib = items * DIM * 4 / 2**20
    stages.append((f"+ {items:,} products in qdrant-client :memory: ({DIM}-d)", process_memory_mib(), raw_vectors_mib))

    # RSS hardly moves here: the heap reuses what the store's upserts freed, so tracemalloc
    # counts the bytes the profiles themselves keep alive.
    tracemalloc.start()
    profiles = user_profiles(users, items)
    gc.collect()
    profiles_mib = tracemalloc.get_traced_memory()[0] / 2**20
    tracemalloc.stop()
    raw_json_mib = sum(len(json.dumps(profile)) for profile in profiles.values()) / 2**20
    stages.append((f"+ {users:,} user profiles ({ACTIONS_PER_USER} actions, JSON dicts)", process_memory_mib(),
                   raw_json_mib))

    print(f"## Memory (one process, stages added in order)\n\n{machine_summary()}\n")
    rows, previous = [], 0.0
    for name, memory, raw_mib in stages:
        growth = memory["VmRSS"] - previous
        rows.append((name, memory["VmRSS"], memory["VmHWM"], growth if previous else "-",
                     "-" if raw_mib is None else raw_mib, "-" if raw_mib is None else growth / raw_mib))
        previous = memory["VmRSS"]
    print(table(["stage", "RSS MiB", "peak RSS MiB", "growth MiB", "raw data MiB", "growth / raw"], rows))
    print(f"\nper product: {(stages[2][1]['VmRSS'] - stages[1][1]['VmRSS']) * 2**20 / items:,.0f} bytes of RSS "
          f"(the image vector alone is {DIM * 4:,}); user profiles: {profiles_mib:.1f} MiB of Python objects "
          f"(tracemalloc), {profiles_mib * 2**20 / users:,.0f} bytes each, {raw_json_mib * 2**20 / users:,.0f} as JSON text")
    assert store.count() == items and len(profiles) == users  # keep both alive until measured


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="100k products and 10k users (default 20k and 2k)")
    run(parser.parse_args(argv).full)


if __name__ == "__main__":
    main()
