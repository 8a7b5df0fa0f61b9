"""Every Kafka topic of the service, declared once.

Topics are created with explicit partition counts before any worker starts
(``python -m streams.topics``): a topic auto-created by a consumer gets one partition,
and a table co-partitioned with it then fails with ``PartitionsMismatch``.
"""
import argparse
import ssl
import time
from dataclasses import dataclass

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from recommender.settings import Settings, get_settings


@dataclass(frozen=True)
class TopicSpec:
    name: str
    description: str
    keyed_by: str
    compacted: bool = False


CATALOG = TopicSpec("catalog.products", "product listings (input; compacted: the catalog's source of truth)",
                    "product_id", compacted=True)
CATALOG_VECTORS = TopicSpec("catalog.vectors", "products with their image embedding (compacted: every worker's "
                            "vector store is rebuilt from it without re-running the CNN)", "product_id", compacted=True)
ACTIONS = TopicSpec("shopper.actions", "view / click / add_to_cart / purchase (input)", "user_id")
UPLOADS = TopicSpec("shopper.uploads", "search-by-photo requests (input)", "request id")
SIMILAR_ITEMS = TopicSpec("recs.similar-items", "similar products per product (output)", "product_id", compacted=True)
RECOMMENDATIONS = TopicSpec("recs.user-recommendations", "you-may-also-like per user (output)", "user_id",
                            compacted=True)
SEARCH_RESULTS = TopicSpec("recs.search-results", "results of photo searches (output)", "request id")
PRODUCT_ACTIONS = TopicSpec("analytics.product-actions", "shopper actions with the product's category, re-keyed "
                            "by product (output; input of the popularity and analytics agents)", "product_id")
POPULARITY = TopicSpec("analytics.popularity", "windowed popularity score per product (output; compacted)",
                       "product_id", compacted=True)
REFERENCES = TopicSpec("catalog.references", "genuine reference images of brands (input)", "reference_id")
SHELF_FRAMES = TopicSpec("warehouse.shelf-frames", "shelf-camera frames (input)", "store_id")
CATEGORY_PREDICTIONS = TopicSpec("catalog.categories", "predicted category per listing (output)", "product_id",
                                 compacted=True)
CATALOG_FLAGS = TopicSpec("catalog.flags", "listings to review: category mismatch, counterfeit suspect, near "
                          "duplicate, with evidence (output)", "product_id")
INVENTORY_UPDATES = TopicSpec("inventory.updates", "stock count changes per store, shelf and product (output)",
                              "store_id")
CATEGORY_ACTIONS = TopicSpec("analytics.category-actions", "actions and uploads re-keyed by category (output; "
                             "input of the category analytics agent)", "category")
CATEGORY_STATS = TopicSpec("analytics.category-stats", "per-category action counts and conversion in tumbling "
                           "windows (output)", "category")
DEAD_LETTERS = TopicSpec("dead-letters", "rejected input with the reason (output)", "source topic")

INPUT_TOPICS = (CATALOG, ACTIONS, UPLOADS)
ALL_TOPICS = (CATALOG, CATALOG_VECTORS, ACTIONS, UPLOADS, SIMILAR_ITEMS, RECOMMENDATIONS, SEARCH_RESULTS,
              PRODUCT_ACTIONS, POPULARITY, REFERENCES, SHELF_FRAMES, CATEGORY_PREDICTIONS, CATALOG_FLAGS,
              INVENTORY_UPDATES, CATEGORY_ACTIONS, CATEGORY_STATS, DEAD_LETTERS)


def topic_name(spec: TopicSpec, settings: Settings) -> str:
    return settings.topic_prefix + spec.name


def bootstrap_servers(settings: Settings) -> list[str]:
    return [url.split("://", 1)[-1] for url in settings.kafka_broker.split(",")]


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    if "SSL" not in settings.kafka_security_protocol:
        return None
    return ssl.create_default_context(cafile=settings.kafka_ssl_cafile)


def security_options(settings: Settings) -> dict:
    """SASL/TLS options in the spelling aiokafka and kafka-python share."""
    options: dict = {"security_protocol": settings.kafka_security_protocol}
    if settings.kafka_security_protocol.startswith("SASL"):
        options.update(sasl_mechanism=settings.kafka_sasl_mechanism, sasl_plain_username=settings.kafka_sasl_username,
                       sasl_plain_password=settings.kafka_sasl_password)
    if context := ssl_context(settings):
        options["ssl_context"] = context
    return options


def topic_configs(spec: TopicSpec, settings: Settings) -> dict[str, str]:
    configs = {"cleanup.policy": "compact"} if spec.compacted else {}
    if spec in INPUT_TOPICS:
        # Brokers refuse messages over 1 MB unless told otherwise, and inputs may be as large as
        # max_message_bytes (inline photos). Messages over that limit must still arrive, so the
        # worker can dead-letter them with a reason: the broker takes up to twice the limit.
        configs["max.message.bytes"] = str(2 * settings.max_message_bytes)
    return configs


def create_topics(settings: Settings, specs: tuple[TopicSpec, ...] = ALL_TOPICS, timeout_s: float = 30.0) -> list[str]:
    """Create missing topics (idempotent); returns the names that were created."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers(settings), client_id="visual-recs-admin",
                                     **security_options(settings))
            break
        except KafkaError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    try:
        existing = set(admin.list_topics())
        wanted = [NewTopic(topic_name(spec, settings), settings.kafka_partitions, settings.kafka_replication,
                           topic_configs=topic_configs(spec, settings))
                  for spec in specs if topic_name(spec, settings) not in existing]
        created = []
        for topic in wanted:
            try:
                admin.create_topics([topic])
                created.append(topic.name)
            except TopicAlreadyExistsError:  # another process won the race
                pass
        return created
    finally:
        admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="Create the service's Kafka topics (safe to re-run).")
    parser.parse_args()
    settings = get_settings()
    created = create_topics(settings)
    for spec in ALL_TOPICS:
        state = "created" if topic_name(spec, settings) in created else "exists"
        print(f"{topic_name(spec, settings):32} {state:8} {settings.kafka_partitions} partitions  {spec.description}")


if __name__ == "__main__":
    main()
