"""What a downstream service uses to retrieve: the alias, the query encoder of the model that built
the collection behind it, and the user's behaviour features from the warehouse."""

from __future__ import annotations

import json
import logging
import math
import unicodedata
from dataclasses import dataclass

import duckdb
import pyarrow as pa
from pymilvus.exceptions import MilvusException

from ebr.query_encoder import QueryEncoder, load_query_encoder
from ebr.settings import Settings
from ebr.warehouse import reading
from indexing import store

BEHAVIOUR_COLUMNS = ["rt_items", "st_items", "past_queries"] + [
    f"lt_{a}_{x}" for a in ("click", "cart", "purchase") for x in ("item", "shop", "leaf", "brand")
]
RESULT_FIELDS = ["title", "leaf_category", "brand", "shop", "price"]
MAX_USER_ID = 256
MAX_FILTER_TEXT = 200
log = logging.getLogger(__name__)


def check_user_id(user_id: str) -> None:
    """A caller's user id is data: bounded, printable; the warehouse query binds it as a parameter."""
    if not isinstance(user_id, str) or len(user_id) > MAX_USER_ID:
        raise ValueError(f"user_id must be a string of at most {MAX_USER_ID} characters")
    if any(unicodedata.category(ch) == "Cc" for ch in user_id):
        raise ValueError(f"user_id must not contain control characters, got {user_id!r}")


def user_features(settings: Settings, user_id: str | None) -> dict[str, list]:
    """The user's behaviour as of the end of the newest day in the warehouse (empty for a new user)."""
    empty: dict[str, list] = {c: [] for c in BEHAVIOUR_COLUMNS}
    if not user_id:
        return empty
    check_user_id(user_id)
    if not settings.warehouse.exists():
        return empty
    try:
        with reading(settings.warehouse) as con:
            row = con.execute(
                f"select {', '.join(BEHAVIOUR_COLUMNS)} from mart_user_features "
                "where user_id = ? order by ds desc limit 1",
                [user_id],
            ).fetchone()
    except duckdb.IOException as e:
        # DuckDB locks its file while a writer (the day's dbt run) holds it: answering without
        # personalisation beats failing the search. Services that pass features= never get here.
        log.warning("user features unavailable (%s): searching without them", e)
        return empty
    return dict(zip(BEHAVIOUR_COLUMNS, row)) if row else empty


@dataclass(frozen=True)
class Filters:
    """Relevance control: only items of this category (leaf or top), brand and price range."""

    category: str | None = None
    brand: str | None = None
    price_min: float | None = None
    price_max: float | None = None

    def expression(self) -> str:
        """The Milvus boolean expression; caller text only ever enters it as a JSON string literal."""
        terms = []
        if self.category is not None:
            value = _literal("category", self.category)
            terms.append(f"(leaf_category == {value} or top_category == {value})")
        if self.brand is not None:
            terms.append(f"brand == {_literal('brand', self.brand)}")
        low, high = _price("price_min", self.price_min), _price("price_max", self.price_max)
        if low is not None and high is not None and low > high:
            raise ValueError(f"price_min {low} is above price_max {high}")
        if low is not None:
            terms.append(f"price >= {low!r}")
        if high is not None:
            terms.append(f"price <= {high!r}")
        return " and ".join(terms)


def _literal(name: str, text: str) -> str:
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_FILTER_TEXT:
        raise ValueError(f"{name} must be non-blank text of at most {MAX_FILTER_TEXT} characters")
    if any(unicodedata.category(ch) == "Cc" for ch in text):
        raise ValueError(f"{name} must not contain control characters, got {text!r}")
    return json.dumps(text, ensure_ascii=False)  # quotes and backslashes escaped


def _price(name: str, value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return value


class RetrievalClient:
    """Searches the live alias; reloads its encoder whenever the alias has moved.

    Each request resolves the alias once to a concrete collection, encodes with the exported query
    encoder (ebr.query_encoder: no model code) of the model version recorded on that collection
    and searches that collection, not the alias: a promotion or
    rollback meanwhile cannot pair an encoder with another version's vectors."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._model: QueryEncoder | None = None

    def _encoder(self, current: store.CollectionInfo) -> QueryEncoder:
        """The query encoder of the model that built `current`, checked to be that version.
        Returned, not read back from self._model: threads sharing this client each keep the
        model of the collection they resolved."""
        model = self._model
        if model is None or model.version != current.model_version:
            path = self.settings.models / f"v{current.model_version}"
            model = load_query_encoder(path)
            if model.version != current.model_version:
                raise RuntimeError(
                    f"{path} holds model v{model.version}, not the v{current.model_version} "
                    f"that built {current.name}: refusing to pair them"
                )
            self._model = model
        return model

    def search(
        self,
        query: str,
        user_id: str | None = None,
        k: int = 10,
        filters: Filters | None = None,
        features: dict[str, list] | None = None,
    ) -> dict:
        """Top k items for one query. The user's behaviour comes from the warehouse, unless the
        caller passes `features` (BEHAVIOUR_COLUMNS -> lists, oldest first)."""
        if features is None:
            features = user_features(self.settings, user_id)
        elif set(features) - set(BEHAVIOUR_COLUMNS):
            raise ValueError(
                f"unknown feature columns {sorted(set(features) - set(BEHAVIOUR_COLUMNS))}"
            )
        request = pa.table(
            {
                "user_id": [user_id or ""],
                "query": [query],
                **{c: [list(features.get(c, []))] for c in BEHAVIOUR_COLUMNS},
            }
        )
        served = self.search_requests(request, k, filters)
        return {**served, "results": served["results"][0]}

    def search_requests(
        self, requests: pa.Table, k: int = 10, filters: Filters | None = None
    ) -> dict:
        """Requests that carry their own behaviour features (user_id, query and the behaviour
        lists, as in mart_eval_examples rows): one list of hits per request, in order."""
        if not 1 <= k <= 16384:  # Milvus' own top-k limit
            raise ValueError(f"k must be in [1, 16384], got {k}")
        expr = filters.expression() if filters else ""
        with store.connect(self.settings) as client:
            try:
                current, hits = self._search_live(client, requests, k, expr)
            except (MilvusException, FileNotFoundError) as e:
                # clean() drops a collection and its model once the alias has left them. A request
                # that resolved the alias just before it moved can find either gone; the alias
                # names a complete collection at every instant, so resolving it again serves.
                log.info("retrying once after %s: %s", type(e).__name__, e)
                current, hits = self._search_live(client, requests, k, expr)
        return {
            "alias": self.settings.alias,
            "collection": current.name,
            "model_version": current.model_version,
            "ds": current.ds,
            "results": [
                [
                    {
                        "item_id": h["item_id"],
                        "score": round(float(h["distance"]), 4),
                        **{f: h["entity"].get(f) for f in RESULT_FIELDS},
                    }
                    for h in row
                ]
                for row in hits
            ],
        }

    def _search_live(
        self, client, requests: pa.Table, k: int, expr: str
    ) -> tuple[store.CollectionInfo, list[list[dict]]]:
        current = store.live(client, self.settings.alias)
        if current is None:
            raise LookupError(
                f"alias {self.settings.alias} does not exist yet: no model has been promoted"
            )
        vectors = self._encoder(current).encode(requests)
        return current, store.search(
            client, current.name, vectors, k, output_fields=RESULT_FIELDS, expr=expr
        )


def sample_requests(settings: Settings, n: int) -> list[tuple[str, str]]:
    """A few held-out (user, query) pairs of the newest day, users with history first."""
    with reading(settings.warehouse) as con:
        return con.execute(
            "select user_id, query from mart_eval_examples "
            "where ds = (select max(ds) from mart_eval_examples) "
            "order by len(rt_items) desc, request_id limit ?",
            [n],
        ).fetchall()
