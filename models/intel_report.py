"""Catalog-intelligence report: category votes, copy detection and shelf counting, measured in one run.

    python -m models.intel_report --catalog 1000 --queries 300 [--frames 30] [--model efficientnet_lite0]

Everything is Fashion-MNIST, drawn at random with ``--seed``; every number is printed with the
data it was measured on. A listing photo is the 28 px article upscaled 4x (bicubic), so edits
act at a photo-like resolution. Train images from index 40000 on were used to choose the default
thresholds of ``recommender.duplicates`` and the shelf's unknown threshold, so this report never
draws from them.

- Catalog: ``--catalog`` train images, listed by 25 sellers, embedded into an in-memory store.
- Categorization: ``--queries`` test images vote over their ``--k`` nearest catalog products.
  For the mismatch flag every second query declares a wrong category.
- Copies: a quarter of the catalog is also registered as brand references (owner = its seller).
  ``--queries`` edited copies listed by another seller (half of references, half of plain
  listings; edit kinds in turn) must be flagged with the right verdict and match; ``--queries``
  other test images (different products) must not be flagged.
- Shelf: ``--frames`` before/after pairs of composed frames. Each "before" shelf holds 3-4
  catalog products with 1-3 facings each and, every second frame, one article that is not in
  the catalog (to be counted as unknown); "after" has 1-2 items sold and a new layout.
"""
import argparse
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from qdrant_client import QdrantClient

from models import fashion_mnist
from models.embedders import ImageEmbedder, load_embedder
from recommender.categorize import check_declared_category, vote_category
from recommender.duplicates import EDIT_KINDS, CopyThresholds, assess_listing, edited_copy, perceptual_hash
from recommender.shelf import (UNKNOWN, BadShelfFrame, box_iou, compose_shelf_frame, count_items, segment_items,
                               stock_change)
from recommender.store import Product, ProductStore

PHOTO_SIDE = 112
SELLERS = 25
CALIBRATION_START = 40000  # train images from here on chose the default thresholds
SHELF_UNKNOWN_THRESHOLD = 0.80  # chosen on frames of train images 41300-42299 (see docs/catalog_intel.md)
BOX_MATCH_IOU = 0.5


def listing_photo(pixels: np.ndarray) -> Image.Image:
    return Image.fromarray(pixels).convert("RGB").resize((PHOTO_SIDE, PHOTO_SIDE), Image.Resampling.BICUBIC)


def share(part: int, whole: int) -> str:
    return f"{part}/{whole} = {part / whole:.3f}" if whole else f"{part}/0"


@dataclass
class Catalog:
    products: list[Product]
    pixels: np.ndarray  # (N, 28, 28) uint8, row i is products[i]
    vectors: np.ndarray
    hashes: dict[str, int]
    store: ProductStore


def build_catalog(embedder: ImageEmbedder, images: np.ndarray, labels: np.ndarray, indices: np.ndarray) -> Catalog:
    products = [Product(f"train-{index}", fashion_mnist.CATEGORIES[labels[index]], 10.0,
                        fashion_mnist.CATEGORIES[labels[index]], seller_id=f"seller-{row % SELLERS}")
                for row, index in enumerate(indices)]
    photos = [listing_photo(images[index]) for index in indices]
    vectors = embedder.embed(photos)
    store = ProductStore(QdrantClient(":memory:"), model=embedder.name, image_dim=embedder.dim)
    store.upsert_products(products, vectors)
    hashes = {product.product_id: perceptual_hash(photo) for product, photo in zip(products, photos)}
    return Catalog(products, images[indices], vectors, hashes, store)


# -- categorization ---------------------------------------------------------------------------

def report_categorization(embedder: ImageEmbedder, catalog: Catalog, images: np.ndarray, labels: np.ndarray,
                          rng: np.random.Generator, k: int, min_confidence: float) -> None:
    vectors = embedder.embed([listing_photo(pixels) for pixels in images])
    truths = [fashion_mnist.CATEGORIES[label] for label in labels]
    votes = [vote_category(hits, "query", k) for hits in catalog.store.search(vectors, limit=k)]
    correct = sum(vote.category == truth for vote, truth in zip(votes, truths))
    print(f"categorization: {share(correct, len(votes))} test-split products correct "
          f"(similarity-weighted {k}-NN vote over the {len(catalog.products)}-product catalog)")
    confident = [(vote, truth) for vote, truth in zip(votes, truths) if vote.confidence >= min_confidence]
    print(f"  votes with confidence >= {min_confidence}: {share(len(confident), len(votes))} of products, "
          f"correct among them {share(sum(vote.category == truth for vote, truth in confident), len(confident))}")

    # Every second query declares a category drawn from the nine wrong ones.
    declared = [truth if row % 2 == 0 else rng.choice([c for c in fashion_mnist.CATEGORIES if c != truth])
                for row, truth in enumerate(truths)]
    flags = [check_declared_category(claim, vote, min_confidence).mismatch for claim, vote in zip(declared, votes)]
    wrong = [claim != truth for claim, truth in zip(declared, truths)]
    caught = sum(flag and is_wrong for flag, is_wrong in zip(flags, wrong))
    print(f"  mismatch flag (confidence >= {min_confidence}): precision {share(caught, sum(flags))} flags, "
          f"recall {share(caught, sum(wrong))} wrong declarations, "
          f"false alarms {share(sum(flags) - caught, len(wrong) - sum(wrong))} right declarations")


# -- copies -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class CopyCase:
    listing: Product
    image_hash: int
    expected: tuple[str, str | None]  # (verdict, matched id)
    edit: str | None  # None for a different product


def report_copies(embedder: ImageEmbedder, catalog: Catalog, different: np.ndarray, rng: np.random.Generator,
                  queries: int) -> None:
    reference_count = len(catalog.products) // 4
    references = [Product(f"ref-{product.product_id}", product.title, product.price, product.category,
                          seller_id=product.seller_id) for product in catalog.products[:reference_count]]
    reference_store = ProductStore(QdrantClient(":memory:"), model=embedder.name, image_dim=embedder.dim,
                                   prefix="references_")
    reference_store.upsert_products(references, catalog.vectors[:reference_count])
    reference_hashes = {reference.product_id: catalog.hashes[product.product_id]
                        for reference, product in zip(references, catalog.products)}

    copied_references = rng.choice(reference_count, queries // 2, replace=False)
    copied_listings = rng.choice(np.arange(reference_count, len(catalog.products)), queries - queries // 2,
                                 replace=False)
    cases, images = [], []
    for case_number, row in enumerate([*copied_references, *copied_listings]):
        original = catalog.products[row]
        edit = EDIT_KINDS[case_number % len(EDIT_KINDS)]
        copy = edited_copy(listing_photo(catalog.pixels[row]), edit, rng)
        copier = f"seller-{(int(original.seller_id.split('-')[1]) + 1) % SELLERS}"
        expected = (("counterfeit_suspect", f"ref-{original.product_id}") if row < reference_count
                    else ("near_duplicate", original.product_id))
        cases.append(CopyCase(Product(f"copy-{case_number}", original.title, 9.0, seller_id=copier),
                              perceptual_hash(copy), expected, edit))
        images.append(copy)
    for row, pixels in enumerate(different):
        photo = listing_photo(pixels)
        cases.append(CopyCase(Product(f"other-{row}", "other", 9.0, seller_id="seller-new"), perceptual_hash(photo),
                              ("clear", None), None))
        images.append(photo)
    vectors = embedder.embed(images)
    reference_hits = reference_store.search(vectors, limit=5)
    listing_hits = catalog.store.search(vectors, limit=5)

    print(f"copies: {queries} edited copies by another seller ({len(copied_references)} of brand references, "
          f"{len(copied_listings)} of other listings; {', '.join(EDIT_KINDS)} in turn) and {len(different)} "
          f"different test-split products, against {reference_count} references and "
          f"{len(catalog.products)} listings")
    variants = {"default (similarity or similarity+hash)": CopyThresholds(),
                "embedding similarity alone": CopyThresholds(min_similarity_with_hash=float("inf")),
                "perceptual hash alone": CopyThresholds(min_similarity=float("inf"), min_similarity_with_hash=-1.0)}
    for name, thresholds in variants.items():
        verdicts = [assess_listing(case.listing, case.image_hash,
                                   reference_hits=refs, reference_hashes=reference_hashes,
                                   listing_hits=listings, listing_hashes=catalog.hashes, thresholds=thresholds)
                    for case, refs, listings in zip(cases, reference_hits, listing_hits)]
        right = [(verdict.verdict, verdict.matched_id) == case.expected for case, verdict in zip(cases, verdicts)]
        flagged = [verdict.verdict != "clear" for verdict in verdicts]
        print(f"  {name} {thresholds}:")
        print(f"    precision {share(sum(f and r for f, r in zip(flagged, right)), sum(flagged))} flags "
              f"(right verdict and right match)")
        for kind in ("counterfeit_suspect", "near_duplicate"):
            rows = [row for row, case in enumerate(cases) if case.expected[0] == kind]
            print(f"    recall {kind}: {share(sum(right[row] for row in rows), len(rows))} copies")
        per_edit = {edit: [row for row, case in enumerate(cases) if case.edit == edit] for edit in EDIT_KINDS}
        print("    recall per edit: " + ", ".join(f"{edit} {share(sum(right[row] for row in rows), len(rows))}"
                                                for edit, rows in per_edit.items()))
        negatives = [row for row, case in enumerate(cases) if case.edit is None]
        print(f"    different products flagged: {share(sum(flagged[row] for row in negatives), len(negatives))}")


# -- shelf ------------------------------------------------------------------------------------

def shelf_contents(catalog: Catalog, outside: np.ndarray, frame_number: int, rng: np.random.Generator
                   ) -> list[tuple[str, np.ndarray]]:
    """(truth label, 28 px pixels) of every item on a "before" shelf, in shelf order."""
    items = []
    for row in rng.choice(len(catalog.products), int(rng.integers(3, 5)), replace=False):
        items += [(catalog.products[row].product_id, catalog.pixels[row])] * int(rng.integers(1, 4))
    if frame_number % 2 == 0:
        items.append((UNKNOWN, outside[frame_number // 2]))
    return [items[position] for position in rng.permutation(len(items))]


@dataclass
class FrameResult:
    truth: dict[str, int]
    counts: dict[str, int] | None  # None when the frame was refused
    placed: int
    detected: int
    found: int  # placed items that a detected box matches
    recognitions: list[tuple[str, str, float]]  # (truth label, best product id, similarity) per found item


def read_shelf(embedder: ImageEmbedder, catalog: Catalog, items: Sequence[tuple[str, np.ndarray]],
               rng: np.random.Generator, threshold: float) -> FrameResult:
    frame = compose_shelf_frame([Image.fromarray(pixels).convert("RGB") for _, pixels in items], rng)
    truth = dict(Counter(label for label, _ in items))
    try:
        detected = segment_items(frame.image)
    except BadShelfFrame:
        return FrameResult(truth, None, len(items), 0, 0, [])
    best = [hits[0] for hits in catalog.store.search(embedder.embed([item.crop for item in detected]), limit=1)]
    counts = count_items([(hit.product.product_id, hit.score) for hit in best], threshold)
    recognitions = []
    for (label, _), box in zip(items, frame.boxes):
        overlaps = [box_iou(box, item.box) for item in detected]
        if max(overlaps) >= BOX_MATCH_IOU:
            hit = best[int(np.argmax(overlaps))]
            recognitions.append((label, hit.product.product_id, hit.score))
    return FrameResult(truth, counts, len(items), len(detected), len(recognitions), recognitions)


def report_shelf(embedder: ImageEmbedder, catalog: Catalog, outside: np.ndarray, rng: np.random.Generator,
                 frames: int, threshold: float) -> None:
    results, stock_right = [], 0
    for frame_number in range(frames):
        before = shelf_contents(catalog, outside, frame_number, rng)
        sold = set(rng.choice(len(before), int(rng.integers(1, 3)), replace=False).tolist())
        after = [before[position] for position in rng.permutation(len(before)) if position not in sold]
        pair = [read_shelf(embedder, catalog, items, rng, threshold) for items in (before, after)]
        results += pair
        if all(result.counts is not None for result in pair):
            stock_right += (stock_change(pair[0].counts, pair[1].counts)
                            == stock_change(pair[0].truth, pair[1].truth))

    placed = sum(result.placed for result in results)
    print(f"shelf: {len(results)} frames ({frames} before/after pairs), {placed} items placed, "
          f"unknown below similarity {threshold}")
    print(f"  frames refused (BadShelfFrame): {sum(result.counts is None for result in results)}")
    found = sum(result.found for result in results)
    print(f"  items found (IoU >= {BOX_MATCH_IOU} with a detected box): {share(found, placed)}; "
          f"detections {sum(result.detected for result in results)}")
    recognitions = [recognition for result in results for recognition in result.recognitions]
    in_catalog = [(label, best, score) for label, best, score in recognitions if label != UNKNOWN]
    outside_items = [(label, best, score) for label, best, score in recognitions if label == UNKNOWN]
    nearest_right = sum(label == best for label, best, _ in in_catalog)
    print(f"  nearest catalog product is the right one: {share(nearest_right, len(in_catalog))} "
          f"found catalog items (no threshold)")
    for sweep in sorted({threshold, 0.8, 0.85, 0.9}):
        right = sum(label == best and score >= sweep for label, best, score in in_catalog)
        unknown = sum(score < sweep for _, _, score in outside_items)
        marker = "  <- used" if sweep == threshold else ""
        print(f"  threshold {sweep}: catalog items recognised {share(right, len(in_catalog))}, "
              f"outside articles counted unknown {share(unknown, len(outside_items))}{marker}")
    exact = sum(result.counts == result.truth for result in results)
    entries = [(result.counts or {}).get(key, 0) == count for result in results for key, count in result.truth.items()]
    errors = [abs((result.counts or {}).get(key, 0) - result.truth.get(key, 0))
              for result in results for key in result.truth.keys() | (result.counts or {}).keys()]
    print(f"  counts: exact for {share(exact, len(results))} frames; per (frame, product) "
          f"{share(sum(entries), len(entries))} right; mean absolute count error {np.mean(errors):.3f} "
          f"over {len(errors)} (frame, key) entries")
    print(f"  stock change (before -> after) exactly right for {share(stock_right, frames)} pairs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--catalog", type=int, default=1000, help="catalog size (train images)")
    parser.add_argument("--queries", type=int, default=300, help="held-out products, and edited copies, and "
                                                                  "different products")
    parser.add_argument("--frames", type=int, default=30, help="before/after pairs of shelf frames")
    parser.add_argument("--model", default="efficientnet_lite0", help="embedder name or model file path")
    parser.add_argument("--k", type=int, default=10, help="neighbours in the category vote")
    parser.add_argument("--mismatch-confidence", type=float, default=0.7)
    parser.add_argument("--unknown-threshold", type=float, default=SHELF_UNKNOWN_THRESHOLD)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.set_num_threads(1)
    started_wall, started_cpu = time.perf_counter(), time.process_time()
    rng = np.random.default_rng(args.seed)
    train_images, train_labels = fashion_mnist.load("train")
    test_images, test_labels = fashion_mnist.load("test")
    embedder = load_embedder(args.model)
    print(f"model {embedder.name}, seed {args.seed}")

    catalog = build_catalog(embedder, train_images, train_labels,
                            rng.choice(CALIBRATION_START, args.catalog, replace=False))
    # Disjoint test-split pools: category queries, different products for copies, shelf outsiders.
    test_rows = rng.permutation(len(test_images))
    queries, different = test_rows[:args.queries], test_rows[args.queries:2 * args.queries]
    outside = test_images[test_rows[2 * args.queries:2 * args.queries + args.frames]]

    report_categorization(embedder, catalog, test_images[queries], test_labels[queries], rng, args.k,
                          args.mismatch_confidence)
    report_copies(embedder, catalog, test_images[different], rng, args.queries)
    report_shelf(embedder, catalog, outside, rng, args.frames, args.unknown_threshold)
    print(f"time: {time.perf_counter() - started_wall:.0f} s wall, {time.process_time() - started_cpu:.0f} s CPU")


if __name__ == "__main__":
    main()
