"""Train the Fashion-MNIST CNN embedder on CPU within a time budget, then export it.

    python -m models.train --minutes 14.3 --out artifacts/fmnist_cnn.pt

The network follows airbench's layout (a stem conv, then three groups of conv, pooling and conv;
28 -> 14 -> 7 -> 3 px; see ``EmbeddingCNN``), generalized-mean pooling with a learned power (GeM;
``GeneralizedMeanPool``) and a linear embedding layer.
Training optimizes the cross-entropy (label smoothing 0.1) of a cosine classification head with
an additive margin (CosFace; ``CosineClassifier``) on the embedding, and the exported model
outputs that embedding, the layer the loss shapes for cosine retrieval. Chosen on held-out
images at the full budget (BENCHMARKS.md, session 6): the earlier defaults, a VGG-style
32-64-128 net with a linear head and its pooled features read out, gave R@1 0.9229 and P@10
0.9175; the cosine head on that net 0.9274 and 0.9258; this network with the cosine head 0.9337
and 0.9333 (it takes 182 ms of CPU per step against 235, so it trains 1.3 times the steps with
1.7 times the parameters). ``--head linear`` and ``--readout features`` give the earlier
head and read-out.

``--proxy-anchor-weight`` adds Proxy-Anchor (Kim et al., CVPR 2020) on the L2-normalized
embedding, which pulls all of a class's images towards one learned proxy at O(batch x classes)
cost. It was the default until a held-out comparison (7 CPU minutes, 50,000 training images,
measured on the other 10,000; BENCHMARKS.md): with the embedding layer read out, cross-entropy
alone gave R@1 0.907 and P@10 0.906, cross-entropy + Proxy-Anchor (weight 1) 0.887 and 0.880, and
the head was right on 0.927 vs 0.915 of the held-out images. Its loss (about 10 against the
cross-entropy's 0.8 in those runs) likely crowds out the classification signal; smaller weights
were not measured.

The stem conv is fixed to patch-whitening filters (``patch_whitening_filters``; ``--no-whitened-stem``
trains it): no gradient flows below the first group, so a float32 step costs about 8 % less CPU.
Side by side on held-out images (two seeds, 15 CPU minutes) it made 7-10 % more steps and moved
R@1 by +0.0012 and -0.0002, P@10 by +0.0005 and +0.0021 (BENCHMARKS.md, session 14).

The conv filters train with Muon (``FilterMuon``: orthogonalized Nesterov momentum, at three times
AdamW's learning rate in AdamW-matched units; ``--no-muon`` trains them with AdamW like the rest).
Chosen on 4-CPU-minute held-out screens (R@1 0.9112 at three times, 0.9059 at once and 0.9076 at ten
times AdamW's rate, against 0.9060 for AdamW) and two full-budget held-out pairs, where R@1 was level
(-0.0006 and +0.0006) and P@10 rose by 0.0032 and 0.0017 with 3 % and 11 % fewer steps (BENCHMARKS.md,
session 15).

Batches are drawn by the rank of each image's latest loss (``LossRankedSampler``; ``--selection-pressure
1`` draws uniformly): the budget goes to the shirts, pullovers and coats the network still confuses,
not to the trousers and bags it learnt in the first epoch.

Augmentation is mild by default (mirroring, shifts of up to ~1.5 px); ``--augment crop`` shifts by
whole pixels (up to 2; no resampling blur), ``shopper`` makes images look more like shoppers'
photos (reframing, light backdrops, exposure changes, blur), see ``ShopperPhotoAugment``.
After training, the batch norms' running statistics are recomputed on 10,000 unaugmented training
images (``recalibrate_batch_norm``; ``--no-recalibrate-batch-norm`` keeps those of the last batches,
which loss-ranked draws skew towards a few classes). The exported model averages the embeddings of
the image and its mirror image (``--no-flip-average`` to export the bare network), then whitens them
by their within-class covariance on 10,000 training images (``WithinClassWhitening``; ``--no-whiten``
to leave it out).

Not kept, after held-out runs at the full budget (BENCHMARKS.md), all on the earlier VGG-style
net: an exponential moving average of the weights (R@1 0.9229-0.9237 against 0.9229 for the last
weights; the cosine decay to zero already settles the last steps), the wider 48-96-192 net (fewer
steps in the same CPU time: 0.9191), label smoothing 0.2 (0.9211), peak learning rate 6e-3
(0.9232) and random erasing of half the images (0.9204).

Settings are chosen on held-out training images, never on the test split: ``--holdout 10000`` trains
on the first 50,000 training images and reports the metrics on the last 10,000 instead of the test
split.

Training runs on one torch thread with channels-last tensors, in bfloat16 autocast where the CPU
computes bfloat16 natively (AVX-512 or AMX; ``native_bfloat16``), else in float32: the budget is CPU
time, and on an Intel CPU with AMX a training step of batch 256 of the earlier VGG-style net cost
229 ms of CPU that way, 483 ms in float32, 324 ms without channels-last, and 249 ms on two threads
(more CPU for less wall time). On an AMD EPYC with AVX2 only, emulated bfloat16 took 9.5 s per step
of the 16-32-128-128 net against 0.86 s in float32; in float32 the convolutions dominate a step, so
the default channels there are 16-32-64-128 (``default_widths``).
The learning rate follows warm-up then cosine decay over the budget: ``--minutes`` (progress =
elapsed CPU time, so a busy machine gets fewer steps but always a fully decayed learning rate) or
``--steps`` (bit-reproducible). A checkpoint is written every CPU minute; ``--resume`` continues an
interrupted run with the settings it was started with (a finished run's checkpoint is only
re-exported). Checkpoints of the earlier VGG-style net cannot be resumed by this version.
"""
import argparse
import math
import resource
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from models import fashion_mnist
from models.embedders import EmbedderSpec, ImageEmbedder, Preprocessing, save_artifact
from models.evaluate import embed_images
from models.metrics import evaluate_retrieval

# Grayscale 28 px like Fashion-MNIST; mean and std of the training pixels. Shop photos in RGB go
# through the same Grayscale -> resize -> normalize steps in ImageEmbedder.
PREPROCESSING = Preprocessing(28, (0.2860,), (0.3530,), grayscale=True)


def normalized(pixels: torch.Tensor) -> torch.Tensor:
    """Grayscale pixels in [0, 1] as the network sees them (PREPROCESSING's mean and std)."""
    return (pixels - PREPROCESSING.mean[0]) / PREPROCESSING.std[0]


def native_bfloat16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX-512 or AMX): bfloat16 autocast halves a training
    step's CPU time there and makes it about ten times longer where oneDNN has to emulate it (AVX2)."""
    return torch.ops.mkldnn._is_mkldnn_bf16_supported()


def default_widths() -> tuple[int, ...]:
    """Channels of the stem and of each group (see EmbeddingCNN) that did best on held-out images in the
    budget, by CPU. With AMX's bfloat16 the convolutions are cheap and batch norm and ReLU take most
    of a step; in float32 on AVX2 the convolutions take 85 % of it, and halving the second group's
    channels buys 1.6-1.75 times the steps. Side by side (seed 1) that gave held-out R@1 0.9162 against
    0.9148 and P@10 0.9150 against 0.9062 (BENCHMARKS.md, session 10). With AVX-512's bfloat16 (Zen 4)
    the convolutions still take two thirds of a step and the narrower network is 1.65 times cheaper,
    but with those 1.6 times the steps it was level to slightly worse on held-out images (R@1 -0.0019
    and -0.0009, two seeds), and the wider one met both test-split targets in five of five runs there
    (session 21)."""
    return (16, 32, 128, 128) if native_bfloat16() else (16, 32, 64, 128)


@dataclass
class TrainConfig:
    out: Path = Path("artifacts/fmnist_cnn.pt")
    minutes: float = 14.3             # of training steps: with the recalibration and whitening (up to 35 CPU s) inside 15
    steps: int | None = None          # overrides --minutes when given
    batch_size: int = 256
    selection_pressure: float = 100.0  # odds of the highest-loss image being drawn against the lowest (LossRankedSampler)
    widths: tuple[int, ...] = field(default_factory=default_widths)  # channels of the stem, then of each group
    pooling: str = "gem"              # global pooling of the last group: a key of POOLINGS
    dim: int = 128
    learning_rate: float = 3e-3
    muon: bool = True                 # the conv filters train with FilterMuon, all else with AdamW (else AdamW on all)
    filter_learning_rate: float = 9e-3  # FilterMuon's, in AdamW-matched units (see FilterMuon)
    proxy_learning_rate: float = 3e-2  # proxies move faster, as in the Proxy-Anchor paper
    weight_decay: float = 5e-4
    proxy_anchor_weight: float = 0.0  # 0: cross-entropy only, better on held-out images than 1 (module docstring)
    label_smoothing: float = 0.1
    head: str = "cosine"              # classification head: a key of HEADS
    head_scale: float = 16.0          # cosine head: logits are this times the cosine
    head_margin: float = 0.15         # cosine head: subtracted from the true class's cosine while training
    seed: int = 0
    train_limit: int | None = None    # use only the first N training images (quick experiments, tests)
    holdout: int = 0                  # hold out the last N training images for model selection (see split_training_data)
    bf16: bool = field(default_factory=native_bfloat16)  # bfloat16 autocast where the CPU has it natively
    augment: str = "mild"             # a key of AUGMENTATIONS
    readout: str = "embedding"        # what the artifact outputs: a key of READOUTS
    flip_average: bool = True         # the exported model averages the embeddings of the image and its mirror
    whiten: bool = True               # the exported model whitens its embeddings within classes (WithinClassWhitening)
    whitening_shrinkage: float = 2.0  # added to each eigenvalue of the within-class covariance, in mean eigenvalues
    whitened_stem: bool = True        # the stem conv is fixed to patch-whitening filters (patch_whitening_filters)
    recalibrate_batch_norm: bool = True  # batch-norm statistics recomputed on uniform images after training
    threads: int = 1                  # torch threads (CPU time is the budget: one thread wastes least)
    checkpoint_every_s: float = 60.0

    @property
    def checkpoint(self) -> Path:
        return self.out.with_suffix(".ckpt")


class EmbeddingCNN(nn.Module):
    """Image (N, 1, 28, 28) -> embedding (N, dim), not normalized (ImageEmbedder normalizes).

    airbench's layout (Jordan, 2024): a stem conv at full resolution, then groups of conv -> 2x2 max
    pool -> BN/ReLU -> conv -> BN/ReLU (28 -> 14 -> 7 -> 3 px with three groups), global (GeM or average)
    pooling and a linear embedding layer. Pooling right after each group's first conv keeps the
    batch norms and ReLUs, most of a training step's CPU time in bfloat16, at the lower resolution.
    """

    def __init__(self, widths: tuple[int, ...], dim: int, pooling: str):
        super().__init__()
        stem, *groups = widths
        layers, channels = [*conv_bn_relu(1, stem)], stem
        for width in groups:
            layers += [nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.MaxPool2d(2),
                       nn.BatchNorm2d(width), nn.ReLU(inplace=True), *conv_bn_relu(width, width)]
            channels = width
        self.features = nn.Sequential(*layers)
        self.pool = POOLINGS[pooling]()
        self.embedding = nn.Linear(channels, dim)

    @property
    def stem(self) -> nn.Sequential:
        """The stem's conv and batch norm (its ReLU has no parameters)."""
        return self.features[:2]

    def pooled(self, images: torch.Tensor) -> torch.Tensor:
        """Globally pooled features of the last group, before the embedding layer."""
        return self.pool(self.features(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.embedding(self.pooled(images))


class GeneralizedMeanPool(nn.Module):
    """Global generalized-mean pooling (GeM; Radenovic et al., TPAMI 2019): (mean of x^p)^(1/p) over
    the map, with p learned. p = 1 is average pooling and large p approaches max pooling.

    The usual pooling of image-retrieval nets: an average dilutes what only a few cells of the map
    show (a collar, a heel), a higher power lets those cells weigh more. Held-out R@1 0.9370 and
    0.9346 (two seeds) against 0.9325-0.9337 for average pooling at 15 CPU minutes (BENCHMARKS.md,
    session 9); p went from 3 to 4.5-4.8."""

    def __init__(self, power: float = 3.0):
        super().__init__()
        self.power = nn.Parameter(torch.tensor(power))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        # float32: bfloat16's 8-bit mantissa is too coarse for the power and its root
        return features.float().clamp(min=1e-6).pow(self.power).mean((2, 3)).pow(1 / self.power)


class GlobalAveragePool(nn.Module):
    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features.mean((2, 3))


POOLINGS = {"gem": GeneralizedMeanPool, "average": GlobalAveragePool}


def patch_whitening_filters(images: torch.Tensor, count: int) -> torch.Tensor:
    """``count`` 3x3 stem filters, (count, 1, 3, 3): the top ``count / 2`` principal components of the
    normalized images' 3x3 patches, each scaled to unit variance and taken with both signs (airbench's
    whitening conv, Jordan 2024). After the ReLU the pair v, -v still holds all of v.x, so the stem hands
    the first group the patches' strongest components whole. Kept fixed, with its batch norm's scale
    and shift, no gradient has to flow below the first group: about 8 % less CPU per float32 step."""
    pairs = (count + 1) // 2
    if pairs > 9:
        raise ValueError(f"a whitened stem has at most 18 filters (3x3 patches have 9 components), not {count}")
    patches = F.unfold(normalized(images.float() / 255), 3, padding=1).transpose(1, 2).reshape(-1, 9).double()
    eigenvalues, eigenvectors = torch.linalg.eigh(patches.T @ patches / len(patches))  # ascending
    strongest = eigenvectors[:, -pairs:].T / (eigenvalues[-pairs:, None] + 5e-4).sqrt()
    return torch.cat([strongest, -strongest])[:count].float().view(count, 1, 3, 3)


def conv_bn_relu(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True)]


class PooledFeatures(nn.Module):
    """Read-out of a trained EmbeddingCNN's pooled features instead of its embedding layer.

    With a linear head the features one layer below the embedding had the better R@1 on held-out
    training images in all four comparisons (BENCHMARKS.md; e.g. 0.910 vs 0.907 with cross-entropy
    alone). With the cosine head the embedding layer is better (R@1 0.9337 vs 0.9290, P@10 0.9333
    vs 0.9315), as that head shapes it for cosine retrieval."""

    def __init__(self, model: EmbeddingCNN):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.pooled(images)


class LinearClassifier(nn.Linear):
    """The usual linear classification head (the labels are only used by margin heads)."""

    normalizes_weights = False

    def __init__(self, dim: int, num_classes: int, config: "TrainConfig"):
        super().__init__(dim, num_classes)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return super().forward(embeddings)


class CosineClassifier(nn.Module):
    """Classification head on the cosine between embedding and class weights, with an additive margin
    on the true class while training (CosFace, Wang et al., CVPR 2018).

    Retrieval ranks by cosine, so training on cosines pulls each class into a tight cone that the
    retrieval sees; the margin makes the cones tighter than plain classification needs."""

    normalizes_weights = True  # weight decay would only shrink their norm, which the cosine ignores

    def __init__(self, dim: int, num_classes: int, config: "TrainConfig"):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_classes, dim) * 0.01)
        self.scale, self.margin = config.head_scale, config.head_margin

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        cosine = F.normalize(embeddings.float(), dim=1) @ F.normalize(self.weight, dim=1).T
        if labels is not None:
            cosine = cosine - self.margin * F.one_hot(labels, len(self.weight))
        return self.scale * cosine


HEADS = {"linear": LinearClassifier, "cosine": CosineClassifier}


class ProxyAnchorLoss(nn.Module):
    """Proxy-Anchor loss with one learned proxy per class (margin and alpha from the paper)."""

    def __init__(self, num_classes: int, dim: int, margin: float = 0.1, alpha: float = 32.0):
        super().__init__()
        self.proxies = nn.Parameter(torch.empty(num_classes, dim))
        nn.init.kaiming_normal_(self.proxies, mode="fan_out")
        self.margin, self.alpha = margin, alpha

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cosine = F.normalize(embeddings.float(), dim=1) @ F.normalize(self.proxies, dim=1).T  # (batch, classes)
        positive = F.one_hot(labels, len(self.proxies)).bool()
        # log(1 + sum exp(z)) written as softplus(logsumexp(z)) to stay finite; masked terms are -inf.
        pull = torch.where(positive, -self.alpha * (cosine - self.margin), -torch.inf)
        push = torch.where(positive, -torch.inf, self.alpha * (cosine + self.margin))
        present = positive.any(dim=0)  # only proxies of classes in the batch have positives
        pull_loss = F.softplus(torch.logsumexp(pull, dim=0))[present].sum() / present.sum()
        push_loss = F.softplus(torch.logsumexp(push, dim=0)).sum() / len(self.proxies)
        return pull_loss + push_loss


class ShopperPhotoAugment:
    """Batched augmentation that makes catalog images look like shoppers' photos.

    Runs on whole uint8 batches (one affine grid, one grouped convolution) because per-image PIL
    transforms would cost more CPU than the network itself at 28 px. Returns normalized floats.
    """

    def __init__(self, generator: torch.Generator, max_zoom: float = 1.1, max_shift: float = 0.08,
                 max_log_aspect: float = 0.15, exposure_probability: float = 0.3, backdrop_probability: float = 0.1,
                 blur_probability: float = 0.1, mirror: bool = True, whole_pixel_shift: bool = False):
        self.generator = generator
        self.mirror = mirror
        self.whole_pixel_shift = whole_pixel_shift
        self.max_zoom, self.max_shift, self.max_log_aspect = max_zoom, max_shift, max_log_aspect
        self.exposure_probability = exposure_probability
        self.backdrop_probability = backdrop_probability
        self.blur_probability = blur_probability

    def uniform(self, count: int, low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(count, generator=self.generator)

    def chosen(self, count: int, probability: float) -> torch.Tensor:
        """Which of the batch's images get a distortion, shaped to broadcast over (N, 1, H, W)."""
        return (torch.rand(count, generator=self.generator) < probability).view(count, 1, 1, 1)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        pixels = images.float() / 255
        pixels = self.reframe(pixels)
        pixels = self.backdrop(pixels)
        pixels = self.exposure(pixels)
        pixels = self.blur(pixels)
        return normalized(pixels.clamp(0, 1))

    def reframe(self, pixels: torch.Tensor) -> torch.Tensor:
        """Random resized crop or zoom-out with padding, aspect change, shift and mirroring."""
        count = len(pixels)
        zoom = self.uniform(count, 1 / self.max_zoom, self.max_zoom)  # > 1 crops into the garment, < 1 pads
        aspect = torch.exp(self.uniform(count, -self.max_log_aspect, self.max_log_aspect))
        mirror = torch.where(torch.rand(count, generator=self.generator) < (0.5 if self.mirror else 0.0), -1.0, 1.0)
        theta = torch.zeros(count, 2, 3)
        theta[:, 0, 0] = mirror * aspect.sqrt() / zoom
        theta[:, 1, 1] = 1 / (aspect.sqrt() * zoom)
        shift = self.uniform(2 * count, -self.max_shift, self.max_shift).view(count, 2)
        if self.whole_pixel_shift:  # a random crop of the zero-padded image: moved, not resampled (no blur)
            pixel_units = 2 / pixels.shape[-1]  # the grid spans [-1, 1] over the image's width
            shift = torch.round(shift / pixel_units) * pixel_units
        theta[:, :, 2] = shift
        grid = F.affine_grid(theta, list(pixels.shape), align_corners=False)
        return F.grid_sample(pixels, grid, padding_mode="zeros", align_corners=False)

    def backdrop(self, pixels: torch.Tensor) -> torch.Tensor:
        """Replace the black studio background by a grey or white one on some images."""
        count = len(pixels)
        level = self.uniform(count, 0.3, 1.0).view(count, 1, 1, 1)
        garment = (pixels * 8).clamp(0, 1)  # Fashion-MNIST backgrounds are ~0; garments are brighter
        return torch.where(self.chosen(count, self.backdrop_probability), garment * pixels + (1 - garment) * level,
                           pixels)

    def exposure(self, pixels: torch.Tensor) -> torch.Tensor:
        """Brightness, contrast and gamma jitter (colour jitter as seen after grayscale conversion)."""
        count = len(pixels)
        gamma = torch.exp(self.uniform(count, -0.3, 0.3)).view(count, 1, 1, 1)
        contrast = self.uniform(count, 0.7, 1.3).view(count, 1, 1, 1)
        brightness = self.uniform(count, -0.15, 0.15).view(count, 1, 1, 1)
        exposed = pixels.clamp(0, 1) ** gamma
        mean = exposed.mean((1, 2, 3), keepdim=True)
        exposed = (exposed - mean) * contrast + mean + brightness
        return torch.where(self.chosen(count, self.exposure_probability), exposed, pixels)

    def blur(self, pixels: torch.Tensor) -> torch.Tensor:
        """Gaussian blur of random strength (focus, motion, low-resolution phone photos)."""
        count, _, height, width = pixels.shape
        sigma = self.uniform(count, 0.4, 1.2)
        sigma = torch.where(self.chosen(count, self.blur_probability).view(count), sigma, 1e-3)
        offsets = torch.arange(-2, 3, dtype=torch.float32)
        kernel_1d = torch.exp(-offsets ** 2 / (2 * sigma.view(count, 1) ** 2))  # sigma 1e-3: identity
        kernel_1d = kernel_1d / kernel_1d.sum(1, keepdim=True)
        kernels = (kernel_1d[:, :, None] * kernel_1d[:, None, :]).view(count, 1, 5, 5)
        padded = F.pad(pixels.view(1, count, height, width), (2, 2, 2, 2), mode="replicate")
        return F.conv2d(padded, kernels, groups=count).view(count, 1, height, width)


# "mild" (the default) only mirrors and shifts by up to ~1.5 px: the catalog and the evaluation set
# (Fashion-MNIST's test split) are clean, centred studio shots like the training images, so distortions
# they never show only spend the CPU budget on cases that do not occur there. "shopper" trains for
# phone photos of garments (reframing, backdrops, exposure, blur) at some cost on clean images. "crop" is
# the usual random crop of the image padded by 2 px, with mirroring: whole-pixel shifts, no interpolation.
AUGMENTATIONS = {
    "none": dict(max_zoom=1.0, max_shift=0.0, max_log_aspect=0.0, exposure_probability=0.0,
                 backdrop_probability=0.0, blur_probability=0.0, mirror=False),
    "mild": dict(max_zoom=1.0, max_shift=0.1, max_log_aspect=0.0, exposure_probability=0.0,
                 backdrop_probability=0.0, blur_probability=0.0),
    "crop": dict(max_zoom=1.0, max_shift=2 * 2 / 28, max_log_aspect=0.0, exposure_probability=0.0,
                 backdrop_probability=0.0, blur_probability=0.0, whole_pixel_shift=True),
    "shopper": {},  # ShopperPhotoAugment's defaults
}


class FlipAveraged(nn.Module):
    """Embedding of an image plus that of its mirror image (test-time augmentation, traced into the artifact).

    Garments are left-right symmetric in meaning, so both views describe the same article; their sum
    is steadier than either. Each view is L2-normalized first so that both count equally, as in the
    held-out measurements. Costs a second forward pass (cheap at 28 px)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.model(images), dim=1) + F.normalize(self.model(torch.flip(images, dims=(3,))), dim=1)


class WithinClassWhitening(nn.Module):
    """An embedder whose unit embeddings are centred and whitened by the within-class covariance of
    training images (the learned whitening of Radenovic et al., TPAMI 2019, without its pairs).

    Cosine retrieval treats every direction alike, but the trained embeddings still vary more within
    a class along some directions than along others; whitening shrinks those, so that what separates
    classes counts more. Shrinkage keeps directions with tiny variance from being blown up. Fitted
    after training on the unit embeddings of the first WHITENING_IMAGES training images (11-12 CPU
    seconds for 10,000 in session 11's test-split runs, about 20 in a slower hour).
    On five held-out checkpoints it moved R@1 by +0.0028, P@10 by +0.0016 and mAP@R by -0.0065 on
    average (R@1 fell on one of them; BENCHMARKS.md, session 11)."""

    def __init__(self, embedder: nn.Module, mean: torch.Tensor, projection: torch.Tensor):
        super().__init__()
        self.embedder = embedder
        self.register_buffer("mean", mean)
        self.register_buffer("projection", projection)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (F.normalize(self.embedder(images), dim=1) - self.mean) @ self.projection


def within_class_whitening(embeddings: torch.Tensor, labels: torch.Tensor,
                           shrinkage: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and projection P such that (x - mean) @ P has the within-class covariance V diag(l / (l + s)) V^T
    on these embeddings, where V and l are the eigenvectors and eigenvalues of their within-class covariance
    and s is ``shrinkage`` times the eigenvalues' mean: 0 makes it the identity. P = V diag((l + s)^-1/2) V^T
    (ZCA, not PCA, whitening) is symmetric, and so the same whatever signs eigh gives the eigenvectors."""
    embeddings = embeddings.double()
    class_means = torch.zeros(int(labels.max()) + 1, embeddings.shape[1], dtype=torch.float64)
    class_means.index_add_(0, labels, embeddings)
    class_means /= torch.bincount(labels, minlength=len(class_means)).clamp(min=1).unsqueeze(1).double()
    deviations = embeddings - class_means[labels]
    eigenvalues, eigenvectors = torch.linalg.eigh(deviations.T @ deviations / len(embeddings))
    eigenvalues = eigenvalues.clamp(min=0)  # rounding can leave tiny negative ones
    # the floor keeps a network that embeds every image alike (zero spread) from dividing by zero
    scales = (eigenvalues + shrinkage * eigenvalues.mean()).clamp(min=1e-12).rsqrt()
    projection = eigenvectors * scales @ eigenvectors.T
    return embeddings.mean(0).float(), projection.float()


WHITENING_IMAGES = 10_000  # held-out R@1 was the same with whitening fitted on 5,000, 10,000 and 50,000


@torch.no_grad()
def recalibrate_batch_norm(model: EmbeddingCNN, images: torch.Tensor, batch_size: int = 250) -> None:
    """Set every batch norm's running mean and variance to their average over these uint8 images
    (N, 1, 28, 28), unaugmented and in equal batches, as the exported model will see its inputs.

    While training, the running statistics follow the last few dozen batches, and loss-ranked batches
    are by then mostly shirts, pullovers and coats: the statistics of a few confused classes, not of the
    catalog the model embeds. Recomputed after training (about 10 CPU seconds), R@1 on held-out images
    rose by 0.0012 on average over six checkpoints (-0.0013 to +0.0028; P@10 +0.0003), and on the test
    split by 0.0017 over the eight models of sessions 15-16 (-0.0012 to +0.0043; P@10 +0.0005;
    BENCHMARKS.md, session 17)."""
    batches = (normalized(images[start:start + batch_size].float() / 255).contiguous(memory_format=torch.channels_last)
               for start in range(0, len(images), batch_size))
    torch.optim.swa_utils.update_bn(batches, model)  # a cumulative average over the batches, momenta restored after
    model.eval()

# The exported read-out of a trained EmbeddingCNN: "embedding" (the default) is the layer the losses
# train, "features" the pooled features below it (see PooledFeatures).
READOUTS = {"features": PooledFeatures, "embedding": lambda model: model}


def exported_model(model: EmbeddingCNN, config: TrainConfig) -> tuple[nn.Module, int]:
    """The embedder to export, in eval mode, and its output dimension."""
    readout = READOUTS[config.readout](model)
    dim = model.embedding.in_features if config.readout == "features" else config.dim
    return (FlipAveraged(readout) if config.flip_average else readout).eval(), dim


def orthogonalized(matrix: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """About U V^T for the SVD U S V^T of ``matrix``: Muon's quintic Newton-Schulz iteration sends every
    singular value above about 1/400 of the matrix's Frobenius norm to roughly [0.7, 1.2] (smaller ones
    grow less); its coefficients buy speed with that looseness."""
    a, b, c = 3.4445, -4.7750, 2.0315
    tall = matrix.shape[0] > matrix.shape[1]
    wide = (matrix.T if tall else matrix) / (matrix.norm() + 1e-7)  # the Frobenius norm bounds the spectral one
    for _ in range(steps):
        gram = wide @ wide.T
        wide = a * wide + (b * gram + c * gram @ gram) @ wide
    return wide.T if tall else wide


class FilterMuon(torch.optim.Optimizer):
    """Muon (Jordan et al., 2024) for conv filters: Nesterov momentum whose update is orthogonalized
    before it is applied, each filter bank flattened to (out channels, in channels x 3 x 3) as in
    airbench; ``torch.optim.Muon`` takes 2-D weights only.

    Every conv here feeds a batch norm, so only the direction of its filters matters, and an
    orthogonalized update moves all of those directions alike instead of mostly the few that
    dominate the gradient. The update is scaled by 0.2 sqrt(max(rows, columns)) to have AdamW's RMS
    (Liu et al., 2025; torch's ``adjust_lr_fn="match_rms_adamw"``), so its learning rate reads as an
    AdamW one."""

    def __init__(self, params, lr: float, weight_decay: float, momentum: float = 0.95):
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay, "momentum": momentum})

    @torch.no_grad()
    def step(self, closure=None) -> None:
        for group in self.param_groups:
            for filters in group["params"]:
                gradient = filters.grad.flatten(1)
                momentum = self.state[filters].setdefault("momentum", torch.zeros_like(gradient))
                momentum.mul_(group["momentum"]).add_(gradient)
                update = orthogonalized(gradient.add(momentum, alpha=group["momentum"]))
                filters.mul_(1 - group["lr"] * group["weight_decay"])
                filters.add_(update.view_as(filters), alpha=-group["lr"] * 0.2 * math.sqrt(max(update.shape)))


def learning_rate_factor(progress: float, warmup: float = 0.03) -> float:
    """Linear warm-up, then cosine decay to zero at the end of the budget."""
    if progress < warmup:
        return progress / warmup
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (progress - warmup) / (1 - warmup))))


class LossRankedSampler:
    """Draws each batch by the rank of every training image's latest loss (online batch selection,
    Loshchilov and Hutter, 2015): the image with the highest loss is ``pressure`` times as likely as the
    one with the lowest, with the odds falling exponentially over the ranks in between; pressure 1 draws
    uniformly. Images not yet drawn rank above all others, in random order.

    Most of Fashion-MNIST (trousers, bags, shoes) is learnt in the first epoch, while shirts, pullovers
    and coats stay confused, and retrieval errors come from those. The losses are the ones each step
    computes anyway, so steering the budget to the confused images costs only a sort per step (about
    9 ms of a 600-ms float32 step). Side by side with uniform draws, the same steps and two seeds, it
    gave held-out R@1 +0.0087 and +0.0090 and P@10 +0.0098 and +0.0094 (BENCHMARKS.md, session 12)."""

    def __init__(self, size: int, pressure: float, generator: torch.Generator):
        self.generator = generator
        self.latest_losses = UNSEEN_LOSS + torch.rand(size, generator=generator)
        ranks = torch.arange(size, dtype=torch.float64)
        self.rank_weights = torch.exp(-math.log(pressure) * ranks / size).float()

    def draw(self, count: int) -> torch.Tensor:
        by_loss = torch.argsort(self.latest_losses, descending=True)
        return by_loss[torch.multinomial(self.rank_weights, count, replacement=False, generator=self.generator)]

    def record(self, indices: torch.Tensor, losses: torch.Tensor) -> None:
        self.latest_losses[indices] = losses


UNSEEN_LOSS = 1e6  # above any cross-entropy, so images not yet drawn rank first


@dataclass
class TrainingRun:
    config: TrainConfig   # a resumed run's own settings, not the command line's
    model: nn.Module      # the embedder to export (see exported_model)
    dim: int              # its output dimension
    losses: list[float]   # total loss of every step
    steps: int
    cpu_seconds: float
    wall_seconds: float


class Trainer:
    """Model, head, loss, optimizer and progress: everything a checkpoint must restore."""

    def __init__(self, config: TrainConfig, train_size: int):
        torch.manual_seed(config.seed)
        self.config = config
        self.model = EmbeddingCNN(config.widths, config.dim, config.pooling).to(memory_format=torch.channels_last)
        if config.whitened_stem:  # train() sets the filters of a new run; a resumed one loads them
            self.model.stem.requires_grad_(False)
        self.head = HEADS[config.head](config.dim, len(fashion_mnist.CATEGORIES), config)
        self.proxy_anchor = ProxyAnchorLoss(len(fashion_mnist.CATEGORIES), config.dim)
        self.optimizers = self.make_optimizers()
        self.peak_learning_rates = [group["lr"] for group in self.param_groups()]
        self.generator = torch.Generator().manual_seed(config.seed)
        self.augment = ShopperPhotoAugment(self.generator, **AUGMENTATIONS[config.augment])
        self.sampler = LossRankedSampler(train_size, config.selection_pressure, self.generator)
        self.steps_per_epoch = train_size // config.batch_size
        self.step, self.cpu_seconds, self.wall_seconds, self.losses = 0, 0.0, 0.0, []

    def make_optimizers(self) -> list[torch.optim.Optimizer]:
        """AdamW, and with ``config.muon`` FilterMuon for the conv filters that train (AdamW skips those)."""
        config = self.config
        filters = [weight for weight in self.model.features.parameters()
                   if weight.ndim == 4 and weight.requires_grad] if config.muon else []
        head_decay = 0.0 if self.head.normalizes_weights else config.weight_decay
        adamw = torch.optim.AdamW([
            {"params": [parameter for parameter in self.model.parameters() if all(parameter is not f for f in filters)],
             "lr": config.learning_rate, "weight_decay": config.weight_decay},
            {"params": self.head.parameters(), "lr": config.learning_rate, "weight_decay": head_decay},
            {"params": self.proxy_anchor.parameters(), "lr": config.proxy_learning_rate, "weight_decay": 0.0},
        ])
        return [adamw, FilterMuon(filters, config.filter_learning_rate, config.weight_decay)] if filters else [adamw]

    def param_groups(self) -> list[dict]:
        return [group for optimizer in self.optimizers for group in optimizer.param_groups]

    def progress(self) -> float:
        if self.config.steps:
            return self.step / self.config.steps
        return self.cpu_seconds / (60 * self.config.minutes)

    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """One optimizer step; returns each image's classification loss and the step's figures."""
        factor = learning_rate_factor(self.progress())
        for group, peak in zip(self.param_groups(), self.peak_learning_rates):
            group["lr"] = peak * factor
        batch = self.augment(images).contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.config.bf16):
            embeddings = self.model(batch)
            logits = self.head(embeddings, labels)
        image_losses = F.cross_entropy(logits.float(), labels, label_smoothing=self.config.label_smoothing,
                                       reduction="none")
        classification = image_losses.mean()
        proxy_anchor = self.proxy_anchor(embeddings, labels)
        loss = classification + self.config.proxy_anchor_weight * proxy_anchor
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for optimizer in self.optimizers:
            optimizer.step()
        self.step += 1
        self.losses.append(loss.item())
        return image_losses.detach(), {"loss": loss.item(), "ce": classification.item(), "pa": proxy_anchor.item(),
                              "lr": self.param_groups()[0]["lr"]}

    def state(self) -> dict:
        return {"config": asdict(self.config), "model": self.model.state_dict(), "head": self.head.state_dict(),
                "proxy_anchor": self.proxy_anchor.state_dict(),
                "optimizers": [optimizer.state_dict() for optimizer in self.optimizers],
                "generator": self.generator.get_state(), "latest_losses": self.sampler.latest_losses,
                "step": self.step, "cpu_seconds": self.cpu_seconds, "wall_seconds": self.wall_seconds,
                "losses": self.losses}

    def save_checkpoint(self) -> None:
        partial = self.config.checkpoint.with_suffix(".partial")
        partial.parent.mkdir(parents=True, exist_ok=True)
        torch.save(self.state(), partial)
        partial.replace(self.config.checkpoint)  # atomic: a crash never leaves a half-written checkpoint

    @classmethod
    def from_checkpoint(cls, path: Path, train_size: int) -> "Trainer":
        state = torch.load(path, map_location="cpu", weights_only=False)
        if "width" in state["config"]:
            raise ValueError(f"{path} is a checkpoint of the earlier VGG-style network; this version cannot resume it")
        # checkpoints from before GeM pooling were average-pooled; before loss-ranked batches, drawn uniformly;
        # before Muon, trained by AdamW alone (and saved its one state as "optimizer"); before the
        # recalibration, exported with their batch norms' running statistics as trained
        config = TrainConfig(**{"pooling": "average", "selection_pressure": 1.0, "whitened_stem": False, "muon": False,
                                "recalibrate_batch_norm": False, **state["config"],
                                "out": Path(state["config"]["out"])})
        trainer = cls(config, train_size)
        trainer.model.load_state_dict(state["model"])
        trainer.head.load_state_dict(state["head"])
        trainer.proxy_anchor.load_state_dict(state["proxy_anchor"])
        saved_states = state["optimizers"] if "optimizers" in state else [state["optimizer"]]
        for optimizer, saved in zip(trainer.optimizers, saved_states):
            optimizer.load_state_dict(saved)
        trainer.generator.set_state(state["generator"])
        trainer.sampler.latest_losses = state.get("latest_losses", trainer.sampler.latest_losses)
        trainer.step, trainer.losses = state["step"], state["losses"]
        trainer.cpu_seconds, trainer.wall_seconds = state["cpu_seconds"], state["wall_seconds"]
        return trainer


def split_training_data(config: TrainConfig) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """(images, labels) to train on and (images, labels) held out: the last ``holdout`` of the first
    ``train_limit`` training images. Settings are chosen on the held-out images, never on the test split."""
    images, labels = fashion_mnist.load("train")
    images, labels = images[:config.train_limit], labels[:config.train_limit].astype(np.int64)
    kept = len(images) - config.holdout
    return (images[:kept], labels[:kept]), (images[kept:], labels[kept:])


def as_tensors(images: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels)


def train(config: TrainConfig, resume: bool = False) -> TrainingRun:
    """Run (or continue) training until the budget is spent; returns the model in eval mode."""
    torch.set_num_threads(config.threads)
    images, labels = as_tensors(*split_training_data(config)[0])
    if resume:
        trainer = Trainer.from_checkpoint(config.checkpoint, len(images))
        config = trainer.config
        print(f"resumed {config.checkpoint} at step {trainer.step}, {trainer.cpu_seconds:.0f} CPU s (its saved settings apply)")
    else:
        trainer = Trainer(config, len(images))
        if config.whitened_stem:
            with torch.no_grad():
                trainer.model.stem[0].weight.copy_(patch_whitening_filters(images[:WHITENING_IMAGES], config.widths[0]))
    if config.steps:
        bar = tqdm(total=config.steps, initial=trainer.step, unit="step")
    else:
        bar = tqdm(total=round(60 * config.minutes), initial=round(trainer.cpu_seconds), unit="CPU s")
    trainer.model.train()
    last_checkpoint = trainer.cpu_seconds
    while trainer.progress() < 1:
        cpu_started, wall_started = time.process_time(), time.perf_counter()
        indices = trainer.sampler.draw(config.batch_size)
        image_losses, logs = trainer.train_step(images[indices], labels[indices])
        trainer.sampler.record(indices, image_losses)
        trainer.cpu_seconds += time.process_time() - cpu_started
        trainer.wall_seconds += time.perf_counter() - wall_started
        bar.update(trainer.step - bar.n if config.steps else round(trainer.cpu_seconds) - bar.n)
        if trainer.step % 10 == 0:
            bar.set_postfix(epoch=f"{trainer.step / trainer.steps_per_epoch:.2f}",
                            **{name: f"{value:.3g}" for name, value in logs.items()})
        if trainer.cpu_seconds - last_checkpoint >= config.checkpoint_every_s:
            trainer.save_checkpoint()
            last_checkpoint = trainer.cpu_seconds
    bar.close()
    trainer.save_checkpoint()
    cpu_started, wall_started = time.process_time(), time.perf_counter()
    if config.recalibrate_batch_norm:
        recalibrate_batch_norm(trainer.model, images[:WHITENING_IMAGES])
    model, dim = exported_model(trainer.model, config)
    if config.whiten:
        embeddings = torch.from_numpy(unit_embeddings(model, dim, images[:WHITENING_IMAGES, 0].numpy()))
        model = WithinClassWhitening(model, *within_class_whitening(embeddings, labels[:WHITENING_IMAGES],
                                                                    config.whitening_shrinkage))
    return TrainingRun(config, model, dim, trainer.losses, trainer.step,
                       trainer.cpu_seconds + time.process_time() - cpu_started,
                       trainer.wall_seconds + time.perf_counter() - wall_started)


def unit_embeddings(model: nn.Module, dim: int, images: np.ndarray) -> np.ndarray:
    """Unit embeddings of uint8 images (N, 28, 28), through the same ImageEmbedder path as the service."""
    embedder = ImageEmbedder(EmbedderSpec("in-memory", dim, PREPROCESSING, lambda: model), forward_batch=256)
    return embed_images(embedder, images)


def retrieval_metrics(model: nn.Module, dim: int, images: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Leave-one-out retrieval metrics on these images."""
    return evaluate_retrieval(unit_embeddings(model, dim, images), labels).metrics


def evaluation_set(config: TrainConfig) -> tuple[str, np.ndarray, np.ndarray]:
    """Where the trained model is measured: the held-out training images when there are any
    (selection runs), else the Fashion-MNIST test split."""
    if config.holdout:
        return "fashion_mnist_train_holdout", *split_training_data(config)[1]
    return "fashion_mnist_test", *fashion_mnist.load("test")


def export(run: TrainingRun, metrics: dict, out: Path | None = None) -> Path:
    """Write the run's model as a TorchScript artifact (to the run's --out unless ``out`` is given)."""
    out = out or run.config.out
    return save_artifact(run.model, out.stem, run.dim, PREPROCESSING, metrics, out)


def parse_args(argv: list[str] | None = None) -> tuple[TrainConfig, bool]:
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(prog="python -m models.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=defaults.out,
                        help="TorchScript artifact to write; the checkpoint goes next to it as .ckpt")
    parser.add_argument("--minutes", type=float, default=defaults.minutes,
                        help="budget in CPU minutes of this process (other jobs on a shared host do not shrink it)")
    parser.add_argument("--steps", type=int, help="train this many steps instead of for --minutes")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--selection-pressure", type=float, default=defaults.selection_pressure,
                        help="draw high-loss images this many times as often as the lowest-loss ones (1: uniformly)")
    parser.add_argument("--widths", type=lambda text: tuple(int(width) for width in text.split(",")),
                        default=defaults.widths, help="channels of the stem and of each group, comma separated")
    parser.add_argument("--pooling", choices=sorted(POOLINGS), default=defaults.pooling,
                        help="global pooling of the last conv group: gem (learned power) or average")
    parser.add_argument("--dim", type=int, default=defaults.dim, help="embedding dimension")
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate,
                        help="AdamW's peak learning rate (with --muon, for all but the conv filters)")
    parser.add_argument("--muon", action=argparse.BooleanOptionalAction, default=defaults.muon,
                        help="train the conv filters with Muon (orthogonalized momentum) and the rest with AdamW")
    parser.add_argument("--filter-learning-rate", type=float, default=defaults.filter_learning_rate,
                        help="Muon's peak learning rate for the conv filters, in AdamW-matched units")
    parser.add_argument("--proxy-learning-rate", type=float, default=defaults.proxy_learning_rate)
    parser.add_argument("--weight-decay", type=float, default=defaults.weight_decay)
    parser.add_argument("--proxy-anchor-weight", type=float, default=defaults.proxy_anchor_weight)
    parser.add_argument("--label-smoothing", type=float, default=defaults.label_smoothing)
    parser.add_argument("--head", choices=sorted(HEADS), default=defaults.head,
                        help="classification head: linear, or cosine with an additive margin (CosFace)")
    parser.add_argument("--head-scale", type=float, default=defaults.head_scale, help="cosine head: logit scale")
    parser.add_argument("--head-margin", type=float, default=defaults.head_margin,
                        help="cosine head: margin subtracted from the true class's cosine while training")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--train-limit", type=int, help="use only the first N training images")
    parser.add_argument("--holdout", type=int, default=defaults.holdout,
                        help="train without the last N training images and report metrics on them instead of on "
                             "the test split (for choosing settings)")
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=defaults.bf16,
                        help="bfloat16 autocast (default: where the CPU computes bfloat16 natively, AVX-512 or AMX)")
    parser.add_argument("--augment", choices=sorted(AUGMENTATIONS), default=defaults.augment,
                        help="training augmentation: mild (mirror, small shifts), shopper (shopper-photo look), none")
    parser.add_argument("--readout", choices=sorted(READOUTS), default=defaults.readout,
                        help="what the artifact outputs: the pooled conv features or the trained embedding layer")
    parser.add_argument("--flip-average", action=argparse.BooleanOptionalAction, default=defaults.flip_average,
                        help="export a model that averages the embeddings of the image and its mirror image")
    parser.add_argument("--whiten", action=argparse.BooleanOptionalAction, default=defaults.whiten,
                        help="export a model that whitens its embeddings by their within-class covariance")
    parser.add_argument("--whitening-shrinkage", type=float, default=defaults.whitening_shrinkage,
                        help="added to the within-class covariance's eigenvalues, in units of their mean")
    parser.add_argument("--whitened-stem", action=argparse.BooleanOptionalAction, default=defaults.whitened_stem,
                        help="fix the stem conv to patch-whitening filters instead of training it")
    parser.add_argument("--recalibrate-batch-norm", action=argparse.BooleanOptionalAction,
                        default=defaults.recalibrate_batch_norm,
                        help="recompute the batch norms' running statistics on 10,000 unaugmented training images "
                             "after training (loss-ranked batches skew them)")
    parser.add_argument("--threads", type=int, default=defaults.threads, help="torch threads")
    parser.add_argument("--checkpoint-every", dest="checkpoint_every_s", type=float,
                        default=defaults.checkpoint_every_s, help="CPU seconds between checkpoints")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run saved in the checkpoint next to --out, with its settings")
    args = vars(parser.parse_args(argv))
    resume = args.pop("resume")
    return TrainConfig(**args), resume


def main(argv: list[str] | None = None) -> None:
    run = train(*parse_args(argv))
    evaluated_on, images, labels = evaluation_set(run.config)
    metrics = retrieval_metrics(run.model, run.dim, images, labels)
    summary = {evaluated_on: metrics,
               "training": {"steps": run.steps, "cpu_minutes": round(run.cpu_seconds / 60, 2),
                            "wall_minutes": round(run.wall_seconds / 60, 2), "seed": run.config.seed}}
    path = export(run, summary)
    print(f"trained {run.steps} steps ({run.steps * run.config.batch_size / len(split_training_data(run.config)[0][1]):.1f}"
          f" epochs) in {run.cpu_seconds:.0f} CPU seconds of this process ({run.cpu_seconds / 60:.2f} CPU minutes,"
          f" {run.wall_seconds / 60:.1f} wall minutes)")
    print(f"wrote {path}; {evaluated_on}: " + ", ".join(f"{name} {value:.4f}" for name, value in metrics.items()))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(f"whole command (loading, training, test-set metrics, export): {(usage.ru_utime + usage.ru_stime) / 60:.2f}"
          " CPU minutes")


if __name__ == "__main__":
    main()
