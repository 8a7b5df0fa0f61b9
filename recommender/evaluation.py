"""Offline evaluation of "you may also like" on SIMULATED shopping sessions.

Nothing here comes from real shoppers. Simulated users browse the Fashion-MNIST demo
catalog; each user's next item after a prefix of actions is held out, and three
recommenders see only the prefix:

* the interest model: ``user_interests`` + ``recommend`` with the service's policy;
* popularity: items most interacted with in all users' prefixes;
* similar to last item: nearest neighbours of the last item the user acted on.

All three drop the user's seen and purchased items (the interest model does so by
default, so the baselines must too, or they would spend slots on items that can never be
the held-out next item) and only offer in-stock products (every demo product is in stock).

How a simulated user shops (``ShopperModel``):

* one to three interests, each a category with a share of the user's attention and an
  *anchor*: a random item of that category standing for the user's taste in it;
* each action stays on the current interest with ``stay_probability``, else jumps to an
  interest drawn by share (possibly the same one);
* within an interest, an item is picked with probability rising with its similarity to the
  anchor, except that with ``explore_probability`` any item of the category is picked;
* optionally (``follow_last_probability``, 0 by default) a pick centres on the user's
  previous item in that interest instead of the anchor: a shopper clicking through "more
  like this". It makes the next item depend on the last one beyond its category, the
  situation most favourable to the similar-to-last-item baseline, and is used to check that
  the conclusions survive it;
* taste is measured on raw pixels (cosine of the 28x28 images: shape and brightness), NOT
  on the CNN embedding the recommenders use, so the model is not graded on its own yardstick;
* a user never acts twice on the same item, action types follow ``demo_data``'s mix
  (view 10 : click 4 : cart 2 : purchase 1) independently of taste, and actions are
  about a minute apart.

``python -m bench.recommender_eval`` prints the report.
"""
import math
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.stats import binomtest

from recommender.demo_data import DemoProduct, demo_catalog
from recommender.edge_store import EdgeClient
from recommender.interests import ActionRecord, UserProfile
from recommender.recommend import RecommendationPolicy, recommend, user_interests
from recommender.store import Product, ProductFilter, ProductStore

MODEL = "efficientnet_lite0"
MODEL_DIM = 1280
CACHE_DIR = Path("var/evaluation")
ACTIONS = ("view", "click", "add_to_cart", "purchase")
ACTION_MIX = (10, 4, 2, 1)  # as in demo_data.shopping_session


# Metrics: one user's top-k list against one held-out item -----------------------------------

def hit_rate(recommended: Sequence[str], target: str, k: int) -> float:
    """1 if the held-out item is among the first ``k`` recommendations, else 0."""
    return float(target in recommended[:k])


def ndcg(recommended: Sequence[str], target: str, k: int) -> float:
    """With one relevant item the ideal DCG is 1, so NDCG is 1 / log2(rank + 1) (rank from 1)."""
    top = list(recommended[:k])
    return 1.0 / math.log2(top.index(target) + 2) if target in top else 0.0


def category_precision(recommended_categories: Sequence[str | None], interests: set[str]) -> float:
    """Share of the recommended items that belong to one of the user's interest categories."""
    if not recommended_categories:
        return 0.0
    return sum(category in interests for category in recommended_categories) / len(recommended_categories)


def intra_list_diversity(vectors: np.ndarray) -> float:
    """1 - mean cosine over distinct pairs of (unit) vectors; undefined below two items."""
    count = len(vectors)
    if count < 2:
        return float("nan")
    similarity = vectors @ vectors.T
    mean_off_diagonal = (similarity.sum() - np.trace(similarity)) / (count * (count - 1))
    return float(1.0 - mean_off_diagonal)


def catalog_coverage(recommendation_lists: Sequence[Sequence[str]], catalog_size: int) -> float:
    """Distinct items recommended to anyone, as a share of the catalog."""
    return len({item for items in recommendation_lists for item in items}) / catalog_size


# Catalog and embeddings --------------------------------------------------------------------

def pil_image(product: DemoProduct) -> Image.Image:
    # The same RGB pixels the service embeds after decoding the listing's PNG.
    return Image.fromarray(product.image).convert("RGB")


def catalog_embeddings(catalog: Sequence[DemoProduct], catalog_seed: int) -> np.ndarray:
    """CNN vectors of the catalog, computed once (about 30 images/s) and cached under var/."""
    path = CACHE_DIR / f"{MODEL}-demo_catalog-{len(catalog)}-seed{catalog_seed}.npy"
    if path.is_file():
        vectors = np.load(path)
        if vectors.shape == (len(catalog), MODEL_DIM):
            return vectors
    from models.embedders import load_embedder  # torch is needed only on a cold cache

    embedder = load_embedder(MODEL, threads=1)
    vectors = embedder.embed([pil_image(product) for product in catalog])
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return vectors


def pixel_vectors(catalog: Sequence[DemoProduct]) -> np.ndarray:
    pixels = np.stack([product.image.reshape(-1) for product in catalog]).astype(np.float32)
    return pixels / np.linalg.norm(pixels, axis=1, keepdims=True)


# Simulated shoppers ------------------------------------------------------------------------

@dataclass(frozen=True)
class ShopperModel:
    """How simulated users pick items; see the module docstring."""

    stay_probability: float = 0.7
    explore_probability: float = 0.1
    # Preference is exp(z / temperature), z = the item's pixel similarity to the anchor as a
    # z-score within its category: at 0.5 an item 1 sd closer than average is e^2 = 7x as likely.
    taste_temperature: float = 0.5
    mean_gap_s: float = 60.0
    # Share of in-interest picks centred on the previous item of that interest, not the anchor.
    follow_last_probability: float = 0.0


@dataclass(frozen=True)
class SimulatedUser:
    user_id: str
    categories: frozenset[str]
    profile: UserProfile  # the prefix the recommenders see
    now: float  # time of the last prefix action
    held_out: str  # the product acted on next


def taste_weights(pixels: np.ndarray, members: np.ndarray, anchor: int, temperature: float) -> np.ndarray:
    """Pick probabilities over ``members`` (catalog rows of one category) around ``anchor``."""
    similarity = pixels[members] @ pixels[anchor]
    z_scores = (similarity - similarity.mean()) / (similarity.std() + 1e-9)
    weights = np.exp((z_scores - z_scores.max()) / temperature)
    return weights / weights.sum()


def simulate_user(index: int, catalog: Sequence[DemoProduct], pixels: np.ndarray, prefix_actions: int,
                  shopper: ShopperModel, seed: int) -> SimulatedUser:
    rng = np.random.default_rng([seed, index])  # per-user stream: users don't shift when one changes
    categories = sorted({product.category for product in catalog})
    chosen = [str(category) for category in rng.choice(categories, size=rng.integers(1, 4), replace=False)]
    shares = rng.dirichlet(np.ones(len(chosen)))
    members = [np.flatnonzero([product.category == category for product in catalog]) for category in chosen]
    anchors = [rng.choice(rows) for rows in members]
    tastes = [taste_weights(pixels, rows, anchor, shopper.taste_temperature) for rows, anchor in zip(members, anchors)]

    interest = rng.choice(len(chosen), p=shares)
    acted_on: set[int] = set()
    previous: dict[int, int] = {}  # interest -> the last row picked in it
    actions, ts = [], 0.0
    for _ in range(prefix_actions + 1):
        if rng.random() > shopper.stay_probability:
            interest = rng.choice(len(chosen), p=shares)
        rows = members[interest]
        weights = np.full(len(rows), 1.0 / len(rows)) if rng.random() < shopper.explore_probability \
            else tastes[interest]
        # Drawn only when the option is on, so the default simulation's random stream is unchanged.
        if shopper.follow_last_probability > 0 and weights is tastes[interest] and interest in previous \
                and rng.random() < shopper.follow_last_probability:
            weights = taste_weights(pixels, rows, previous[interest], shopper.taste_temperature)
        weights = np.where(np.isin(rows, list(acted_on)), 0.0, weights)
        row = int(rng.choice(rows, p=weights / weights.sum()))
        acted_on.add(row)
        previous[interest] = row
        action = ACTIONS[rng.choice(len(ACTIONS), p=np.array(ACTION_MIX) / sum(ACTION_MIX))]
        actions.append(ActionRecord(catalog[row].product_id, action, ts))
        ts += rng.exponential(shopper.mean_gap_s)

    prefix, held_out = actions[:-1], actions[-1]
    profile = UserProfile(tuple(prefix), frozenset(a.product_id for a in prefix if a.action == "purchase"))
    return SimulatedUser(f"sim-{index}", frozenset(chosen), profile, prefix[-1].ts, held_out.product_id)


# Recommenders under test: (user) -> product ids, best first ---------------------------------

Recommender = Callable[[SimulatedUser], list[str]]


def excluded_items(profile: UserProfile) -> frozenset[str]:
    """What ``recommend`` drops by default, applied to the baselines too."""
    return frozenset(profile.purchased | profile.seen())


def interest_model(store: ProductStore, policy: RecommendationPolicy) -> Recommender:
    def recommend_for(user: SimulatedUser) -> list[str]:
        interests = user_interests(store, user.profile, user.now, policy)
        return [hit.product.product_id for hit in recommend(store, user.profile, interests, policy)]
    return recommend_for


def popularity(users: Sequence[SimulatedUser], k: int) -> Recommender:
    counts = Counter(action.product_id for user in users for action in user.profile.actions)
    ranked = [product_id for product_id, _ in counts.most_common()]  # ties keep first-seen order

    def recommend_for(user: SimulatedUser) -> list[str]:
        excluded = excluded_items(user.profile)
        return [product_id for product_id in ranked if product_id not in excluded][:k]
    return recommend_for


def similar_to_last_item(store: ProductStore, vectors: dict[str, np.ndarray], k: int) -> Recommender:
    def recommend_for(user: SimulatedUser) -> list[str]:
        last = user.profile.actions[-1].product_id
        hits = store.search(vectors[last][None], limit=k,
                            product_filter=ProductFilter(exclude_ids=excluded_items(user.profile)))[0]
        return [hit.product.product_id for hit in hits]
    return recommend_for


# Evaluation --------------------------------------------------------------------------------

@dataclass(frozen=True)
class EvaluationSetup:
    catalog_size: int = 2000
    users: int = 300
    prefix_actions: int = 20
    seed: int = 0
    catalog_seed: int = 7  # demo_catalog's default
    k: int = 10


@dataclass(frozen=True)
class MethodResult:
    name: str
    hits: np.ndarray  # per user, 0 or 1, for paired comparisons
    ndcg: float
    category_precision: float
    diversity: float
    coverage: float

    @property
    def hit_rate(self) -> float:
        return float(self.hits.mean())


@dataclass(frozen=True)
class Testbed:
    """A catalog in a store of its own and simulated users browsing it."""

    setup: EvaluationSetup
    folder: tempfile.TemporaryDirectory  # the store's; removed with the testbed
    store: ProductStore
    vectors: dict[str, np.ndarray]  # CNN vectors by product id
    categories: dict[str, str]
    users: list[SimulatedUser]


def build_testbed(setup: EvaluationSetup, shopper: ShopperModel = ShopperModel()) -> Testbed:
    catalog = demo_catalog(setup.catalog_size, seed=setup.catalog_seed)
    embeddings = catalog_embeddings(catalog, setup.catalog_seed)
    # The service's embedded engine (Qdrant Edge) with its vector cache: a fifth of the CPU of
    # qdrant-client's in-memory mode for the same lists.
    folder = tempfile.TemporaryDirectory(prefix="vr-eval-")
    store = ProductStore(EdgeClient(Path(folder.name)), MODEL, MODEL_DIM, vector_cache_items=len(catalog))
    store.upsert_products([Product(p.product_id, p.title, p.price, p.category) for p in catalog], embeddings)
    pixels = pixel_vectors(catalog)
    users = [simulate_user(index, catalog, pixels, setup.prefix_actions, shopper, setup.seed)
             for index in range(setup.users)]
    return Testbed(setup, folder, store, {p.product_id: vector for p, vector in zip(catalog, embeddings)},
                   {p.product_id: p.category for p in catalog}, users)


def evaluate(name: str, recommender: Recommender, testbed: Testbed) -> MethodResult:
    k, users, vectors = testbed.setup.k, testbed.users, testbed.vectors
    lists = [recommender(user)[:k] for user in users]
    return MethodResult(
        name=name,
        hits=np.array([hit_rate(items, user.held_out, k) for items, user in zip(lists, users)]),
        ndcg=float(np.mean([ndcg(items, user.held_out, k) for items, user in zip(lists, users)])),
        category_precision=float(np.mean([category_precision([testbed.categories[i] for i in items], user.categories)
                                           for items, user in zip(lists, users)])),
        diversity=float(np.nanmean([intra_list_diversity(np.stack([vectors[i] for i in items]))
                                    for items in lists if len(items) >= 2])),
        coverage=catalog_coverage(lists, len(testbed.categories)))


@dataclass(frozen=True)
class PairedHits:
    """Users the model hit and the baseline missed (wins), the reverse (losses), and the
    exact two-sided sign-test p-value of that split (ties carry no information)."""

    wins: int
    losses: int
    p_value: float


def paired_hits(model: np.ndarray, baseline: np.ndarray) -> PairedHits:
    wins, losses = int(((model == 1) & (baseline == 0)).sum()), int(((model == 0) & (baseline == 1)).sum())
    p_value = binomtest(wins, wins + losses).pvalue if wins + losses else 1.0
    return PairedHits(wins, losses, p_value)


def run(setup: EvaluationSetup, policy: RecommendationPolicy | None = None,
        shopper: ShopperModel = ShopperModel()) -> list[MethodResult]:
    """The interest model first, then the baselines, all on the same simulated users."""
    testbed = build_testbed(setup, shopper)
    methods = {"interest model": interest_model(testbed.store, policy or RecommendationPolicy(k=setup.k)),
               "popularity": popularity(testbed.users, setup.k),
               "similar to last item": similar_to_last_item(testbed.store, testbed.vectors, setup.k)}
    return [evaluate(name, recommender, testbed) for name, recommender in methods.items()]
