"""Is the shopper simulation fair to both recommenders? Prints what the next item depends on.

``python -m bench.recommender_sim_check --seed 100 --users 1000`` (a tuning seed, not a
reported one). For each simulated user (``recommender.evaluation.simulate_user``):

* how often the held-out next item is in the last item's category (category persistence);
* within that category, the next item's cosine to the last item vs its mean cosine to the
  user's earlier items of the same category: equal means the last item tells no more about
  the next one than any other item of that taste (no last-item random walk);
* hit rate@10 of the CNN neighbours of the true anchor of the next item's interest: a
  ceiling for any recommender that ranks by CNN similarity to one point, and of the last item.
"""
import argparse

import numpy as np

from recommender import evaluation as ev
from recommender.demo_data import demo_catalog


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=100)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--catalog", type=int, default=ev.EvaluationSetup.catalog_size)
    parser.add_argument("--follow-last", type=float, default=0.0)
    args = parser.parse_args(argv)
    setup = ev.EvaluationSetup(catalog_size=args.catalog)
    catalog = demo_catalog(args.catalog, seed=setup.catalog_seed)
    embeddings = ev.catalog_embeddings(catalog, setup.catalog_seed)
    pixels = ev.pixel_vectors(catalog)
    row_of = {product.product_id: row for row, product in enumerate(catalog)}
    category = np.array([product.category for product in catalog])
    shopper = ev.ShopperModel(follow_last_probability=args.follow_last)
    same_category, cnn_last, cnn_earlier, pixel_last, pixel_earlier, anchor_hits, last_hits = [], [], [], [], [], [], []
    for index in range(args.users):
        user = ev.simulate_user(index, catalog, pixels, setup.prefix_actions, shopper, args.seed)
        # Replay simulate_user's first draws to recover the anchors it does not return.
        rng = np.random.default_rng([args.seed, index])
        categories = sorted({product.category for product in catalog})
        chosen = [str(c) for c in rng.choice(categories, size=rng.integers(1, 4), replace=False)]
        rng.dirichlet(np.ones(len(chosen)))
        anchors = [rng.choice(np.flatnonzero(category == c)) for c in chosen]
        assert set(chosen) == set(user.categories)
        held_out, prefix = row_of[user.held_out], [row_of[a.product_id] for a in user.profile.actions]
        last = prefix[-1]
        same_category.append(category[held_out] == category[last])
        earlier = [row for row in prefix[:-1] if category[row] == category[held_out]]
        if category[held_out] == category[last] and earlier:
            cnn_last.append(embeddings[held_out] @ embeddings[last])
            cnn_earlier.append(np.mean(embeddings[earlier] @ embeddings[held_out]))
            pixel_last.append(pixels[held_out] @ pixels[last])
            pixel_earlier.append(np.mean(pixels[earlier] @ pixels[held_out]))
        seen = set(prefix)
        for query, hits in ((anchors[chosen.index(category[held_out])], anchor_hits), (last, last_hits)):
            nearest = [row for row in np.argsort(-(embeddings @ embeddings[query])) if row not in seen][:setup.k]
            hits.append(held_out in nearest)
    print(f"simulation seed {args.seed}, {args.users} users, follow_last_probability={args.follow_last:g}")
    print(f"next item in the last item's category: {np.mean(same_category):.3f}")
    print(f"same category, CNN cosine of the next item to the last item {np.mean(cnn_last):.3f}, "
          f"to earlier items of that category {np.mean(cnn_earlier):.3f} (pixels: {np.mean(pixel_last):.3f} vs "
          f"{np.mean(pixel_earlier):.3f})")
    print(f"hit rate@{setup.k} of the CNN neighbours of the true anchor (a ceiling): {np.mean(anchor_hits):.3f}; "
          f"of the last item: {np.mean(last_hits):.3f}")


if __name__ == "__main__":
    main()
