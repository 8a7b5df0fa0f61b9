"""The Faust app with everything a worker runs: agents, timers and web pages.

Importing a module registers what it declares on the app, so the worker imports them all here.
"""
from streams import agents, monitoring, web  # noqa: F401  (importing registers them)
from streams.app import app


def main() -> None:
    """Faust's command line on ``sys.argv``: ``worker -l info``, ``worker --help``, ..."""
    app.main()
