from recommender.popularity import PopularItem, PopularityBoard


def test_popularity_board_ranks_live_windows_and_filters():
    board = PopularityBoard()
    board.update([PopularItem("a", "shoe", 5.0, window_end=100.0), PopularItem("b", "bag", 9.0, window_end=100.0),
                  PopularItem("c", "shoe", 7.0, window_end=50.0)])  # c's window is over at t=60
    board.update([PopularItem("a", "shoe", 1.0, window_end=40.0)])  # older than what we hold: ignored
    assert [i.product_id for i in board.top(5, now=60.0)] == ["b", "a"]
    assert [i.product_id for i in board.top(5, now=60.0, category="shoe")] == ["a"]
    assert [i.product_id for i in board.top(5, now=10.0, exclude=frozenset({"b"}))] == ["c", "a"]
