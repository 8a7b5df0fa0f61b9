"""The opt-in ONNX Runtime path must give the same embeddings as torch (it is only faster)."""
import numpy as np
import pytest
from PIL import Image

from models.embedders import load_embedder


def test_onnx_runtime_embeddings_match_torch():
    rng = np.random.default_rng(0)
    # Odd sizes and a batch that does not divide by forward_batch exercise resize, crop and the last chunk.
    photos = [Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
              for height, width in ((28, 28), (40, 32), (300, 200), (224, 224), (64, 96))]
    expected = load_embedder("efficientnet_lite0", threads=1, forward_batch=4).embed(photos)
    actual = load_embedder("efficientnet_lite0", threads=1, forward_batch=4, runtime="onnx").embed(photos)
    assert actual.shape == expected.shape == (5, 1280) and actual.dtype == np.float32
    np.testing.assert_allclose(actual, expected, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(actual, axis=1), 1.0, atol=1e-5)


def test_unknown_runtime_is_refused():
    with pytest.raises(ValueError, match="unknown runtime"):
        load_embedder("efficientnet_lite0", runtime="tensorrt")
