"""The Faust application and its topics and tables: one place for each."""
import faust

from recommender.settings import get_settings
from streams import faust_fixes, topics  # noqa: F401 (faust_fixes patches faust on import)
from streams.idle_fetch import pause_idle_fetches
from streams.logs import worker_logging_config

settings = get_settings()
pause_idle_fetches(settings.kafka_idle_fetch_pause_ms / 1000)
(settings.data_dir / "faust").mkdir(parents=True, exist_ok=True)  # Faust creates only the last level


def broker_credentials():
    """Faust's form of the SASL/TLS settings (None for the local broker)."""
    context = topics.ssl_context(settings)
    if settings.kafka_security_protocol.startswith("SASL"):
        return faust.SASLCredentials(username=settings.kafka_sasl_username, password=settings.kafka_sasl_password,
                                     mechanism=settings.kafka_sasl_mechanism, ssl_context=context)
    return context


app = faust.App(
    settings.app_id,
    broker=settings.kafka_broker,
    broker_credentials=broker_credentials(),
    store="memory://",  # tables live in RAM and are rebuilt from their changelog topics on start
    datadir=str(settings.data_dir / "faust" / "{conf.name}"),
    topic_partitions=settings.kafka_partitions,
    topic_replication_factor=settings.kafka_replication,
    key_serializer="raw",
    value_serializer="raw",
    web_port=settings.web_port,
    web_host=settings.web_host,
    consumer_auto_offset_reset="earliest",
    # Unlimited by default: one fetch then hands over everything buffered, which for a worker
    # restarted on a backlog was thousands of events (7,961 in an 8,000-event crash run, 45 s to
    # work off). Faust fetches again only once they are processed, and a consumer that has not
    # fetched for the poll interval (1,000 s) leaves its group: the 100,000-event crash run stalled so.
    broker_max_poll_records=settings.kafka_max_poll_records,
    logging_config=worker_logging_config(settings),
    autodiscover=False,
)


def _topic(spec: topics.TopicSpec) -> faust.TopicT:
    return app.topic(topics.topic_name(spec, settings), key_type=bytes, value_type=bytes,
                     partitions=settings.kafka_partitions)


catalog_topic = _topic(topics.CATALOG)
catalog_vectors_topic = _topic(topics.CATALOG_VECTORS)
actions_topic = _topic(topics.ACTIONS)
uploads_topic = _topic(topics.UPLOADS)
similar_items_topic = _topic(topics.SIMILAR_ITEMS)
recommendations_topic = _topic(topics.RECOMMENDATIONS)
search_results_topic = _topic(topics.SEARCH_RESULTS)
product_actions_topic = _topic(topics.PRODUCT_ACTIONS)
references_topic = _topic(topics.REFERENCES)
shelf_frames_topic = _topic(topics.SHELF_FRAMES)
category_predictions_topic = _topic(topics.CATEGORY_PREDICTIONS)
catalog_flags_topic = _topic(topics.CATALOG_FLAGS)
inventory_updates_topic = _topic(topics.INVENTORY_UPDATES)
category_actions_topic = _topic(topics.CATEGORY_ACTIONS)
category_stats_topic = _topic(topics.CATEGORY_STATS)
popularity_topic = _topic(topics.POPULARITY)
dead_letters_topic = _topic(topics.DEAD_LETTERS)

# Keyed by the user id's bytes and placed by Kafka's default partitioner, exactly like the
# actions topic (same partition count), so a user's events and profile share a partition
# number. (Faust serializes a str key as JSON, '"anna"', which hashes elsewhere; bytes go raw.)
# Placing by key rather than by the event being processed lets the agent write a batch's
# profiles after the batch, and lets table_route find a profile's worker from its key.
# Values are plain JSON objects: no value_type, since Faust decodes a typed value with
# ``value_type.from_data``, which dict lacks, and a worker then never recovers the table.
# key_type=bytes on the table itself too: recovery decodes changelog keys by it (as JSON when unset).
profiles = app.Table("user-profiles", default=dict, partitions=settings.kafka_partitions, use_partitioner=True,
                     key_type=bytes, schema=faust.Schema(key_type=bytes, value_serializer="json"))

# Keyed by product id, like analytics.product-actions: action-weighted counts in hopping windows.
popularity = app.Table("product-popularity", default=float, partitions=settings.kafka_partitions,
                       schema=faust.Schema(key_type=str, value_type=float, key_serializer="json",
                                           value_serializer="json"),
                       ).hopping(settings.popularity_window_s, settings.popularity_window_s / 4,
                                 expires=settings.popularity_window_s * 2)

# Keyed "store_id/shelf_id" (frames are keyed by store id): the last count per product on each shelf.
shelf_stock = app.Table("shelf-stock", default=dict, partitions=settings.kafka_partitions,
                        schema=faust.Schema(key_type=str, key_serializer="json", value_serializer="json"))

# Keyed "category|action", like analytics.category-actions: events per tumbling window.
category_counts = app.Table("category-action-counts", default=int, partitions=settings.kafka_partitions,
                            schema=faust.Schema(key_type=str, key_serializer="json", value_serializer="json"),
                            ).tumbling(settings.analytics_window_s, expires=settings.analytics_window_s * 3)
