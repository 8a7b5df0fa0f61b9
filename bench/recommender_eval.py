"""Offline evaluation of the interest model against two baselines on simulated sessions.

Prints one markdown table per run: hit rate@k and NDCG@k on each user's held-out next
item, category precision@k, intra-list diversity, catalog coverage, and a paired sign test
of the interest model's hits against each baseline's. See ``recommender.evaluation`` for
how the shoppers are simulated (they are not real users).
"""
import argparse
from collections.abc import Sequence

import numpy as np
import torch

from bench.timing import machine_summary, table
from recommender.evaluation import EvaluationSetup, MethodResult, ShopperModel, paired_hits, run
from recommender.recommend import RecommendationPolicy


def report(setup: EvaluationSetup, policy: RecommendationPolicy, results: Sequence[MethodResult],
           shopper: ShopperModel = ShopperModel()) -> str:
    k = setup.k
    rows = [(r.name, r.hit_rate, r.ndcg, r.category_precision, r.diversity, r.coverage) for r in results]
    lines = [f"catalog {setup.catalog_size} Fashion-MNIST demo products (demo_catalog seed {setup.catalog_seed}), "
             f"{setup.users} simulated users, {setup.prefix_actions} actions each + 1 held out, "
             f"simulation seed {setup.seed}, follow_last_probability={shopper.follow_last_probability:g}, k={k}",
             f"interest model: interest_min_similarity={policy.interest_min_similarity}, "
             f"diversity={policy.diversity}, half_life_s={policy.half_life_s:g}, "
             f"share_half_life_s={policy.share_half_life_s:g}, kernel_width={policy.kernel_width:g}", "",
             table(["method", f"hit rate@{k}", f"NDCG@{k}", f"category precision@{k}", "diversity (ILD)",
                    "coverage"], rows), ""]
    model, *baselines = results
    lines += [paired_comparison(model.name, model.hits, baseline.name, baseline.hits) for baseline in baselines]
    return "\n".join(lines)


def paired_comparison(model: str, model_hits: np.ndarray, baseline: str, baseline_hits: np.ndarray) -> str:
    paired = paired_hits(model_hits, baseline_hits)
    return (f"{model} vs {baseline}: {paired.wins} users hit only by the model, {paired.losses} only by "
            f"the baseline (sign test p={paired.p_value:.3g})")


def pooled_hits(runs: Sequence[Sequence[MethodResult]]) -> str:
    """Hit rates over the users of every seed: more users, a tighter comparison."""
    hits = {result.name: np.concatenate([results[index].hits for results in runs])
            for index, result in enumerate(runs[0])}
    (model, model_hits), *baselines = hits.items()
    lines = [f"all {len(runs)} seeds, {len(model_hits)} users: " +
             ", ".join(f"{name} hit rate@k {values.mean():.3f}" for name, values in hits.items())]
    lines += [paired_comparison(model, model_hits, name, baseline_hits) for name, baseline_hits in baselines]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    defaults = EvaluationSetup()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalog", type=int, default=defaults.catalog_size, help="products in the catalog")
    parser.add_argument("--users", type=int, default=defaults.users)
    parser.add_argument("--actions", type=int, default=defaults.prefix_actions, help="actions seen per user")
    parser.add_argument("--seeds", type=int, nargs="+", default=[defaults.seed], help="one run per simulation seed")
    # Policy knobs, so an earlier or candidate default can be measured beside the current one.
    parser.add_argument("--interest-min-similarity", type=float, default=RecommendationPolicy.interest_min_similarity)
    parser.add_argument("--diversity", type=float, default=RecommendationPolicy.diversity)
    parser.add_argument("--share-half-life", type=float, default=RecommendationPolicy.share_half_life_s,
                        help="seconds; a very large value shares the list by long-term weight")
    parser.add_argument("--kernel-width", type=float, default=RecommendationPolicy.kernel_width)
    parser.add_argument("--follow-last", type=float, default=ShopperModel.follow_last_probability,
                        help="simulation: share of in-interest picks centred on the previous item, not the anchor")
    args = parser.parse_args(argv)
    policy = RecommendationPolicy(k=defaults.k, interest_min_similarity=args.interest_min_similarity,
                                  diversity=args.diversity, share_half_life_s=args.share_half_life,
                                  kernel_width=args.kernel_width)
    shopper = ShopperModel(follow_last_probability=args.follow_last)
    torch.set_num_threads(1)  # the embedder runs only on a cold cache; the host is shared
    print(machine_summary())
    runs = []
    for seed in args.seeds:
        setup = EvaluationSetup(catalog_size=args.catalog, users=args.users, prefix_actions=args.actions, seed=seed)
        runs.append(run(setup, policy, shopper))
        print("\n" + report(setup, policy, runs[-1], shopper), flush=True)
    if len(runs) > 1:
        print("\n" + pooled_hits(runs))


if __name__ == "__main__":
    main()
