"""``visual-recs``: the service's command line, one subcommand per job.

``index``, ``replay`` and ``config`` live here. The other subcommands hand their arguments to
the module that owns the job (the Faust worker, the demo player, topic creation, training,
evaluation, benchmarks); ``visual-recs COMMAND --help`` shows that module's own options.
Settings come from ``VR_`` environment variables, as everywhere (``visual-recs config``).
"""
import argparse
import base64
import csv
import importlib
import json
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from tqdm import tqdm

from recommender.settings import Settings, get_settings
from streams import topics
from streams.client import produce
from streams.events import ProductListed

PROG = "visual-recs"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp"}
CONFIG_REFERENCE = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"


@dataclass(frozen=True)
class Delegate:
    module: str  # its main() reads sys.argv
    summary: str
    keeps_name: bool = False  # Faust's own command line expects "worker" as its first argument


DELEGATES = {
    "worker": Delegate("streams.worker", "run a Faust worker: agents, query API, demo page at /, /metrics "
                       "(e.g. 'visual-recs worker -l info')", keeps_name=True),
    "demo": Delegate("streams.demo", "index the Fashion-MNIST demo catalog, play shoppers against a running "
                     "worker and print what they get"),
    "topics": Delegate("streams.topics", "create the Kafka topics with their partition counts (safe to re-run)"),
    "train": Delegate("models.train", "train the Fashion-MNIST CNN embedder and export it (models/train.py)"),
    "evaluate": Delegate("models.evaluate", "retrieval metrics of a trained embedder against baselines "
                         "(models/evaluate.py)"),
    "bench": Delegate("bench.__main__", "benchmarks of embedding, vector store and memory (bench/)"),
}


def run_delegate(name: str, args: list[str]) -> None:
    delegate = DELEGATES[name]
    main = importlib.import_module(delegate.module).main
    sys.argv = [PROG, name, *args] if delegate.keeps_name else [f"{PROG} {name}", *args]
    main()


# index ----------------------------------------------------------------------------------------
@dataclass
class Row:
    """One product to list, before its image is read."""

    source: str  # where it came from, for error messages
    fields: dict[str, Any]
    image_file: Path


def folder_rows(folder: Path, category: str | None, price: float) -> list[Row]:
    """Every image below ``folder``; a subfolder's name is its images' category unless ``category`` is given."""
    rows = []
    for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()):
        relative = path.relative_to(folder)
        product_id = re.sub(r"[^A-Za-z0-9_.:@-]", "_", "-".join(relative.with_suffix("").parts))
        fields = {"product_id": product_id, "title": path.stem.replace("_", " ").replace("-", " "), "price": price,
                  "category": category or (relative.parts[0] if len(relative.parts) > 1 else None)}
        rows.append(Row(str(relative), fields, path))
    return rows


def csv_rows(csv_path: Path) -> list[Row]:
    """Rows of a CSV with columns product_id, title, price, image_file (relative to the CSV) and
    optionally category, in_stock, seller_id."""
    with csv_path.open(newline="", encoding="utf-8") as file:
        reader = csv.DictReader(file)
        missing = {"product_id", "title", "price", "image_file"} - set(reader.fieldnames or ())
        if missing:
            raise SystemExit(f"{csv_path}: missing column(s) {', '.join(sorted(missing))}")
        rows = []
        for line, record in enumerate(reader, start=2):
            fields = {key: value for key, value in record.items()
                      if key in {"product_id", "title", "price", "category", "in_stock", "seller_id"} and value}
            rows.append(Row(f"{csv_path.name} line {line}", fields, csv_path.parent / record["image_file"]))
    return rows


def listing(row: Row, settings: Settings) -> dict:
    """The catalog event of a row, validated like the worker validates it; raises ValueError with the reason."""
    try:
        size = row.image_file.stat().st_size
    except OSError as error:
        raise ValueError(f"cannot read {row.image_file}: {error.strerror}") from None
    if size > settings.max_image_bytes:
        raise ValueError(f"{row.image_file} is {size} bytes, limit is {settings.max_image_bytes} (VR_MAX_IMAGE_BYTES)")
    image_b64 = base64.b64encode(row.image_file.read_bytes()).decode()
    try:
        event = ProductListed(**row.fields, image_b64=image_b64)
    except ValidationError as error:
        raise ValueError("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                                   for e in error.errors(include_url=False, include_input=False))) from None
    return event.model_dump(mode="json", exclude_none=True, exclude={"ts"})


def index(args: argparse.Namespace) -> int:
    settings = get_settings()
    path: Path = args.path
    if path.is_dir():
        rows = folder_rows(path, args.category, args.price)
    elif path.suffix.lower() == ".csv":
        rows = csv_rows(path)
    else:
        raise SystemExit(f"{path}: give a folder of images or a .csv file")
    skipped: list[str] = []

    def events(progress: tqdm) -> Iterator[tuple[str, dict]]:
        for row in rows:
            try:
                event = listing(row, settings)
            except ValueError as reason:
                skipped.append(f"{row.source}: {reason}")
            else:
                yield event["product_id"], event
            progress.update()

    started = time.monotonic()
    with tqdm(total=len(rows), desc="listing", unit="product", file=sys.stderr) as progress:
        sent = produce(settings, topics.CATALOG, events(progress))
    elapsed = time.monotonic() - started
    for reason in skipped:
        print(f"skipped {reason}", file=sys.stderr)
    print(f"sent {sent} catalog events to {topics.topic_name(topics.CATALOG, settings)} in {elapsed:.1f} s "
          f"({sent / max(elapsed, 1e-9):.0f} events/s); skipped {len(skipped)} of {len(rows)}")
    return 0 if sent else 1


# replay ---------------------------------------------------------------------------------------
TOPICS_BY_NAME = {spec.name: spec for spec in topics.ALL_TOPICS}


def replay(args: argparse.Namespace) -> int:
    """Send each line of a JSON-lines file as one message, unchanged (invalid lines too: the
    worker dead-letters them, which is what a replay of bad input should show)."""
    settings = get_settings()
    spec = TOPICS_BY_NAME[args.topic]
    key_field = args.key_field or (spec.keyed_by if spec.keyed_by.isidentifier() else None)
    not_json = 0

    def messages(lines: list[bytes]) -> Iterator[tuple[str | None, bytes]]:
        nonlocal not_json
        for line in tqdm(lines, desc="replaying", unit="event", file=sys.stderr):
            try:
                value = json.loads(line)
            except ValueError:
                not_json += 1
                value = None
            key = value.get(key_field) if key_field and isinstance(value, dict) else None
            yield (None if key is None else str(key)), line

    lines = [line.strip() for line in args.file.read_bytes().splitlines() if line.strip()]
    started = time.monotonic()
    sent = produce(settings, spec, messages(lines))
    elapsed = time.monotonic() - started
    print(f"sent {sent} events to {topics.topic_name(spec, settings)} in {elapsed:.1f} s "
          f"({sent / max(elapsed, 1e-9):.0f} events/s), keyed by {key_field or 'nothing'}; {not_json} not JSON")
    return 0


# config ---------------------------------------------------------------------------------------
def _type_name(annotation: Any) -> str:
    return annotation.__name__ if isinstance(annotation, type) else str(annotation).replace("typing.", "")


def _cell(text: str) -> str:
    return text.replace("|", "\\|")  # a bare | would end the Markdown table cell


def _default_text(value: Any) -> str:
    return "unset" if value is None else f"`{value}`" if str(value) else '`""`'


def _field_default(field) -> str:
    if field.default_factory is not None:  # computed on the machine that reads the settings
        return f"{field.default_factory.__module__}.{field.default_factory.__name__}()"
    return _default_text(field.default)


def configuration_reference() -> str:
    """Markdown table of every setting: variable, type, default and description."""
    prefix = Settings.model_config["env_prefix"]
    lines = [
        "# Configuration",
        "",
        f"Every setting is an environment variable with the prefix `{prefix}` (or a line in a `.env` file),",
        "read once by `recommender.settings.Settings`. This page is generated from that class by",
        "`visual-recs config`: change the class, then run the command.",
        "",
        "| variable | type | default | description |",
        "| --- | --- | --- | --- |",
    ]
    for name, field in Settings.model_fields.items():
        lines.append(f"| `{prefix}{name.upper()}` | {_cell(_type_name(field.annotation))} "
                     f"| {_cell(_field_default(field))} | {_cell(field.description or '')} |")
    return "\n".join(lines) + "\n"


def config(args: argparse.Namespace) -> int:
    reference = configuration_reference()
    print(reference, end="")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(reference)
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


# command line ---------------------------------------------------------------------------------
def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog=PROG, description="The visual recommendation service's command line.",
                                  epilog=f"Run '{PROG} COMMAND --help' for a command's options.")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    index_parser = commands.add_parser(
        "index", help="send a folder of images or a CSV of products to the catalog topic",
        description="Send products to the catalog topic; the worker embeds and indexes them. Images are "
                    "sent inline (base64), so the worker needs no access to these files.",
        epilog="CSV columns: product_id, title, price, image_file (path relative to the CSV), and optionally "
               "category, in_stock, seller_id. Rows the worker would reject are skipped and listed.")
    index_parser.add_argument("path", type=Path, help="a folder of images (searched recursively) or a .csv file")
    index_parser.add_argument("--category", help="folder: category of every image (default: the name of the "
                              "subfolder an image is in)")
    index_parser.add_argument("--price", type=float, default=0.0, help="folder: price of every product (default 0)")
    index_parser.set_defaults(run=index)

    replay_parser = commands.add_parser(
        "replay", help="send a JSON-lines event file to a topic",
        description="Send each non-empty line of a JSON-lines file to a topic as one message, unchanged.")
    replay_parser.add_argument("file", type=Path, help="JSON lines, one event per line")
    replay_parser.add_argument("--topic", required=True, choices=sorted(TOPICS_BY_NAME),
                               help="topic name without VR_TOPIC_PREFIX")
    replay_parser.add_argument("--key-field", help="message field used as the Kafka key (default: the field the "
                               "topic is keyed by, e.g. user_id for shopper.actions)")
    replay_parser.set_defaults(run=replay)

    config_parser = commands.add_parser(
        "config", help="print the configuration reference (every VR_ setting) and write it to a file",
        description="Print every setting of recommender.settings.Settings with its environment variable, "
                    "type, default and description, as Markdown, and write it to a file.")
    config_parser.add_argument("--output", type=Path, default=CONFIG_REFERENCE,
                               help="where to write the reference (default: docs/configuration.md)")
    config_parser.set_defaults(run=config)

    for name, delegate in DELEGATES.items():
        commands.add_parser(name, help=delegate.summary, add_help=False)
    return top


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # Delegated commands parse their own arguments, --help included.
    if argv and argv[0] in DELEGATES:
        run_delegate(argv[0], argv[1:])
        return 0
    args = parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
