"""Evaluate an embedder on Fashion-MNIST test retrieval, with baselines measured in the same run.

    python -m models.evaluate --model artifacts/fmnist_cnn.pt [--baseline-limit 2000]

Protocol: every test image queries all other test images (leave-one-out); a neighbour is relevant
when it has the query's category; similarity is cosine. Reported: Recall@1, Recall@10 (share of
queries with a relevant item in the top K), P@10, mAP@R (see models.metrics) and the accuracy of
a 10-nearest-neighbour vote. Images enter as RGB Pillow images, as in the service.

Baselines: raw pixels (cosine between the 784 pixel values) and the frozen efficientnet_lite0
(ImageNet features of the 28 px image upscaled to 224 px). efficientnet_lite0 embeds ~34 images/s
on one thread, ~5 minutes for 10k, so ``--baseline-limit N`` evaluates registry baselines on a
fixed random subset of N test images (each querying the other N - 1). The model and raw pixels are
then evaluated on that subset too, so like is compared with like; the "queries" column of the
table says which set every number comes from.

Frozen registry baselines' embeddings are cached in --cache-dir (artifacts/eval_cache) and reused by
later runs, so evaluating a new model costs seconds, not the baseline's five minutes; ``--no-cache``
embeds everything afresh.

Writes to --out-dir: results.json, recall_at_k.png, confusion_matrix.png, neighbours.png.
"""
import argparse
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from models import fashion_mnist
from models.embedders import EMBEDDERS, ImageEmbedder, load_embedder
from models.metrics import RetrievalResult, confusion_matrix, evaluate_retrieval

RAW_PIXELS = "raw_pixels"


def embed_images(embedder: ImageEmbedder, images: np.ndarray, chunk: int = 512) -> np.ndarray:
    """Embed uint8 grayscale images (N, H, W) the way the service sees photos: as RGB Pillow images."""
    chunks = [embedder.embed([Image.fromarray(image).convert("RGB") for image in images[start:start + chunk]])
              for start in tqdm(range(0, len(images), chunk), desc=f"embedding with {embedder.name}", unit="chunk")]
    return np.concatenate(chunks)


def pixel_embeddings(images: np.ndarray) -> np.ndarray:
    flat = images.reshape(len(images), -1).astype(np.float32)
    return flat / np.linalg.norm(flat, axis=1, keepdims=True)


def system_embeddings(system: str, images: np.ndarray, forward_batch: int, cache_dir: Path | None = None) -> np.ndarray:
    """Embeddings of the images by one system. A frozen registry model's embeddings of the same images
    never change, so with ``cache_dir`` they are kept there (keyed by model name and a hash of the
    images) and reused by later runs; trained artifacts are always embedded afresh."""
    if system == RAW_PIXELS:
        return pixel_embeddings(images)
    cache = None
    if cache_dir is not None and system in EMBEDDERS:
        digest = hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest()[:16]
        cache = cache_dir / f"{system}-{len(images)}-{digest}.npy"
        if cache.is_file():
            print(f"{system}: embeddings of these {len(images)} images read from {cache}")
            return np.load(cache)
    embeddings = embed_images(load_embedder(system, threads=1, forward_batch=forward_batch), images)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.save(cache, embeddings)
    return embeddings


def system_label(system: str) -> str:
    return system if system in EMBEDDERS or system == RAW_PIXELS else Path(system).stem


@dataclass
class Evaluation:
    system: str
    queries: str  # which test images were queries (and, leave-one-out, the gallery)
    result: RetrievalResult


def evaluate_systems(model: str, baselines: Sequence[str], images: np.ndarray, labels: np.ndarray,
                     baseline_limit: int | None, seed: int, cache_dir: Path | None = None) -> list[Evaluation]:
    everything = np.arange(len(images))
    subset = None
    if baseline_limit and baseline_limit < len(images):
        subset = np.sort(np.random.default_rng(seed).choice(len(images), baseline_limit, replace=False))
    subset_name = f"random {baseline_limit} of test (seed {seed})"
    evaluations = []
    for system in (model, *baselines):
        limited = subset is not None and system != model and system in EMBEDDERS
        indices = subset if limited else everything
        # Small CNNs and pixels run fast in large batches; efficientnet is fastest in batches of 4.
        embeddings = system_embeddings(system, images[indices], forward_batch=4 if system in EMBEDDERS else 256,
                                       cache_dir=cache_dir)
        evaluations.append(Evaluation(system_label(system), subset_name if limited else f"all {len(images)} test",
                                      evaluate_retrieval(embeddings, labels[indices])))
        if subset is not None and not limited:
            evaluations.append(Evaluation(system_label(system), subset_name,
                                          evaluate_retrieval(embeddings[subset], labels[subset])))
    return evaluations


def table(evaluations: Sequence[Evaluation]) -> str:
    metric_names = list(evaluations[0].result.metrics)
    queries_width = max(len(evaluation.queries) for evaluation in evaluations)
    lines = [f"{'system':<20} {'queries':<{queries_width}} " + " ".join(f"{name:>13}" for name in metric_names)]
    for evaluation in evaluations:
        values = " ".join(f"{value:>13.4f}" for value in evaluation.result.metrics.values())
        lines.append(f"{evaluation.system:<20} {evaluation.queries:<{queries_width}} {values}")
    return "\n".join(lines)


def write_plots(evaluations: Sequence[Evaluation], images: np.ndarray, labels: np.ndarray, out_dir: Path,
                seed: int) -> list[Path]:
    """Recall@K curves of all evaluations; confusion matrix and neighbour grid of the first (the model)."""
    import matplotlib  # imported here: only plotting needs it, and models.train imports this module
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    categories = fashion_mnist.CATEGORIES
    model = evaluations[0]
    paths = [out_dir / "recall_at_k.png", out_dir / "confusion_matrix.png", out_dir / "neighbours.png"]

    figure, axes = plt.subplots(figsize=(6, 4))
    for evaluation in evaluations:
        ks = list(evaluation.result.recall_curve)
        axes.plot(ks, list(evaluation.result.recall_curve.values()), marker="o",
                  label=f"{evaluation.system} ({evaluation.queries})")
    axes.set(xscale="log", xticks=ks, xticklabels=ks, xlabel="K", ylabel="Recall@K",
             title="Fashion-MNIST test retrieval (leave-one-out)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(paths[0], dpi=100)

    counts = confusion_matrix(labels, model.result.predictions, len(categories))
    figure, axes = plt.subplots(figsize=(6.5, 5.5))
    axes.imshow(counts, cmap="Blues")
    for true_label in range(len(categories)):
        for predicted in range(len(categories)):
            value = counts[true_label, predicted]
            axes.text(predicted, true_label, value, ha="center", va="center", fontsize=7,
                      color="white" if value > counts.max() / 2 else "black")
    axes.set(xticks=range(len(categories)), yticks=range(len(categories)), xlabel="predicted (10-NN vote)",
             ylabel="true", title=f"{model.system}: confusion matrix ({model.queries})")
    axes.set_xticklabels(categories, rotation=45, ha="right", fontsize=8)
    axes.set_yticklabels(categories, fontsize=8)
    figure.tight_layout()
    figure.savefig(paths[1], dpi=100)

    shown = 5
    rng = np.random.default_rng(seed)
    queries = [rng.choice(np.flatnonzero(labels == label)) for label in range(len(categories))]
    figure, axes = plt.subplots(len(queries), shown + 1, figsize=(1.1 * (shown + 1), 1.15 * len(queries)))
    for row, query in enumerate(queries):
        for column, index in enumerate([query, *model.result.neighbours[query, :shown]]):
            cell = axes[row, column]
            cell.imshow(images[index], cmap="gray", vmin=0, vmax=255)
            cell.set_xticks([])
            cell.set_yticks([])
            colour = "black" if column == 0 else "green" if labels[index] == labels[query] else "red"
            for spine in cell.spines.values():
                spine.set(color=colour, linewidth=2)
            cell.set_title(categories[labels[index]] if column == 0 or colour == "red" else "", fontsize=6,
                           color=colour)
    figure.suptitle(f"{model.system}: query, then top {shown} neighbours (red: other category)", fontsize=8)
    figure.tight_layout()
    figure.savefig(paths[2], dpi=80)
    plt.close("all")
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m models.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="artifact path or registry name to evaluate")
    parser.add_argument("--baselines", nargs="*", default=[RAW_PIXELS, "efficientnet_lite0"],
                        help=f"{RAW_PIXELS} and/or registry names; none to skip")
    parser.add_argument("--baseline-limit", type=int,
                        help="evaluate registry baselines on a random subset of N test images (see above)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the subset and of the plotted queries")
    parser.add_argument("--out-dir", type=Path, default=Path("artifacts/eval"))
    parser.add_argument("--cache-dir", type=Path, default=Path("artifacts/eval_cache"),
                        help="keep frozen registry baselines' embeddings here and reuse them (the model is "
                             "always embedded afresh)")
    parser.add_argument("--no-cache", dest="cache_dir", action="store_const", const=None,
                        help="embed every system afresh")
    args = parser.parse_args(argv)

    images, labels = fashion_mnist.load("test")
    labels = labels.astype(np.int64)
    evaluations = evaluate_systems(args.model, args.baselines, images, labels, args.baseline_limit, args.seed,
                                   args.cache_dir)
    print(table(evaluations))
    args.out_dir.mkdir(parents=True, exist_ok=True)
    results = [{"system": evaluation.system, "queries": evaluation.queries, "metrics": evaluation.result.metrics,
                "recall_at_k": evaluation.result.recall_curve} for evaluation in evaluations]
    (args.out_dir / "results.json").write_text(json.dumps(results, indent=2))
    for path in write_plots(evaluations, images, labels, args.out_dir, args.seed):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
