"""``python -m streams worker -l info``: run a Faust worker with every agent and the HTTP API."""
from streams import agents, web  # noqa: F401  (importing registers the agents and pages)
from streams.app import app

if __name__ == "__main__":
    app.main()
