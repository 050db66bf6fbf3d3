"""The one module that talks to Milvus, so a Milvus server instead of Milvus Lite is a URI change.

A collection records the model version and data day that built it as collection properties, and
is marked complete only after it is flushed, indexed and loaded: anything without that mark is
debris from a dead run.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from pymilvus import DataType, MilvusClient
from pymilvus.client.types import LoadState

from ebr.settings import Settings

SCALAR_FIELDS = ("title", "leaf_category", "top_category", "brand", "shop")
NAME = re.compile(r"^items_(\d{8})_v(\d+)$")
# A Milvus server's build settings. Milvus Lite (3.2.2) builds one index whatever they say: on
# the medium bench's 202k vectors M 4..16 and efConstruction 16..200 indexed in the same time
# and found the same 0.9938 of the exact top-100 (docs/scale-out.md, "The index build").
HNSW = {"M": 16, "efConstruction": 200}
SEARCH_BATCH = 512  # one Milvus Lite call costs ~0.1 s whatever nq is: batch queries
# HNSW search breadth per requested hit. On the medium bench's 202k items (1,000 held-out
# requests, same run): 4 x K found 0.877 of the exact top-50 and 0.948 of the top-100, 8 x K
# 0.954 and 0.987, 16 x K 0.989 and 0.999; queries/s stayed within noise of each other (Milvus
# Lite's cost follows the hits returned, not ef).
EF_PER_K = 8


@dataclass(frozen=True)
class CollectionInfo:
    name: str
    model_version: int
    ds: str
    complete: bool


def collection_name(ds: str, version: int) -> str:
    return f"items_{ds.replace('-', '')}_v{version}"


# The embedded Milvus Lite server keeps gRPC's default 5-minute minimum ping interval, while
# pymilvus pings every 10 s even when idle: after a few idle minutes in one process (a DAG test
# between stages) the server sends the channel away with "too many pings". Lite needs no pings.
LITE_GRPC_OPTIONS = {
    "grpc.keepalive_time_ms": 2**31 - 1,
    "grpc.keepalive_permit_without_calls": False,
}


def _unimplemented_timestamp(record: logging.LogRecord) -> bool:
    """False for the one record to drop: pymilvus waits for an index by first asking for a
    timestamp (AllocTimestamp), which Milvus Lite's in-process gRPC adapter does not implement;
    pymilvus ignores the UNIMPLEMENTED answer and waits as before, but the adapter's server
    logged each ask as an ERROR with a traceback, in every build's log."""
    if record.exc_info is None or not isinstance(record.exc_info[1], NotImplementedError):
        return True
    tb = record.exc_info[2]
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is None or tb.tb_frame.f_code.co_name != "AllocTimestamp"


@contextmanager
def connect(settings: Settings) -> Iterator[MilvusClient]:
    lite = settings.milvus_uri.endswith(".db")
    if lite:
        server_log = logging.getLogger("grpc._server")
        if _unimplemented_timestamp not in server_log.filters:
            server_log.addFilter(_unimplemented_timestamp)
    client = MilvusClient(
        uri=settings.milvus_uri,
        token=settings.milvus_token,
        **({"grpc_options": LITE_GRPC_OPTIONS} if lite else {}),
    )
    try:
        yield client
    finally:
        client.close()


def create(client: MilvusClient, name: str, dim: int) -> None:
    """Creates an empty collection for dim-wide model vectors (stored one wider, see above),
    replacing a non-live one of the same name (a rerun)."""
    if client.has_collection(name):
        drop(client, name, protected=aliased(client))
    schema = MilvusClient.create_schema(auto_id=False)
    schema.add_field("item_id", DataType.VARCHAR, is_primary=True, max_length=128)
    schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=dim + 1)
    for field in SCALAR_FIELDS:
        schema.add_field(field, DataType.VARCHAR, max_length=1024)
    schema.add_field("price", DataType.FLOAT)
    client.create_collection(name, schema=schema)


def insert(
    client: MilvusClient, name: str, rows: dict[str, list], vectors: np.ndarray, norm_bound: float
) -> None:
    """Rows and their item vectors, no longer than norm_bound (the same for the whole collection:
    the model's item_norm_bound)."""
    stored = item_side(vectors, norm_bound)
    # Rows of the float32 array as they are (pymilvus takes them): a list per row cost 0.05 s of
    # the 0.5 s that building and packing 8,192 rows takes here.
    data = [
        {
            "item_id": rows["item_id"][k],
            "embedding": stored[k],
            "price": float(rows["price"][k]),
            **{f: str(rows[f][k] or "")[:1000] for f in SCALAR_FIELDS},
        }
        for k in range(len(vectors))
    ]
    client.insert(name, data)


def finish(client: MilvusClient, name: str, model_version: int, ds: str) -> None:
    """Flush before indexing (Milvus Lite ignores an index built over unflushed rows), load,
    and only then mark the collection complete."""
    client.flush(name)
    params = client.prepare_index_params()
    params.add_index("embedding", index_type="HNSW", metric_type="IP", params=HNSW)
    client.create_index(name, params)
    client.load_collection(name)
    client.alter_collection_properties(
        name,
        properties={"ebr.model_version": str(model_version), "ebr.ds": ds, "ebr.complete": "1"},
    )


def info(client: MilvusClient, name_or_alias: str) -> CollectionInfo:
    desc = client.describe_collection(name_or_alias)
    props = desc.get("properties", {})
    return CollectionInfo(
        name=desc["collection_name"],
        model_version=int(props.get("ebr.model_version", -1)),
        ds=props.get("ebr.ds", ""),
        complete=props.get("ebr.complete") == "1",
    )


def live(client: MilvusClient, alias: str) -> CollectionInfo | None:
    if alias not in client.list_aliases().get("aliases", []):
        return None
    return info(client, client.describe_alias(alias)["collection_name"])


def aliased(client: MilvusClient) -> set[str]:
    return {
        client.describe_alias(a)["collection_name"]
        for a in client.list_aliases().get("aliases", [])
    }


def point_alias(client: MilvusClient, alias: str, name: str) -> None:
    """One alter_alias: readers of the alias see the old collection or the new one, never none."""
    if alias in client.list_aliases().get("aliases", []):
        client.alter_alias(name, alias)
    else:
        client.create_alias(name, alias)


def remove_alias(client: MilvusClient, alias: str) -> None:
    """Services then get "no alias", as before the first promotion: better than a broken index."""
    client.drop_alias(alias)


def day_and_version(name: str) -> tuple[int, int]:
    """(yyyymmdd, model version) of a collection name of ours."""
    match = NAME.match(name)
    if match is None:
        raise ValueError(f"{name!r} is not a collection name of ours (items_YYYYMMDD_vN)")
    return int(match.group(1)), int(match.group(2))


def ours(client: MilvusClient) -> list[str]:
    return sorted(n for n in client.list_collections() if NAME.match(n))


def drop(client: MilvusClient, name: str, protected: set[str]) -> None:
    # drop_collection on an aliased collection silently drops its alias: never let that happen
    if name in protected:
        raise RuntimeError(f"refusing to drop {name}: it is live or the rollback target")
    client.drop_collection(name)


def ensure_loaded(client: MilvusClient, name_or_alias: str) -> dict:
    """Milvus Lite forgets which collections were loaded when its server restarts (every new
    process): load the one about to be searched. A no-op where the server keeps it loaded.
    Returns the collection's description."""
    desc = client.describe_collection(name_or_alias)
    if client.get_load_state(desc["collection_name"])["state"] != LoadState.Loaded:
        client.load_collection(desc["collection_name"])
    return desc


def search(
    client: MilvusClient,
    name_or_alias: str,
    vectors: np.ndarray,
    k: int,
    output_fields: list[str] | None = None,
    expr: str = "",
) -> list[list[dict]]:
    """Top-k hits per vector (item_id, distance, entity with output_fields)."""
    hits: list[list[dict]] = []
    for result in _searched(client, name_or_alias, vectors, k, output_fields or [], expr):
        hits.extend(result)
    return hits


def search_ids(
    client: MilvusClient, name_or_alias: str, vectors: np.ndarray, k: int
) -> list[list[str]]:
    """Top-k item ids per vector (the primary key), read batch by batch without building hit
    objects: pymilvus materialises each hit on first access, ~5 kB apiece, and a gate's
    requests x K hits held that way took the medium profile's gate to 8.3 GB (measured)."""
    ids: list[list[str]] = []
    for result in _searched(client, name_or_alias, vectors, k, [], ""):
        ids.extend(list(row.ids) for row in result)
    return ids


# HNSW finds inner-product neighbours poorly among vectors of unequal norms: on the medium bench
# (200k items) it found 0.55-0.63 of the exact top-100. So an item x is stored as
# [x, sqrt(B^2 - |x|^2)] (B bounds every item's norm) and a query q is searched as [q, 0]: the
# inner products, i.e. the scores, are unchanged, and all stored vectors have norm B, where inner
# product ranks as L2 and cosine do (Bachrach et al., RecSys 2014).


def item_side(vectors: np.ndarray, norm_bound: float) -> np.ndarray:
    """[x, sqrt(B^2 - |x|^2)] per item vector x, B = norm_bound."""
    squared = np.einsum("ij,ij->i", vectors, vectors, dtype=np.float64)
    if squared.size and squared.max() > norm_bound**2 * (1 + 1e-5):  # float rounding only
        raise ValueError(
            f"an item vector is {np.sqrt(squared.max()):.4f} long, over the collection's norm "
            f"bound {norm_bound:.4f}: the bound must hold for every item"
        )
    extra = np.sqrt(np.maximum(norm_bound**2 - squared, 0.0))
    return np.hstack([vectors, extra[:, None]]).astype(np.float32)


def query_side(vectors: np.ndarray) -> np.ndarray:
    """[q, 0] per query vector q: its inner product with a stored item is q . x."""
    return np.hstack([vectors, np.zeros((len(vectors), 1), dtype=vectors.dtype)])


def _searched(
    client: MilvusClient,
    name_or_alias: str,
    vectors: np.ndarray,
    k: int,
    output_fields: list[str],
    expr: str,
) -> Iterator:
    """One search call per SEARCH_BATCH query vectors, as each batch's result."""
    fields = ensure_loaded(client, name_or_alias)["fields"]
    width = next(f["params"]["dim"] for f in fields if f["name"] == "embedding")
    # A collection built before items were stored one wider holds x itself: it is searched with q.
    wider = width == vectors.shape[1] + 1
    for start in range(0, len(vectors), SEARCH_BATCH):
        batch = vectors[start : start + SEARCH_BATCH]
        yield client.search(
            name_or_alias,
            data=(query_side(batch) if wider else batch).tolist(),
            limit=k,
            anns_field="embedding",
            filter=expr,
            output_fields=output_fields,
            search_params={"metric_type": "IP", "params": {"ef": ef(k)}},
        )


def ef(k: int) -> int:
    """HNSW's search breadth for k hits (Milvus allows up to 32768)."""
    return min(max(EF_PER_K * k, 64), 32768)


def incomplete(client: MilvusClient) -> list[str]:
    """Our collections without the complete mark: built by a run that died (or is still running,
    see created_at) before finish()."""
    return [name for name in ours(client) if not info(client, name).complete]


def created_at(client: MilvusClient, name: str) -> float | None:
    """Unix time at which a Milvus server created the collection (its hybrid timestamp's physical
    part, in ms above the 18 logical bits); None where the server does not say (Milvus Lite)."""
    stamp = client.describe_collection(name).get("created_timestamp")
    return (int(stamp) >> 18) / 1000 if stamp else None
