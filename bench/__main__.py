"""``python -m bench embedding|store|memory|pipeline|idle|recommender|all [--full] [--profile]``: one command per benchmark.

Quick defaults take a couple of minutes each; ``--full`` runs the big sizes and longer
rounds (100k catalog items, 10k users). Output is Markdown, ready for BENCHMARKS.md.
"""
import argparse

from bench import embedding, idle, memory, pipeline, recommender_eval, vector_store

BENCHMARKS = {
    "embedding": lambda args: embedding.run(args.full, args.profile),
    "store": lambda args: vector_store.run(args.full),
    "memory": lambda args: memory.run(args.full),
    "pipeline": lambda args: pipeline.run(args.full, args.profile),
    "idle": lambda args: idle.run(args.full),
    # Simulated sessions: seed 0 quick, seeds 0-4 with --full (what BENCHMARKS.md reports).
    "recommender": lambda args: recommender_eval.main(["--seeds", "0", "1", "2", "3", "4"] if args.full else []),
}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("benchmark", choices=[*BENCHMARKS, "all"])
    parser.add_argument("--full", action="store_true", help="big sizes and longer rounds")
    parser.add_argument("--profile", action="store_true", help="embedding: add a pyinstrument profile; pipeline: a py-spy profile of the worker")
    args = parser.parse_args()
    for name, benchmark in BENCHMARKS.items():
        if args.benchmark in (name, "all"):
            benchmark(args)
            print()


if __name__ == "__main__":
    main()
