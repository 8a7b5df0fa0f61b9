"""Tables decode what their changelog holds, so a restarted worker can recover them."""
from streams.app import actions_topic, profiles


def test_a_profile_survives_its_changelog_round_trip():
    store = profiles.data
    profile = {"recent": [["fm-1", "view", 1.0]], "purchased": ["fm-2"]}
    assert store._decode_value(store._encode_value(profile)) == profile


def test_a_profile_is_keyed_and_placed_like_its_users_actions():
    # Shoppers' events carry the raw user id as key, placed by Kafka's default partitioner
    # (murmur2). The changelog gets the same bytes as key, placed by the same partitioner,
    # over the same number of partitions: so the same partition number.
    assert profiles.use_partitioner and profiles.partitions == actions_topic.partitions
    for user_id in ("user-1", "anna", "ünïcode-user"):
        assert profiles.changelog_topic.prepare_key(user_id.encode(), None)[0] == user_id.encode()
        assert profiles.data._decode_key(user_id.encode()) == user_id.encode()  # what recovery reads back
        assert actions_topic.prepare_key(user_id.encode(), None)[0] == user_id.encode()
