import numpy as np
import pytest
import torch
from PIL import Image
from qdrant_client import QdrantClient

from models import fashion_mnist
from models.embedders import load_embedder
from recommender.duplicates import (EDIT_KINDS, CopyThresholds, CopyVerdict, assess_listing, edited_copy,
                                    hash_distance, perceptual_hash)
from recommender.store import Hit, Product, ProductStore

THRESHOLDS = CopyThresholds(min_similarity=0.93, min_similarity_with_hash=0.80, max_hash_distance=10)


@pytest.fixture(scope="module")
def articles() -> list[Image.Image]:
    """Test-split articles as listing photos: greyscale 28 px upscaled to 112 px RGB."""
    images, _ = fashion_mnist.load("test")
    return [Image.fromarray(pixels).convert("RGB").resize((112, 112), Image.Resampling.BICUBIC)
            for pixels in images[:20]]


def listing(product_id: str, seller_id: str) -> Product:
    return Product(product_id, product_id, 10.0, seller_id=seller_id)


# -- perceptual hash and edits ----------------------------------------------------------------

def test_hash_ignores_recompression_and_rescaling_but_not_another_article(articles):
    original = perceptual_hash(articles[0])
    rng = np.random.default_rng(0)
    assert perceptual_hash(articles[0]) == original
    assert hash_distance(perceptual_hash(edited_copy(articles[0], "jpeg", rng)), original) <= 4
    assert hash_distance(perceptual_hash(edited_copy(articles[0], "rescale", rng)), original) <= 4
    assert min(hash_distance(perceptual_hash(other), original) for other in articles[1:]) > 10


def test_hash_distance_counts_differing_bits():
    assert hash_distance(0b1011, 0b0001) == 2
    assert hash_distance(0, 2**64 - 1) == 64


@pytest.mark.parametrize("kind", EDIT_KINDS)
def test_each_edit_changes_the_pixels_reproducibly(articles, kind):
    copy = edited_copy(articles[1], kind, np.random.default_rng(7))
    assert copy.mode == "RGB"
    assert copy.size != articles[1].size or not np.array_equal(np.asarray(copy), np.asarray(articles[1]))
    assert np.array_equal(np.asarray(copy), np.asarray(edited_copy(articles[1], kind, np.random.default_rng(7))))


def test_unknown_edit_is_refused(articles):
    with pytest.raises(ValueError, match="unknown edit"):
        edited_copy(articles[0], "mirror", np.random.default_rng(0))


# -- decision on hand-built hits --------------------------------------------------------------

def test_near_copy_needs_very_high_similarity_or_agreeing_hashes():
    assert THRESHOLDS.is_near_copy(0.95, None)
    assert THRESHOLDS.is_near_copy(0.85, 6)
    assert not THRESHOLDS.is_near_copy(0.85, 20)
    assert not THRESHOLDS.is_near_copy(0.85, None)
    assert not THRESHOLDS.is_near_copy(0.70, 0)


def test_copy_of_another_owners_reference_is_a_counterfeit_suspect_with_evidence():
    reference_hits = [Hit(listing("ref-watch", "brand"), 0.86), Hit(listing("ref-bag", "brand"), 0.97)]
    verdict = assess_listing(listing("new", "shady"), 0b1111, reference_hits=reference_hits,
                             reference_hashes={"ref-watch": 0b1111, "ref-bag": 0b0000},
                             listing_hits=[], listing_hashes={}, thresholds=THRESHOLDS)
    # Both are near-copies (one by hash, one by similarity alone): the more similar one is the evidence.
    assert verdict == CopyVerdict("counterfeit_suspect", "ref-bag", "brand", 0.97, 4)


def test_the_owner_listing_its_own_reference_is_genuine_not_a_duplicate():
    hits = [Hit(listing("ref-bag", "brand"), 0.99)]
    copied_listing = [Hit(listing("fake-bag", "shady"), 0.98)]
    verdict = assess_listing(listing("bag", "brand"), 0, reference_hits=hits, reference_hashes={"ref-bag": 0},
                             listing_hits=copied_listing, listing_hashes={"fake-bag": 0}, thresholds=THRESHOLDS)
    assert verdict.verdict == "genuine" and verdict.matched_id == "ref-bag"


def test_near_duplicate_only_of_other_sellers_and_never_of_itself():
    hits = [Hit(listing("new", "shop-a"), 1.0), Hit(listing("old", "shop-a"), 0.99),
            Hit(listing("theirs", "shop-b"), 0.90)]
    hashes = {"new": 0, "old": 0, "theirs": 0b111}
    verdict = assess_listing(listing("new", "shop-a"), 0, reference_hits=[], reference_hashes={},
                             listing_hits=hits, listing_hashes=hashes, thresholds=THRESHOLDS)
    assert verdict == CopyVerdict("near_duplicate", "theirs", "shop-b", 0.90, 3)
    # Without the agreeing hash, 0.90 is below the similarity needed on its own.
    alone = assess_listing(listing("new", "shop-a"), 0, reference_hits=[], reference_hashes={},
                           listing_hits=hits, listing_hashes={}, thresholds=THRESHOLDS)
    assert alone == CopyVerdict("clear")


# -- end to end: real embedder and in-memory store --------------------------------------------

@pytest.fixture(scope="module")
def reference_store(articles):
    """Articles 0-9 registered as genuine references by seller "brand"."""
    torch.set_num_threads(1)
    embedder = load_embedder("efficientnet_lite0")
    references = [listing(f"ref-{index}", "brand") for index in range(10)]
    store = ProductStore(QdrantClient(":memory:"), model="m", image_dim=embedder.dim, prefix="references_")
    store.upsert_products(references, embedder.embed(articles[:10]))
    hashes = {product.product_id: perceptual_hash(image) for product, image in zip(references, articles)}
    return embedder, store, hashes


# Not every random edit is caught (the report gives recall per edit kind); these concrete
# copies are. The different pair of trousers has reference 3 as its nearest reference (0.81).
@pytest.mark.parametrize("kind, seed", [("crop", 1), ("rotate", 2), ("jpeg", 1), ("colour", 2)])
def test_edited_copy_is_flagged_and_a_different_article_is_not(articles, reference_store, kind, seed):
    embedder, store, hashes = reference_store
    copy = edited_copy(articles[3], kind, np.random.default_rng(seed))
    different_trousers = articles[15]
    vectors = embedder.embed([copy, different_trousers])
    verdicts = [assess_listing(listing(name, "shady"), perceptual_hash(image),
                               reference_hits=store.search(vector, limit=5)[0], reference_hashes=hashes,
                               listing_hits=[], listing_hashes={}, thresholds=CopyThresholds())
                for name, image, vector in zip(("copy", "different"), (copy, different_trousers), vectors)]
    assert (verdicts[0].verdict, verdicts[0].matched_id) == ("counterfeit_suspect", "ref-3")
    assert verdicts[1].verdict == "clear"
