"""Tables decode what their changelog holds, so a restarted worker can recover them."""
from streams.app import profiles


def test_a_profile_survives_its_changelog_round_trip():
    store = profiles.data
    profile = {"recent": [["fm-1", "view", 1.0]], "purchased": ["fm-2"]}
    assert store._decode_value(store._encode_value(profile)) == profile
