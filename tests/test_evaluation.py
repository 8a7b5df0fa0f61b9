import math

import numpy as np
import pytest

from recommender.evaluation import (catalog_coverage, category_precision, hit_rate, intra_list_diversity, ndcg,
                                    paired_hits)


def test_hit_rate_counts_the_target_only_within_k():
    assert hit_rate(["a", "b", "c"], "c", k=3) == 1.0
    assert hit_rate(["a", "b", "c"], "c", k=2) == 0.0
    assert hit_rate(["a", "b"], "z", k=10) == 0.0


def test_ndcg_discounts_by_rank_of_the_single_relevant_item():
    assert ndcg(["t", "b", "c"], "t", k=10) == pytest.approx(1.0)
    assert ndcg(["a", "b", "t"], "t", k=10) == pytest.approx(1 / math.log2(4))  # 0.5
    assert ndcg(["a", "b", "t"], "t", k=2) == 0.0
    assert ndcg(["a", "b"], "t", k=10) == 0.0


def test_category_precision_is_the_share_in_the_users_categories():
    assert category_precision(["Bag", "Coat", "Bag", None], {"Bag"}) == pytest.approx(0.5)
    assert category_precision(["Bag", "Coat"], {"Bag", "Coat"}) == 1.0
    assert category_precision([], {"Bag"}) == 0.0


def test_diversity_is_zero_for_identical_and_one_for_orthogonal_vectors():
    identical = np.tile(np.array([[0.6, 0.8]]), (3, 1))
    assert intra_list_diversity(identical) == pytest.approx(0.0)
    assert intra_list_diversity(np.eye(4)) == pytest.approx(1.0)
    # Pairs (a,b)=1, (a,c)=0, (b,c)=0: mean cosine 1/3.
    assert intra_list_diversity(np.array([[1.0, 0], [1.0, 0], [0, 1.0]])) == pytest.approx(2 / 3)
    assert math.isnan(intra_list_diversity(np.eye(2)[:1]))


def test_coverage_counts_distinct_items_over_the_catalog():
    assert catalog_coverage([["a", "b"], ["b", "c"], []], catalog_size=10) == pytest.approx(0.3)
    assert catalog_coverage([], catalog_size=10) == 0.0


def test_paired_hits_count_only_disagreements():
    model = np.array([1, 1, 1, 0, 0, 1])
    baseline = np.array([1, 0, 0, 1, 0, 0])
    result = paired_hits(model, baseline)
    assert (result.wins, result.losses) == (3, 1)
    assert result.p_value == pytest.approx(0.625)  # two-sided exact binomial, 3 of 4 at p=1/2
