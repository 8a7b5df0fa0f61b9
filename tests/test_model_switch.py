"""Switching the image model on a live worker: re-index in the background, then swap, with
queries answered correctly all the way through."""
import base64
import threading

import httpx
import pytest
import torch
from torch import nn

from models.embedders import Preprocessing, save_artifact
from streams import topics
from streams.client import TopicReader, produce
from tests.conftest import isolated_settings, running_worker

pytestmark = pytest.mark.integration
TOKEN = "test-admin-token"


def tiny_model_artifact(path) -> str:
    """A small untrained CNN saved as a model version: different vectors, same interface."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten())
    save_artifact(model, "tiny_cnn_v1", 64, Preprocessing(28, (0.5,), (0.5,), grayscale=True), {}, path)
    return str(path)


def test_switch_model_under_live_queries(broker_url, catalog, tmp_path):
    products = catalog[:40]
    settings = isolated_settings(broker_url, admin_token=TOKEN, text_embedder="none")
    with running_worker(settings, tmp_path) as worker:
        produce(settings, topics.CATALOG, [(p.product_id, p.listing()) for p in products])
        similar = TopicReader(settings, topics.SIMILAR_ITEMS)
        similar.until(lambda ms: len({m["product_id"] for m in ms}) >= len(products), 180)
        api = httpx.Client(base_url=f"http://127.0.0.1:{settings.web_port}", timeout=60,
                           headers={"Authorization": f"Bearer {TOKEN}"})
        assert api.get("/api/admin/model").json()["current"] == "efficientnet_lite0"

        answers, stop = [], threading.Event()

        def keep_querying():
            with httpx.Client(base_url=f"http://127.0.0.1:{settings.web_port}", timeout=60) as client:
                while not stop.is_set():
                    product = products[len(answers) % len(products)]
                    photo = base64.b64decode(product.listing()["image_b64"])
                    response = client.post("/api/search/image", params={"k": 3}, files={"image": ("p.png", photo)})
                    answers.append((product.product_id, response.status_code,
                                    response.json()["items"][0]["product_id"] if response.status_code == 200 else None))

        querying = threading.Thread(target=keep_querying)
        querying.start()
        try:
            accepted = api.post("/api/admin/model", params={"embedder": tiny_model_artifact(tmp_path / "tiny.pt")})
            assert accepted.status_code == 202, accepted.text
            assert api.post("/api/admin/model", params={"embedder": "efficientnet_lite0"}).status_code == 409
            similar.until(lambda ms: {m["product_id"] for m in ms if m["model"] == "tiny_cnn_v1"} >=
                          {p.product_id for p in products}, 180)
            state = api.get("/api/admin/model").json()
            while state["state"] not in ("done", "failed"):
                state = api.get("/api/admin/model").json()
        finally:
            stop.set()
            querying.join()
        assert state["state"] == "done" and state["current"] == "tiny_cnn_v1", state
        assert state["indexed"] >= len(products)
        assert len(answers) >= 5
        failed = [answer for answer in answers if answer[1] != 200 or answer[0] != answer[2]]
        assert not failed, failed
        # After the switch photo queries use the new model and still find the product.
        photo = base64.b64decode(products[7].listing()["image_b64"])
        after = api.post("/api/search/image", files={"image": ("p.png", photo)}).json()["items"][0]
        assert after["product_id"] == products[7].product_id
        assert worker.alive()


def test_admin_api_needs_the_token(shop):
    settings, _, _ = shop
    with httpx.Client(base_url=f"http://127.0.0.1:{settings.web_port}") as api:
        response = api.post("/api/admin/model", params={"embedder": "resnet50"})
        assert response.status_code == 403 and "VR_ADMIN_TOKEN" in response.json()["error"]
