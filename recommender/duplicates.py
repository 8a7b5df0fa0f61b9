"""Counterfeit and near-duplicate listings: is a new listing's image a near-copy of someone else's?

Two kinds of originals are checked. References are genuine images a brand owner registered
(kept as products of a separate store, ``seller_id`` = the owner); a near-copy listed by any
other seller is a ``counterfeit_suspect``. Listings are other sellers' live products; a
near-copy of one is a ``near_duplicate`` (re-uploaded or scraped photos). A near-copy of the
seller's own reference or listing is not flagged.

Two signals decide (see ``CopyThresholds``): the embedder's cosine similarity and the
Hamming distance between 64-bit perceptual hashes. They fail on different edits: a colour
shift moves the embedding but hardly the hash, a crop or rotation moves the hash but less the
embedding. The hash does not depend on any model, so it stays the same evidence when the
embedder is re-trained or swapped.
"""
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
from PIL import Image

from recommender.store import Hit, Product

HASH_SIDE = 8  # 8 x 8 low-frequency DCT coefficients -> 64 bits
_HASH_INPUT_SIDE = 32  # the hash is taken from a 32 x 32 greyscale thumbnail, as in pHash


def _dct_matrix(size: int) -> np.ndarray:
    """Rows are DCT-II basis vectors; ``M @ x`` transforms a column (unnormalized, as in pHash)."""
    frequencies = np.arange(size)[:, None]
    samples = np.arange(size)[None, :]
    return np.cos(np.pi * frequencies * (2 * samples + 1) / (2 * size))


_DCT = _dct_matrix(_HASH_INPUT_SIDE)


def perceptual_hash(image: Image.Image) -> int:
    """64-bit DCT perceptual hash (the pHash of imagehash.phash, bit for bit)."""
    thumbnail = image.convert("L").resize((_HASH_INPUT_SIDE, _HASH_INPUT_SIDE), Image.Resampling.LANCZOS)
    pixels = np.asarray(thumbnail, dtype=np.float64)
    low_frequencies = (_DCT @ pixels @ _DCT.T)[:HASH_SIDE, :HASH_SIDE]
    bits = (low_frequencies > np.median(low_frequencies)).ravel()
    return int("".join("1" if bit else "0" for bit in bits), 2)


def hash_distance(first: int, second: int) -> int:
    """Number of differing bits between two perceptual hashes (0 = same, 64 = opposite)."""
    return (first ^ second).bit_count()


EditKind = Literal["crop", "rescale", "jpeg", "colour", "rotate"]
EDIT_KINDS: tuple[EditKind, ...] = ("crop", "rescale", "jpeg", "colour", "rotate")


def edited_copy(image: Image.Image, kind: EditKind, rng: np.random.Generator) -> Image.Image:
    """A copy of ``image`` with one edit a copier typically applies, of random strength.

    The ranges are what still looks like "the same photo" to a person: a counterfeit
    listing reuses the genuine photo, it does not re-shoot it.
    """
    image = image.convert("RGB")
    width, height = image.size
    if kind == "crop":
        keep = rng.uniform(0.85, 0.95, size=2)
        crop_width, crop_height = int(width * keep[0]), int(height * keep[1])
        left, top = int(rng.integers(0, width - crop_width + 1)), int(rng.integers(0, height - crop_height + 1))
        return image.crop((left, top, left + crop_width, top + crop_height))
    if kind == "rescale":
        factor = rng.uniform(0.5, 2.0)
        return image.resize((max(1, round(width * factor)), max(1, round(height * factor))),
                            Image.Resampling.BICUBIC)
    if kind == "jpeg":
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=int(rng.integers(20, 60)))
        return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    if kind == "colour":
        gains, offsets = rng.uniform(0.75, 1.25, size=3), rng.uniform(-20, 20, size=3)
        shifted = np.asarray(image, dtype=np.float32) * gains + offsets
        return Image.fromarray(np.clip(shifted, 0, 255).astype(np.uint8))
    if kind == "rotate":
        # Fill the uncovered corners with the image's border colour so the rotation does not
        # add a frame of a colour the original never had.
        pixels = np.asarray(image)
        border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
        fill = tuple(int(channel) for channel in np.median(border, axis=0))
        angle = rng.uniform(2, 6) * rng.choice((-1, 1))
        return image.rotate(angle, resample=Image.Resampling.BICUBIC, fillcolor=fill)
    raise ValueError(f"unknown edit {kind!r}: use one of {EDIT_KINDS}")


Verdict = Literal["counterfeit_suspect", "near_duplicate", "genuine", "clear"]


@dataclass(frozen=True)
class CopyThresholds:
    """When an image counts as a near-copy of another; the caller passes them from settings.

    A very high cosine similarity is enough on its own: crops and rotations move pixels
    around, which changes the hash far more than the embedding. A lower similarity counts when
    the hashes agree too, because two independent signals then say "same photo".
    The defaults were chosen on Fashion-MNIST listing photos (docs/catalog_intel.md).
    """
    min_similarity: float = 0.945
    min_similarity_with_hash: float = 0.88
    max_hash_distance: int = 4

    def is_near_copy(self, similarity: float, distance: int | None) -> bool:
        hashes_agree = distance is not None and distance <= self.max_hash_distance
        return similarity >= self.min_similarity or (hashes_agree and similarity >= self.min_similarity_with_hash)


@dataclass(frozen=True)
class CopyVerdict:
    """The decision and its evidence; the ``matched_*`` fields are None when nothing matched."""
    verdict: Verdict
    matched_id: str | None = None
    matched_seller_id: str | None = None
    similarity: float | None = None
    hash_distance: int | None = None  # None when the matched image's hash is unknown


def _best_near_copy(hits: Sequence[Hit], hashes: Mapping[str, int], image_hash: int, listing_id: str,
                    thresholds: CopyThresholds) -> CopyVerdict | None:
    """Evidence of the most similar hit that is a near-copy; its verdict is the caller's to set."""
    for hit in sorted(hits, key=lambda hit: hit.score, reverse=True):
        if hit.product.product_id == listing_id:
            continue
        known_hash = hashes.get(hit.product.product_id)
        distance = None if known_hash is None else hash_distance(image_hash, known_hash)
        if thresholds.is_near_copy(hit.score, distance):
            return CopyVerdict("clear", hit.product.product_id, hit.product.seller_id, hit.score, distance)
    return None


def assess_listing(listing: Product, image_hash: int, *,
                   reference_hits: Sequence[Hit], reference_hashes: Mapping[str, int],
                   listing_hits: Sequence[Hit], listing_hashes: Mapping[str, int],
                   thresholds: CopyThresholds) -> CopyVerdict:
    """Decide whether ``listing`` copies a brand's reference image or another seller's listing.

    ``reference_hits`` come from searching the reference store with the listing's image
    vector (a reference is a ``Product`` whose ``seller_id`` is the brand owner),
    ``listing_hits`` from searching the catalog; the hash mappings give each hit's
    perceptual hash by product id. The listing's own point, if stored already, is skipped.
    A near-copy of the seller's own reference is "genuine": the owner may list its own
    photo, and it then must not be reported as a duplicate of a counterfeiter's listing.
    """
    reference = _best_near_copy(reference_hits, reference_hashes, image_hash, listing.product_id, thresholds)
    if reference is not None:
        owned = reference.matched_seller_id == listing.seller_id
        return replace(reference, verdict="genuine" if owned else "counterfeit_suspect")
    other_sellers = [hit for hit in listing_hits if hit.product.seller_id != listing.seller_id]
    duplicate = _best_near_copy(other_sellers, listing_hashes, image_hash, listing.product_id, thresholds)
    if duplicate is not None:
        return replace(duplicate, verdict="near_duplicate")
    return CopyVerdict("clear")
