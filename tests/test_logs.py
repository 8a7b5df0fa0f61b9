"""JSON log lines (VR_LOG_FORMAT=json): one parseable object per record, tracebacks included."""
import json
import logging
import sys

from recommender.settings import Settings
from streams.logs import JsonFormatter, worker_logging_config


def test_a_record_becomes_one_json_line_with_its_traceback():
    try:
        raise ValueError("bad image")
    except ValueError:
        record = logging.LogRecord("streams.agents", logging.WARNING, __file__, 1, "dead letter from %s", ("t:0:5",),
                                   exc_info=sys.exc_info())
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["level"] == "WARNING" and entry["logger"] == "streams.agents"
    assert entry["message"] == "dead letter from t:0:5"
    assert "ValueError: bad image" in entry["exception"]


def test_text_format_keeps_faust_logging_and_json_replaces_the_handler():
    assert worker_logging_config(Settings(log_format="text")) is None
    config = worker_logging_config(Settings(log_format="json"))
    assert config["handlers"]["default"]["formatter"] == "json"
