"""Worker log format: text for people, or JSON lines for log collectors (``VR_LOG_FORMAT=json``)."""
import json
import logging
from datetime import datetime, timezone

from recommender.settings import Settings


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, and the traceback if any."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
                 "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def worker_logging_config(settings: Settings) -> dict | None:
    """The ``logging_config`` Faust's worker applies at start, or None to keep Faust's text logs.

    ``merge`` keeps the root level Faust sets from ``-l``; only the handler is replaced.
    """
    if settings.log_format == "text":
        return None
    return {
        "merge": True,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {"default": {"class": "logging.StreamHandler", "formatter": "json",
                                 "stream": "ext://sys.stderr"}},
    }
