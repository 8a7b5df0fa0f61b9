"""``python -m streams worker -l info``: run a Faust worker with every agent and the HTTP API."""
from streams.worker import main

if __name__ == "__main__":
    main()
