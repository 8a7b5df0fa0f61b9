"""The ``visual-recs`` command line: help of every subcommand, ``index`` through a real broker,
``config`` against the Settings class."""
import base64
import io
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from PIL import Image

from recommender.settings import Settings
from streams import cli, topics
from streams.client import TopicReader
from streams.topics import create_topics

REPO = Path(__file__).resolve().parents[1]
VISUAL_RECS = Path(sys.executable).parent / "visual-recs"  # the console script pyproject.toml declares


@pytest.mark.parametrize("command, expected", [
    ("index", "CSV columns"),
    ("replay", "--topic"),
    ("config", "--output"),
    ("worker", "--web-port"),
    ("demo", "--products"),
    ("topics", "Create the service's Kafka topics"),
    ("train", "--minutes"),
    ("evaluate", "--model"),
    ("bench", "--full"),
])
def test_every_subcommand_explains_itself(command, expected, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", list(sys.argv))  # delegated commands read their arguments from sys.argv
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code in (0, None)
    help_text = capsys.readouterr().out
    assert help_text.lower().startswith("usage:") and expected in help_text, help_text


def test_top_level_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    help_text = capsys.readouterr().out
    assert all(command in help_text for command in ["index", "replay", "config", *cli.DELEGATES])


def png(colour: str, size: int, noisy: bool = False) -> bytes:
    image = Image.effect_noise((size, size), 80).convert("RGB") if noisy else Image.new("RGB", (size, size), colour)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.integration
def test_index_sends_one_catalog_event_per_image_and_summarises(shop, tmp_path):
    shop_settings, _, _ = shop
    # Topics of its own on the shop's broker: the shop's worker must not index these test images.
    settings = Settings(kafka_broker=shop_settings.kafka_broker, topic_prefix=f"cli{uuid.uuid4().hex[:8]}.",
                        kafka_partitions=2, max_image_bytes=2_000)
    create_topics(settings)
    for folder, colours in {"shoes": ["red", "blue", "green"], "bags": ["black", "white"]}.items():
        (tmp_path / folder).mkdir()
        for colour in colours:
            (tmp_path / folder / f"{colour}_item.png").write_bytes(png(colour, 16))
    (tmp_path / "bags" / "huge.png").write_bytes(png("grey", 128, noisy=True))  # over max_image_bytes
    (tmp_path / "bags" / "notes.txt").write_text("not an image")
    env = {**os.environ, "VR_KAFKA_BROKER": settings.kafka_broker, "VR_TOPIC_PREFIX": settings.topic_prefix,
           "VR_MAX_IMAGE_BYTES": str(settings.max_image_bytes)}

    done = subprocess.run([str(VISUAL_RECS), "index", str(tmp_path), "--price", "9.5"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)

    assert done.returncode == 0, done.stderr
    assert f"sent 5 catalog events to {settings.topic_prefix}catalog.products" in done.stdout
    assert "events/s); skipped 1 of 6" in done.stdout
    assert "bags/huge.png" in done.stderr and "limit is 2000" in done.stderr
    reader = TopicReader(settings, topics.CATALOG)
    try:
        events = reader.until(lambda messages: len(messages) >= 5, timeout_s=60)
        reader.poll(1.0)  # nothing more arrives
    finally:
        reader.close()
    assert len(reader.messages) == 5
    by_id = {event["product_id"]: event for event in events}
    assert set(by_id) == {"shoes-red_item", "shoes-blue_item", "shoes-green_item", "bags-black_item",
                          "bags-white_item"}
    assert by_id["shoes-red_item"]["category"] == "shoes" and by_id["shoes-red_item"]["title"] == "red item"
    assert by_id["bags-white_item"]["price"] == 9.5
    assert Image.open(io.BytesIO(base64.b64decode(by_id["shoes-red_item"]["image_b64"]))).size == (16, 16)


def test_csv_rows_become_listings_and_bad_rows_say_why(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.png").write_bytes(png("red", 8))
    (tmp_path / "catalog.csv").write_text("product_id,title,price,category,image_file\n"
                                          "sku-1,Red scarf,12.5,Scarf,img/a.png\n"
                                          "sku-2,Free scarf,-1,Scarf,img/a.png\n"
                                          "sku-3,Lost scarf,3,Scarf,img/missing.png\n")
    rows = cli.csv_rows(tmp_path / "catalog.csv")
    listing = cli.listing(rows[0], Settings())
    assert {key: listing[key] for key in ("product_id", "title", "price", "category")} == \
        {"product_id": "sku-1", "title": "Red scarf", "price": 12.5, "category": "Scarf"}
    with pytest.raises(ValueError, match="price: Input should be greater than or equal to 0"):
        cli.listing(rows[1], Settings())
    with pytest.raises(ValueError, match="cannot read .*missing.png"):
        cli.listing(rows[2], Settings())


def test_config_lists_every_setting_and_writes_the_reference(tmp_path, capsys):
    output = tmp_path / "configuration.md"
    assert cli.main(["config", "--output", str(output)]) == 0
    printed = capsys.readouterr().out
    for name, field in Settings.model_fields.items():
        line = next(line for line in printed.splitlines() if line.startswith(f"| `VR_{name.upper()}` |"))
        assert (field.description or "").replace("|", "\\|") in line
    assert output.read_text() == printed


def test_docs_configuration_is_up_to_date():
    assert (REPO / "docs" / "configuration.md").read_text() == cli.configuration_reference(), \
        "docs/configuration.md is stale: run `visual-recs config`"
