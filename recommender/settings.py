"""Every knob of the service, read once from environment variables (prefix ``VR_``).

Defaults run everything on one machine: the local broker started by ``infra/broker.sh``
and an embedded Qdrant store under ``var/``.
"""
import socket
from functools import lru_cache
from typing import Literal
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VR_", env_file=".env", extra="ignore")

    # Kafka
    kafka_broker: str = Field("kafka://127.0.0.1:9092", description="Faust broker URL(s), comma separated")
    kafka_partitions: int = Field(4, ge=1, description="Partitions of every input topic and table")
    kafka_replication: int = Field(1, ge=1, description="Replication factor of created topics")
    topic_prefix: str = Field("", description="Prepended to every topic name (lets tests share one broker)")
    app_id: str = Field("visual-recs", description="Faust app id = consumer group and changelog prefix")
    kafka_security_protocol: str = Field("PLAINTEXT", pattern="^(PLAINTEXT|SSL|SASL_PLAINTEXT|SASL_SSL)$",
                                         description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL")
    kafka_sasl_mechanism: str = Field("PLAIN", description="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512")
    kafka_sasl_username: str | None = Field(None, description="SASL user name")
    kafka_sasl_password: str | None = Field(None, repr=False, description="SASL password")
    kafka_ssl_cafile: str | None = Field(None, description="CA bundle for TLS; system CAs when unset")
    kafka_max_poll_records: int = Field(500, ge=1, description="Most events one fetch hands to the agents; "
                                        "more than it works off within Faust's poll interval (1,000 s) and the "
                                        "worker leaves its group")
    kafka_idle_fetch_pause_ms: int = Field(50, ge=0, description="Pause before fetching again after the broker "
                                           "answered a fetch empty at once (the local broker does; Kafka waits "
                                           "for records), so an idle worker does not spin a core; 0 = off")
    max_message_bytes: int = Field(8_000_000, description="Larger events go to the dead-letter topic unread")

    data_dir: Path = Field(Path("var"), description="Local working files (Faust's per-app folder)")

    # Vector store
    qdrant_url: str | None = Field(None, description="Qdrant server URL; unset = embedded store")
    qdrant_api_key: str | None = Field(None, repr=False, description="API key for a Qdrant server")
    qdrant_shard_number: int | None = Field(None, ge=1, description="Shards of each collection created on a "
                                            "Qdrant server or cluster; unset = the server's default")
    qdrant_replication_factor: int | None = Field(None, ge=1, description="Copies of each shard on a Qdrant "
                                                  "cluster; unset = the server's default")
    # Qdrant Edge by default: Qdrant's own engine in-process. At 5,000 products a filtered
    # search took 2-7 ms CPU there against 52-108 ms in qdrant-client's Python local mode,
    # which scans every vector in numpy (see BENCHMARKS.md).
    embedded_store: Literal["edge", "qdrant-local"] = Field(
        "edge", description="Engine of the embedded store (when VR_QDRANT_URL is unset)")
    qdrant_path: str = Field("var/qdrant", description="Embedded store folder (each worker uses a subfolder named "
                             "by app id and web port); ':memory:' = qdrant-client in RAM, nothing on disk")
    collection_prefix: str = Field("", description="Prepended to collection names")
    vector_cache_items: int = Field(20_000, ge=0, description="Image vectors an embedded store keeps in RAM "
                                    "for recommendations (about 5 KB each); a server store keeps none")

    # Images and model
    embedder: str = Field("efficientnet_lite0", description="Backbone name from models.embedders.EMBEDDERS or a model file path")
    text_embedder: str = Field("all-minilm-l6-v2", description="Title model for keyword search; 'none' turns it off")
    ingest_batch_size: int = Field(32, ge=1, description="Catalog events taken from the stream at once")
    ingest_batch_wait_s: float = Field(0.05, gt=0, description="Longest wait to fill an ingest batch")
    embed_runtime: Literal["torch", "onnx"] = Field("torch", description="CNN runtime; 'onnx' (ONNX Runtime) ran "
                                                    "the forward pass about 3.5x faster here (BENCHMARKS.md)")
    forward_batch: int = Field(4, ge=1, description="Images per CNN forward pass")
    torch_threads: int = Field(1, ge=1, description="torch intra-op threads (1 is fastest on a busy 2-core host)")
    image_root: Path = Field(Path("var/images"), description="Catalog events may reference files only below this folder")
    max_image_bytes: int = Field(5_000_000, description="Encoded image size limit")
    max_image_pixels: int = Field(40_000_000, description="Decoded pixel limit (decompression-bomb guard)")

    # Recommendations
    similar_k: int = Field(10, ge=1, le=100, description="Similar items emitted per product")
    refresh_neighbours: int = Field(3, ge=0, le=20, description="Nearest existing products whose similar list is "
                                    "re-emitted when a new product lands beside them")
    recommend_k: int = Field(10, ge=1, le=100, description="Recommendations emitted per user")
    interest_half_life_s: float = Field(3600.0, gt=0, description="An action's weight halves after this long")
    popularity_window_s: float = Field(3600.0, gt=0, description="Popularity counts actions of this long a window")
    profile_max_actions: int = Field(50, ge=1, description="Recent actions kept per user")
    action_batch_size: int = Field(64, ge=1, description="Shopper actions taken from the stream at once "
                                   "(one store lookup and one user upsert per batch)")
    action_batch_wait_s: float = Field(0.005, gt=0, description="Longest wait to fill a batch of actions "
                                       "(adds at most this to an action's latency)")
    max_interests: int = Field(3, ge=1, description="Interest clusters per user")
    interest_share_half_life_s: float = Field(120.0, gt=0, description="Each interest's share of the list follows "
                                              "its actions' weights halved every this long before the newest action")
    interest_kernel_width: float = Field(0.05, gt=0, description="How near (in cosine) a product must lie to a user's "
                                         "items to score as next to them")
    recommend_diversity: float = Field(0.15, ge=0, le=1, description="MMR weight of diversity in the list (0 = rank "
                                       "by score only)")

    # Catalog intelligence (defaults calibrated by models/intel_report.py; see BENCHMARKS.md)
    category_mismatch_confidence: float = Field(0.7, ge=0, le=1, description="Flag a declared category only when "
                                                "the neighbours' vote for another one is at least this confident")
    copy_min_similarity: float = Field(0.945, ge=0, le=1, description="Cosine similarity that alone makes a near-copy")
    copy_min_similarity_with_hash: float = Field(0.88, ge=0, le=1, description="Lower similarity that counts when "
                                                 "the perceptual hashes agree too")
    copy_max_hash_distance: int = Field(4, ge=0, le=64, description="pHash bits that may differ for hashes to agree")
    shelf_match_threshold: float = Field(0.8, ge=0, le=1, description="Shelf crops less similar than this to every "
                                         "product count as 'unknown'")
    analytics_window_s: float = Field(60.0, gt=0, description="Tumbling window of the per-category analytics")

    # HTTP
    admin_token: str | None = Field(None, repr=False, description="Bearer token for /api/admin/*; unset = admin API off")
    web_port: int = Field(6066, description="Worker web port (query API, metrics, demo page)")
    web_host: str = Field(default_factory=socket.gethostname, description="Name other workers reach this "
                          "worker's web server by: a user's request is forwarded to the worker holding the profile")

    # Operations
    log_format: Literal["text", "json"] = Field("text", description="Worker log lines: 'text' for people, "
                                                "'json' for one JSON object per line (log collectors)")


@lru_cache
def get_settings() -> Settings:
    return Settings()
