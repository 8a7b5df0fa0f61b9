"""HTTP query API and operational endpoints, served by every worker (Faust's web server).

Requests are validated with pydantic and answered with JSON; bad requests get a 4xx and a
message that names the problem, never a traceback. Recommendation requests are routed to
the worker that owns the user's profile partition.
"""
import logging
import time
from dataclasses import asdict
from typing import TypeVar

from aiohttp.web import HTTPException
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field, ValidationError

from models.images import BadImage
from recommender.interests import UserProfile
from recommender.store import Hit, ProductFilter
from streams import handlers, metrics
from streams.agents import catalog_loaded, cnn_thread, in_thread, services, store_outage, store_thread
from streams.app import app, profiles, settings
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


def parse_query(model: type[Q], request: Request) -> Q:
    try:
        return model.model_validate(dict(request.query))
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
        profile = UserProfile.from_json(profiles.get(user_id))
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
        image_vector = await in_thread(cnn_thread, handlers.embed_photo, services, upload.file.read())
        text_vector = await in_thread(cnn_thread, handlers.embed_query_text, services, keywords) if keywords \
            else None
        hits = await in_thread(store_thread, handlers.search_products, services, query.k, query.product_filter(),
                               image_vector, text_vector)
        return self.json({"items": await items(hits, query)})


@app.page("/api/popular", base=ApiView)
class PopularProducts(ApiView):
    async def get(self, request: Request) -> Response:
        query = parse_query(ListQuery, request)
        hits = await in_thread(store_thread, handlers.popular_hits, services, query.k, time.time(),
                               query.product_filter())
        return self.json({"items": await items(hits, query)})


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

