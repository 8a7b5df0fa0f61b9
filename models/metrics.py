"""Retrieval metrics for embeddings, in plain numpy.

Protocol (leave-one-out): every item queries all the *other* items; a neighbour is relevant when
it has the query's label. Similarity is the dot product, i.e. cosine for L2-normalized embeddings.
Similarities are computed one block of queries at a time, so 10k x 10k never sits in memory at once.
"""
from dataclasses import dataclass

import numpy as np

SUMMARY_RECALL_KS = (1, 10)  # Recall@K values reported next to P@k and mAP@R


def nearest_neighbours(embeddings: np.ndarray, k: int, block_size: int = 1024) -> np.ndarray:
    """Indices (N, k) of each row's k most similar other rows, most similar first."""
    count = len(embeddings)
    k = min(k, count - 1)
    neighbours = np.empty((count, k), dtype=np.int64)
    for start in range(0, count, block_size):
        stop = min(start + block_size, count)
        similarity = embeddings[start:stop] @ embeddings.T
        similarity[np.arange(stop - start), np.arange(start, stop)] = -np.inf  # not its own neighbour
        top = np.argpartition(-similarity, k - 1, axis=1)[:, :k]  # unordered top k, O(N) per row
        order = np.argsort(-np.take_along_axis(similarity, top, axis=1), axis=1, kind="stable")
        neighbours[start:stop] = np.take_along_axis(top, order, axis=1)
    return neighbours


def relevant_count(labels: np.ndarray) -> np.ndarray:
    """R for each query: how many other items share its label."""
    return np.bincount(labels)[labels] - 1


def recall_at_k(relevant: np.ndarray, k: int) -> float:
    """Share of queries with at least one relevant item among their k nearest neighbours."""
    return float(relevant[:, :k].any(axis=1).mean())


def precision_at_k(relevant: np.ndarray, k: int) -> float:
    """Mean share of relevant items among the k nearest neighbours."""
    return float(relevant[:, :k].mean())


def map_at_r(relevant: np.ndarray, num_relevant: np.ndarray) -> float:
    """Mean average precision at R (Musgrave et al., "A Metric Learning Reality Check", 2020).

    For a query with R relevant items, AP@R = (1/R) * sum over ranks i <= R of P@i * rel(i).
    Unlike R@1 it rewards putting *all* of a class close to the query, not just one item.
    """
    if relevant.shape[1] < num_relevant.max():
        raise ValueError(f"need the top {num_relevant.max()} neighbours, got {relevant.shape[1]}")
    if (num_relevant == 0).any():
        raise ValueError("every query needs at least one relevant item")
    ranks = np.arange(1, relevant.shape[1] + 1)
    hits = relevant & (ranks <= num_relevant[:, None])
    precision_at_rank = np.cumsum(hits, axis=1) / ranks
    return float(((precision_at_rank * hits).sum(axis=1) / num_relevant).mean())


def knn_predict(neighbour_labels: np.ndarray, k: int, num_classes: int) -> np.ndarray:
    """Majority vote of the k nearest neighbours' labels; a tie goes to the class found nearer."""
    votes = np.zeros((len(neighbour_labels), num_classes))
    # Each vote is 1 plus a bonus that halves with rank: all bonuses together stay below 1, so they
    # only decide ties, and the nearest tied neighbour's bonus outweighs all farther ones.
    weights = 1 + 0.5 ** np.arange(1, k + 1)
    np.add.at(votes, (np.arange(len(neighbour_labels))[:, None], neighbour_labels[:, :k]), weights)
    return votes.argmax(axis=1)


def confusion_matrix(true_labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts (num_classes, num_classes): row = true label, column = predicted label."""
    return np.bincount(true_labels * num_classes + predicted,
                       minlength=num_classes * num_classes).reshape(num_classes, num_classes)


@dataclass
class RetrievalResult:
    metrics: dict[str, float]
    recall_curve: dict[int, float]   # K -> Recall@K
    neighbours: np.ndarray           # (N, R_max) indices, most similar first
    predictions: np.ndarray          # kNN-predicted label of each item


def evaluate_retrieval(embeddings: np.ndarray, labels: np.ndarray, recall_ks: tuple[int, ...] = (1, 2, 4, 8, 16, 32),
                       precision_k: int = 10, knn_k: int = 10, block_size: int = 1024) -> RetrievalResult:
    """Recall@K, P@k, mAP@R and leave-one-out kNN accuracy of one set of embeddings."""
    labels = np.asarray(labels, dtype=np.int64)
    num_relevant = relevant_count(labels)
    depth = max(int(num_relevant.max()), *recall_ks, *SUMMARY_RECALL_KS, precision_k, knn_k)
    neighbours = nearest_neighbours(embeddings, depth, block_size)
    relevant = labels[neighbours] == labels[:, None]
    predictions = knn_predict(labels[neighbours], knn_k, int(labels.max()) + 1)
    recall_curve = {k: recall_at_k(relevant, k) for k in recall_ks}
    metrics = {**{f"recall@{k}": recall_at_k(relevant, k) for k in SUMMARY_RECALL_KS},
               f"precision@{precision_k}": precision_at_k(relevant, precision_k),
               "map@r": map_at_r(relevant, num_relevant),
               f"knn{knn_k}_accuracy": float((predictions == labels).mean())}
    return RetrievalResult(metrics, recall_curve, neighbours, predictions)
