"""Play the demo shop against a running worker and print what shoppers would see.

Indexes the Fashion-MNIST catalog (only the listings not indexed yet), plays simulated
browsing sessions and a photo upload, and prints the recommendations and search results
read back from the output topics.
"""
import argparse
import random
import time
import uuid
from collections.abc import Sequence

from tqdm import tqdm

from models.embedders import resolve_spec
from models.images import encode_png
from recommender.demo_data import Article, DemoProduct, demo_catalog, shopping_session
from recommender.settings import get_settings
from streams import topics
from streams.client import TopicReader, produce, search_result

USERS = {"ana": ["Sneaker"], "ben": ["Bag", "Ankle boot"], "chloe": ["Dress", "Sandal", "T-shirt/top"]}


def index_catalog(settings, catalog: list[DemoProduct], timeout_s: float) -> None:
    # The compacted catalog.vectors topic is the index every worker's store is built from:
    # what it holds by the model in service needs no sending again.
    indexed_reader = TopicReader(settings, topics.CATALOG_VECTORS)
    model = resolve_spec(settings.embedder).name
    indexed = {m["product_id"] for m in indexed_reader.read_to_end() if m["model"] == model}
    indexed_reader.close()
    reader = TopicReader(settings, topics.SIMILAR_ITEMS, from_start=False)
    missing = [p for p in catalog if p.product_id not in indexed]
    print(f"catalog: {len(catalog) - len(missing)} of {len(catalog)} products already indexed, "
          f"sending {len(missing)}")
    produce(settings, topics.CATALOG, ((p.product_id, p.listing()) for p in missing))
    wanted = {p.product_id for p in missing}
    started = time.monotonic()
    with tqdm(total=len(wanted), desc="indexing", unit="product") as progress:
        while wanted:
            done = wanted & {m["product_id"] for m in reader.poll(0.5)}
            wanted -= done
            progress.update(len(done))
            if time.monotonic() - started > timeout_s:
                raise TimeoutError(f"{len(wanted)} products not indexed after {timeout_s} s")
    if missing:
        elapsed = time.monotonic() - started
        print(f"indexed {len(missing)} products in {elapsed:.0f} s ({len(missing) / elapsed:.0f} products/s)")
    reader.close()


def show(items: list[dict]) -> str:
    return "\n".join(f"    {i + 1:2}. {item['score']:.3f}  {item['category']:<12} {item['title']:<34} "
                     f"${item['price']:>7.2f}  {item['product_id']}" for i, item in enumerate(items))


def play_sessions(settings, catalog: list[DemoProduct], seed: int) -> None:
    rng, start = random.Random(seed), time.time()
    sessions = {user: shopping_session(user, catalog, interests, 12, rng, start) for user, interests in USERS.items()}
    run = uuid.uuid4().hex[:8]  # fresh event ids, so an earlier run's outputs are never taken for this one's
    for events in sessions.values():
        for event in events:
            event["event_id"] = f"demo-{run}-{event['event_id']}"
    reader = TopicReader(settings, topics.RECOMMENDATIONS)
    last_events = {events[-1]["event_id"] for events in sessions.values()}
    produce(settings, topics.ACTIONS, ((e["user_id"], e) for events in sessions.values() for e in events))
    messages = reader.until(lambda ms: last_events <= {m["source_event_id"] for m in ms}, timeout_s=120)
    for user, interests in USERS.items():
        latest = [m for m in messages if m["source_event_id"] == sessions[user][-1]["event_id"]][0]
        actions = ", ".join(f"{e['action']}" for e in sessions[user])
        print(f"\n{user} browsed {' + '.join(interests)} ({actions});\n  {latest['interests']} interest(s), "
              f"recommendations:\n{show(latest['items'])}")
    reader.close()


def play_paced_session(settings, user_id: str, catalog: Sequence[Article], interests: list[str], actions: int,
                       pause_s: float) -> list[dict]:
    """Send one simulated shopper's session, one action every ``pause_s`` seconds, so the
    recommendations can be watched changing (the demo page's "play a session" button)."""
    events = shopping_session(user_id, catalog, interests, actions, random.Random(), time.time())
    session = uuid.uuid4().hex[:12]  # event ids stay unique when a user plays several sessions

    def paced():
        for step, event in enumerate(events):
            if step:
                time.sleep(pause_s)
            event.update(event_id=f"play-{session}-{step}", ts=time.time())
            yield user_id, event

    produce(settings, topics.ACTIONS, paced())
    return events


def search_by_photo(settings, product: DemoProduct) -> None:
    import base64

    from PIL import Image

    request_id = f"demo-upload-{int(time.time())}"
    photo = base64.b64encode(encode_png(Image.fromarray(product.image).convert("RGB"))).decode()
    produce(settings, topics.UPLOADS, [(request_id, {"event_id": request_id, "image_b64": photo, "k": 5})])
    result = search_result(settings, request_id)
    print(f"\nphoto search with the picture of {product.title!r} ({product.product_id}):\n{show(result['items'])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", type=int, default=5000, help="catalog size (Fashion-MNIST train images)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--timeout", type=float, default=1800, help="seconds to wait for indexing")
    args = parser.parse_args()
    settings = get_settings()
    catalog = demo_catalog(args.products, seed=args.seed)
    index_catalog(settings, catalog, args.timeout)
    play_sessions(settings, catalog, args.seed)
    search_by_photo(settings, random.Random(args.seed).choice(catalog))


if __name__ == "__main__":
    main()
