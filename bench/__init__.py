"""Benchmarks of the serving path: embedding, vector store and memory (``python -m bench --help``).

The host is a shared, noisy 2-core machine, so every figure is printed beside a baseline
measured in the same run, and variants are timed in interleaved rounds (see ``timing``).
"""
import os

# One BLAS thread (set before numpy loads it), like the worker's torch_threads=1 and the
# single search thread given to Qdrant Edge: comparisons stay per core, and a second
# spinning thread on a busy 2-core host only adds noise.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
