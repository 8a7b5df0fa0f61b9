"""``python -m streams worker -l info``: run a Faust worker with every agent."""
from streams import agents  # noqa: F401  (registers the agents)
from streams.app import app

if __name__ == "__main__":
    app.main()
