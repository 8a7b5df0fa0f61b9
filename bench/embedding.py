"""Embedding throughput: the serving path batched vs one image at a time, against its ceiling.

The serving path is what ``streams.handlers.embed_images`` does with a batch of catalog
events: base64 + Pillow decode (``load_image_ref``), then ``ImageEmbedder.embed``
(preprocess and forward in chunks of ``forward_batch``). The naive baseline decodes,
preprocesses and forwards one image at a time. The ceiling is the network's forward
rate on tensors prepared in advance. Images are Fashion-MNIST demo listings (28x28 PNG,
resized to 224 px by the model's preprocessing), exactly what the demo catalog sends.

Every variant is timed in the same run, in interleaved rounds (``bench.timing``), so the
ratios hold even though the shared host's absolute speed drifts.
"""
import argparse
from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2 as T

from bench.timing import Variant, interleaved_rates, machine_summary, table
from models.embedders import ImageEmbedder, load_embedder
from models.images import load_image_ref
from recommender.demo_data import demo_catalog
from recommender.settings import Settings

MODEL = "efficientnet_lite0"
EVENTS_PER_BATCH = 32  # Settings.ingest_batch_size: catalog events the agent embeds at once
FORWARD_BATCH = 4  # Settings.forward_batch: the measured CPU sweet spot for torch


def decode(image_b64: str, settings: Settings) -> Image.Image:
    return load_image_ref(image_b64, None, root=settings.image_root, max_bytes=settings.max_image_bytes,
                          max_pixels=settings.max_image_pixels)


def with_threads(count: int) -> Callable[[], None]:
    return lambda: torch.set_num_threads(count)


def serving_variants(events: Sequence[str], settings: Settings, torch_embedder: ImageEmbedder,
                     onnx_embedders: dict[int, ImageEmbedder]) -> list[Variant]:
    """Base64 events in, unit vectors out: the batched path as served, and the naive loop."""
    def batched(embedder: ImageEmbedder) -> Callable[[], int]:
        return lambda: len(embedder.embed([decode(event, settings) for event in events]))

    def per_image(embedder: ImageEmbedder) -> Callable[[], int]:
        return lambda: sum(len(embedder.embed([decode(event, settings)])) for event in events)

    one_thread = with_threads(1)
    return [
        Variant("per-image loop, torch", per_image(torch_embedder), one_thread),
        Variant(f"batched (forward {FORWARD_BATCH}), torch", batched(torch_embedder), one_thread),
        Variant("per-image loop, onnx", per_image(onnx_embedders[1]), one_thread),
        Variant(f"batched (forward {FORWARD_BATCH}), onnx", batched(onnx_embedders[1]), one_thread),
        Variant(f"batched (forward {FORWARD_BATCH}), onnx, 2 threads", batched(onnx_embedders[2]), with_threads(2)),
    ]


def raw_forward_variants(images: Sequence[Image.Image], torch_embedder: ImageEmbedder,
                         onnx_embedders: dict[int, ImageEmbedder]) -> list[Variant]:
    """The network alone on pre-made tensors, one setting changed at a time from the default
    (torch, 1 thread, forward batch 4, channels_last, inference_mode)."""
    def forward(embedder: ImageEmbedder, batch_size: int) -> Callable[[], int]:
        batch = embedder.preprocess(images[:batch_size])
        return lambda: len(embedder.forward(batch))

    # Replicas of ImageEmbedder.forward with one thing switched off, to show what each buys.
    plain_layout_model = torch_embedder.spec.build().eval()
    contiguous_batch = torch_embedder.preprocess(images[:FORWARD_BATCH]).contiguous()
    channels_last_batch = torch_embedder.preprocess(images[:FORWARD_BATCH])

    def without_channels_last() -> int:
        with torch.inference_mode():
            return len(plain_layout_model(contiguous_batch))

    def no_grad_instead_of_inference_mode() -> int:
        with torch.no_grad():
            return len(torch_embedder._model(channels_last_batch))

    with torch.inference_mode():
        # TorchScript's inference passes fold batch norm into convolutions, as ONNX Runtime does.
        frozen_model = torch.jit.optimize_for_inference(
            torch.jit.freeze(torch.jit.trace(torch_embedder._model, channels_last_batch)))

    def frozen_torchscript() -> int:
        with torch.inference_mode():
            return len(frozen_model(channels_last_batch))

    one_thread = with_threads(1)
    variants = [Variant(f"torch, forward {FORWARD_BATCH} (default)", forward(torch_embedder, FORWARD_BATCH), one_thread)]
    variants += [Variant(f"torch, forward {size}", forward(torch_embedder, size), one_thread)
                 for size in (1, 2, 8, 16) if size != FORWARD_BATCH]
    variants += [
        Variant(f"torch, forward {FORWARD_BATCH}, 2 threads", forward(torch_embedder, FORWARD_BATCH), with_threads(2)),
        Variant(f"torch, forward {FORWARD_BATCH}, channels_last off", without_channels_last, one_thread),
        Variant(f"torch, forward {FORWARD_BATCH}, no_grad not inference_mode", no_grad_instead_of_inference_mode,
                one_thread),
        Variant(f"torch, forward {FORWARD_BATCH}, TorchScript frozen + optimize_for_inference", frozen_torchscript,
                one_thread),
    ]
    variants += [Variant(f"onnx, forward {size}", forward(onnx_embedders[1], size), one_thread) for size in (1, 4, 16)]
    variants.append(Variant(f"onnx, forward {FORWARD_BATCH}, 2 threads", forward(onnx_embedders[2], FORWARD_BATCH),
                            with_threads(2)))
    return variants


def preprocessing_variants(events: Sequence[str], settings: Settings, images: Sequence[Image.Image],
                           torch_embedder: ImageEmbedder) -> tuple[list[Variant], float]:
    """Each CPU step before the network, per image; plus the same transforms run on a
    stacked uint8 batch (works when images share a size, as the 28x28 demo images do).
    Returns the variants and the largest difference between the two preprocessing results."""
    spec = torch_embedder.spec.preprocessing
    per_image_transform = spec.transform()
    # The spec's transform without PILToTensor: v2 transforms accept a (N, C, H, W) uint8 batch.
    batch_transform = T.Compose([T.Resize(spec.image_size, antialias=True), T.CenterCrop(spec.image_size),
                                 T.ToDtype(torch.float32, scale=True), T.Normalize(spec.mean, spec.std)])

    def stacked_uint8(chunk: Sequence[Image.Image]) -> torch.Tensor:
        return torch.from_numpy(np.stack([np.asarray(image) for image in chunk])).permute(0, 3, 1, 2)

    def in_chunks(step: Callable[[Sequence[Image.Image]], torch.Tensor]) -> Callable[[], int]:
        return lambda: sum(len(step(images[start:start + FORWARD_BATCH]))
                           for start in range(0, len(images), FORWARD_BATCH))

    difference = (batch_transform(stacked_uint8(images)) - torch_embedder.preprocess(images)).abs().max().item()
    one_thread = with_threads(1)
    return [
        Variant("base64 + Pillow decode", lambda: len([decode(event, settings) for event in events]), one_thread),
        Variant("PIL -> tensor transform, per image", lambda: len([per_image_transform(i) for i in images]), one_thread),
        Variant(f"ImageEmbedder.preprocess, chunks of {FORWARD_BATCH}", in_chunks(torch_embedder.preprocess), one_thread),
        Variant(f"vectorized transform, chunks of {FORWARD_BATCH}", in_chunks(lambda c: batch_transform(stacked_uint8(c))),
                one_thread),
        Variant(f"vectorized transform, all {len(images)} at once",
                lambda: len(batch_transform(stacked_uint8(images))), one_thread),
    ], difference


def profile_serving(variants: Sequence[Variant], seconds: float) -> None:
    """pyinstrument's flat self-time view of each variant: where the time actually goes."""
    from pyinstrument import Profiler  # a benchmarking tool, not a service dependency

    for variant in variants:
        profiler = Profiler(interval=0.001)
        variant.prepare()
        with profiler:
            rates = interleaved_rates([variant], rounds=1, seconds=seconds)
        lines = profiler.output_text(flat=True, time="percent_of_total", flat_time="self").splitlines()
        print(f"\n#### pyinstrument, {variant.name} ({rates[variant.name].wall:.1f} img/s under the profiler)\n")
        print("```\n" + "\n".join(line for line in lines[:22]) + "\n```")


def run(full: bool = False, profile: bool = False) -> None:
    rounds, seconds = (5, 2.5) if full else (3, 1.5)
    settings = Settings()
    events = [product.listing()["image_b64"] for product in demo_catalog(EVENTS_PER_BATCH)]
    images = [decode(event, settings) for event in events]
    torch_embedder = load_embedder(MODEL, threads=1, forward_batch=FORWARD_BATCH)
    onnx_embedders = {threads: load_embedder(MODEL, threads=threads, forward_batch=FORWARD_BATCH, runtime="onnx")
                      for threads in (1, 2)}
    raw = raw_forward_variants(images, torch_embedder, onnx_embedders)
    serving = serving_variants(events, settings, torch_embedder, onnx_embedders)
    preprocessing, difference = preprocessing_variants(events, settings, images, torch_embedder)

    print(f"## Embedding ({MODEL}, {EVENTS_PER_BATCH} demo listings per batch, {rounds} interleaved rounds "
          f"of {seconds}s per variant)\n\n{machine_summary()}\n")
    # One interleaved group for everything, so ratios across tables share the same load.
    rates = interleaved_rates([*raw, *serving, *preprocessing], rounds, seconds)

    def rates_against(name: str, *baselines: str) -> tuple[float, ...]:
        """img/s, img per CPU-second, then CPU and wall ratios to each baseline."""
        rate = rates[name]
        ratios = [(rate.cpu / rates[b].cpu, rate.wall / rates[b].wall) for b in baselines]
        return (rate.wall, rate.cpu, *(value for pair in ratios for value in pair))

    default = f"torch, forward {FORWARD_BATCH} (default)"
    print("### Raw forward (pre-made tensors): the ceiling\n")
    print(table(["variant", "img/s", "img/CPU-s", "vs torch default (CPU)", "(wall)"],
                [(v.name, *rates_against(v.name, default)) for v in raw]))

    naive = "per-image loop, torch"
    ceiling = {"torch": default, "onnx": f"onnx, forward {FORWARD_BATCH}"}
    runtime_of = lambda name: "onnx" if "onnx" in name else "torch"
    print("\n### Serving path (base64 event -> unit vector)\n")
    print(table(["variant", "img/s", "img/CPU-s", "vs per-image torch (CPU)", "(wall)",
                 f"vs raw forward, same runtime, batch {FORWARD_BATCH} (CPU)", "(wall)"],
                [(v.name, *rates_against(v.name, naive, ceiling[runtime_of(v.name)])) for v in serving]))

    batched_cpu_ms = {runtime: 1000 / rates[f"batched (forward {FORWARD_BATCH}), {runtime}"].cpu for runtime in ceiling}
    print("\n### CPU work before the network, per image\n")
    print(table(["step", "CPU ms/img", "share of batched torch", "share of batched onnx"],
                [(v.name, 1000 / rates[v.name].cpu, 1000 / rates[v.name].cpu / batched_cpu_ms["torch"],
                  1000 / rates[v.name].cpu / batched_cpu_ms["onnx"]) for v in preprocessing]))
    print(f"\nvectorized vs per-image preprocessing: max abs difference {difference:.2g} "
          "(on normalized pixels in [-1, 1])")
    if profile:
        profile_serving([serving[1], serving[3]], seconds=2 * seconds)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="more and longer rounds")
    parser.add_argument("--profile", action="store_true", help="also print a pyinstrument profile (needs pyinstrument)")
    args = parser.parse_args(argv)
    run(args.full, args.profile)


if __name__ == "__main__":
    main()
