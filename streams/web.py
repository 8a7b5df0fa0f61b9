"""HTTP query API and operational endpoints, served by every worker (Faust's web server).

Requests are validated with pydantic and answered with JSON; bad requests get a 4xx and a
message that names the problem, never a traceback. Recommendation requests are routed to
the worker that owns the user's profile partition.
"""
import asyncio
import hmac
import json
import logging
import random
import time
from dataclasses import asdict
from pathlib import Path
from typing import TypeVar

from aiohttp.web import HTTPException, StreamResponse
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field, ValidationError

from models.embedders import resolve_spec
from models.images import BadImage
from recommender.interests import UserProfile
from recommender.store import Hit, ProductFilter
from streams import agents, demo, handlers, live, metrics
from streams.agents import catalog_loaded, cnn_thread, in_thread, services, store_outage, store_thread
from streams.app import app, profiles, settings
from streams.events import Identifier
from streams.retry import is_transient

log = logging.getLogger(__name__)
Q = TypeVar("Q", bound=BaseModel)
# aiohttp refuses bodies over 1 MiB by default; photos may be as large as the image limit.
app.web.web_app._client_max_size = settings.max_image_bytes + 64 * 1024


class ListQuery(BaseModel):
    k: int = Field(10, ge=1, le=100)
    category: str | None = Field(None, max_length=64)
    max_price: float | None = Field(None, ge=0)
    thumbnails: bool = False

    def product_filter(self) -> ProductFilter:
        return ProductFilter(category=self.category, max_price=self.max_price)


class TextQuery(ListQuery):
    q: str = Field(min_length=1, max_length=200)


class BrowseQuery(BaseModel):
    category: str | None = Field(None, max_length=64)
    limit: int = Field(24, ge=1, le=200)
    offset: str | None = Field(None, max_length=64)


class BadRequest(Exception):
    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def parse_query(model: type[Q], request: Request, **path_values: str) -> Q:
    try:
        return model.model_validate({**request.query, **path_values})
    except ValidationError as error:
        raise BadRequest("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                                   for e in error.errors(include_url=False, include_input=False))) from None


async def with_thumbnails(rows: list[dict], wanted: bool) -> list[dict]:
    """Adds each product's thumbnail as a data URL (for result pages) when asked."""
    if wanted:
        products = await in_thread(store_thread, services.store.get_products, [row["product_id"] for row in rows])
        for row in rows:
            product = products.get(row["product_id"])
            row["thumbnail"] = _data_url(product[0].thumbnail_b64) if product else None
    return rows


def _data_url(png_b64: str | None) -> str | None:
    return f"data:image/png;base64,{png_b64}" if png_b64 else None


async def items(hits: list[Hit], query: ListQuery) -> list[dict]:
    return await with_thumbnails([item.model_dump() for item in handlers.scored(hits)], query.thumbnails)


class ApiView(View):
    """Turns BadRequest and known domain errors into JSON 4xx responses, and anything else into
    a JSON 503 or 500 that says nothing about internals (no traceback, no exception message)."""

    async def dispatch(self, request):
        try:
            if request.path.startswith("/api/") and not catalog_loaded.is_set():
                raise BadRequest("catalog still loading", 503)
            return await super().dispatch(request)
        except BadRequest as error:
            return self.json({"error": str(error)}, status=error.status)
        except handlers.UnknownId as error:
            return self.json({"error": str(error)}, status=404)
        except (BadImage, handlers.Rejected) as error:
            return self.json({"error": str(error)}, status=422)
        except HTTPException:  # aiohttp's own answers, e.g. 413 for an oversize upload
            raise
        except Exception as error:
            if is_transient(error):
                return self.json({"error": "temporarily unavailable, try again shortly"}, status=503)
            log.exception("unexpected error answering %s", request.path)
            return self.json({"error": "internal error"}, status=500)


@app.page("/api/users/{user_id}/recommendations", base=ApiView)
class UserRecommendations(ApiView):
    @app.table_route(table=profiles, match_info="user_id")
    async def get(self, request: Request, user_id: str) -> Response:
        query = parse_query(ListQuery, request)
        profile = UserProfile.from_json(profiles.get(user_id.encode()))
        _, recommendations = await in_thread(store_thread, handlers.recommend_for_user, services, user_id, profile,
                                             time.time(), None, query.k, query.product_filter())
        result = recommendations.model_dump()
        result["items"] = await with_thumbnails(result["items"], query.thumbnails)
        return self.json(result)


@app.page("/api/products/{product_id}/similar", base=ApiView)
class SimilarProducts(ApiView):
    async def get(self, request: Request, product_id: str) -> Response:
        query = parse_query(ListQuery, request)
        hits = await in_thread(store_thread, handlers.similar_to_product, services, product_id, query.k,
                               query.product_filter())
        return self.json({"product_id": product_id, "items": await items(hits, query)})


@app.page("/api/products", base=ApiView)
class BrowseProducts(ApiView):
    async def get(self, request: Request) -> Response:
        query = parse_query(BrowseQuery, request)
        products, next_offset = await in_thread(store_thread, services.store.browse, query.limit, query.offset,
                                                query.category)
        rows = [{**{key: value for key, value in asdict(product).items() if key != "thumbnail_b64"},
                 "thumbnail": _data_url(product.thumbnail_b64)} for product in products]
        return self.json({"items": rows, "next_offset": next_offset})


@app.page("/api/search/text", base=ApiView)
class SearchByKeywords(ApiView):
    async def get(self, request: Request) -> Response:
        query = parse_query(TextQuery, request)
        text_vector = await in_thread(cnn_thread, handlers.embed_query_text, services, query.q)
        hits = await in_thread(store_thread, handlers.search_products, services, query.k, query.product_filter(),
                               None, text_vector)
        return self.json({"q": query.q, "items": await items(hits, query)})


@app.page("/api/search/image", base=ApiView)
class SearchByPhoto(ApiView):
    """POST multipart/form-data with a file field ``image`` (and optional ``q`` keywords)."""

    async def post(self, request: Request) -> Response:
        query = parse_query(ListQuery, request)
        if not request.content_type.startswith("multipart/"):
            raise BadRequest("send the photo as multipart/form-data with a file field 'image'", 415)
        form = await request.post()
        upload = form.get("image")
        if upload is None or not hasattr(upload, "file"):
            raise BadRequest("missing file field 'image'")
        keywords = str(form.get("q") or "").strip()[:200]
        photo = await in_thread(cnn_thread, handlers.embed_photo, services, upload.file.read())
        text_vector = await in_thread(cnn_thread, handlers.embed_query_text, services, keywords) if keywords \
            else None
        hits = await in_thread(store_thread, handlers.search_products, services, query.k, query.product_filter(),
                               photo, text_vector)
        return self.json({"items": await items(hits, query)})


@app.page("/api/popular", base=ApiView)
class PopularProducts(ApiView):
    async def get(self, request: Request) -> Response:
        query = parse_query(ListQuery, request)
        hits = await in_thread(store_thread, handlers.popular_hits, services, query.k, time.time(),
                               query.product_filter())
        return self.json({"items": await items(hits, query)})


class ModelSwitchRequest(BaseModel):
    embedder: str = Field(min_length=1, max_length=500, description="Registry name or model file path")


@app.page("/api/admin/model", base=ApiView)
class ModelAdmin(ApiView):
    """GET: the model in service and the latest switch; POST ?embedder=...: re-index and switch."""

    def _authorize(self, request: Request) -> None:
        if not settings.admin_token:
            raise BadRequest("admin API is off: set VR_ADMIN_TOKEN", 403)
        if not hmac.compare_digest(request.headers.get("Authorization", ""), f"Bearer {settings.admin_token}"):
            raise BadRequest("missing or wrong bearer token", 401)

    async def get(self, request: Request) -> Response:
        self._authorize(request)
        return self.json({**agents.model_switch, "current": services.spec.name})

    async def post(self, request: Request) -> Response:
        self._authorize(request)
        query = parse_query(ModelSwitchRequest, request)
        if agents.model_switch["state"] in ("reindexing", "switched"):
            raise BadRequest(f"a switch to {agents.model_switch['to']} is under way", 409)
        try:
            spec = resolve_spec(query.embedder)
        except (ValueError, RuntimeError) as error:
            raise BadRequest(f"cannot load that model: {error}", 422) from None
        if spec.name == services.spec.name:
            raise BadRequest(f"{spec.name} is already in service", 409)
        agents.start_model_switch(spec)
        return self.json({"state": "reindexing", "from": services.spec.name, "to": spec.name}, status=202)


STATIC = Path(__file__).parent / "static"
app.web.add_static("/static", STATIC)


@app.page("/")
class DemoPage(View):
    """The demo page (streams/static/): photo and keyword search, live recommendations, browsing."""

    async def get(self, request: Request) -> Response:
        return self.html((STATIC / "index.html").read_text())


@app.page("/api/categories", base=ApiView)
class Categories(ApiView):
    async def get(self, request: Request) -> Response:
        counts = await in_thread(store_thread, services.store.categories)
        return self.json({"categories": [{"name": name, "products": count} for name, count in sorted(counts.items())]})


class LiveQuery(BaseModel):
    thumbnails: bool = False


# A comment line every so often: proxies keep the stream open, and a closed tab shows up as a failed write.
KEEPALIVE_S = 15.0


@app.page("/api/users/{user_id}/live", base=ApiView)
class LiveRecommendations(ApiView):
    """Server-sent events: each new recommendation list for the user, as it is emitted (streams/live.py)."""

    async def get(self, request: Request, user_id: str) -> StreamResponse:
        query = parse_query(LiveQuery, request)
        stream = StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await stream.prepare(request)
        with live.subscription(user_id) as updates:
            try:
                while (message := await self.next_message(updates, query)) is not None:
                    await stream.write(message)
            except ConnectionResetError:
                pass  # the browser went away
        return stream

    @staticmethod
    async def next_message(updates: asyncio.Queue, query: LiveQuery) -> bytes | None:
        """The next event, a keep-alive comment, or None once the worker is stopping."""
        try:
            recommendations = await asyncio.wait_for(updates.get(), KEEPALIVE_S)
        except TimeoutError:
            return b": keep-alive\n\n"
        if recommendations is None:
            return None
        body = recommendations.model_dump()
        body["items"] = await with_thumbnails(body["items"], query.thumbnails)
        return f"data: {json.dumps(body)}\n\n".encode()


async def _end_live_streams(_web_app) -> None:
    live.close_all()


# The web server waits for running requests when it stops; open event streams would never end.
app.web.web_app.on_shutdown.append(_end_live_streams)


class PlayRequest(BaseModel):
    user_id: Identifier
    actions: int = Field(8, ge=1, le=50)
    pause_s: float = Field(1.0, ge=0, le=5, description="Seconds between two actions")
    categories: str | None = Field(None, max_length=500, description="Comma-separated interests; two random "
                                   "categories of the catalog when absent")


@app.page("/api/users/{user_id}/play", base=ApiView)
class PlaySession(ApiView):
    """POST: a simulated browsing session for the user, sent to the actions topic (the demo page's button).

    Answers once the last action is sent; the recommendations it causes arrive on /live.
    """

    async def post(self, request: Request, user_id: str) -> Response:
        query = parse_query(PlayRequest, request, user_id=user_id)
        known = await in_thread(store_thread, services.store.categories)
        if not known:
            raise BadRequest("the catalog has no categories to browse", 409)
        interests = [name.strip() for name in (query.categories or "").split(",") if name.strip()] \
            or random.sample(sorted(known), min(2, len(known)))
        if unknown := sorted(set(interests) - known.keys()):
            raise BadRequest(f"unknown categories: {', '.join(unknown)}")
        pool = []
        for category in interests:
            products, _ = await in_thread(store_thread, services.store.browse, 200, None, category)
            pool.extend(products)
        events = await asyncio.to_thread(demo.play_paced_session, settings, query.user_id, pool, interests, query.actions,
                                         query.pause_s)
        titles = {product.product_id: product.title for product in pool}
        return self.json({"user_id": query.user_id, "interests": interests, "actions": [
            {"product_id": e["product_id"], "title": titles[e["product_id"]], "action": e["action"]} for e in events]})


@app.page("/health")
class Health(View):
    async def get(self, request: Request) -> Response:
        # In the store thread: the store is not shared between threads, and a hanging store
        # server must not block the event loop.
        state = await in_thread(store_thread, handlers.health, services, catalog_loaded.is_set(),
                                store_outage.reason)
        return self.json(state, status=200 if state["status"] == "ok" else 503)


@app.page("/metrics")
class Metrics(View):
    async def get(self, request: Request) -> Response:
        if catalog_loaded.is_set():
            metrics.STORE_PRODUCTS.set(await in_thread(store_thread, services.store.count))
        return self.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0])

