import pytest

from recommender.analytics import action_shares, conversion_rates

WINDOW = {("Sneaker", "view"): 40, ("Sneaker", "purchase"): 4, ("Sneaker", "add_to_cart"): 10,
          ("Bag", "view"): 10, ("Bag", "purchase"): 3, ("Coat", "purchase"): 1}


def test_conversion_is_purchases_per_view_and_none_without_views():
    assert conversion_rates(WINDOW) == {"Bag": pytest.approx(0.3), "Coat": None, "Sneaker": pytest.approx(0.1)}


def test_conversion_between_other_actions():
    assert conversion_rates(WINDOW, "add_to_cart", "purchase")["Sneaker"] == pytest.approx(0.4)


def test_action_shares_sum_to_one_and_ignore_other_actions():
    shares = action_shares(WINDOW, "purchase")
    assert shares == {"Bag": pytest.approx(3 / 8), "Coat": pytest.approx(1 / 8), "Sneaker": pytest.approx(4 / 8)}
    assert action_shares(WINDOW, "click") == {}
