"""The downstream client: relevance-control filters on a real Milvus Lite collection, caller text
kept as data, caller-passed features, and a reload when the alias moves."""

import json
import subprocess
import sys

import duckdb
import pyarrow as pa
import pytest
from lite_server import release

from ebr.client import BEHAVIOUR_COLUMNS, Filters, RetrievalClient
from ebr.settings import ModelConfig
from indexing import store
from indexing.build import build_collection
from training.train import train

DS = "2026-01-01"
ITEMS = [f"i{k}" for k in range(30)]
CORPUS = pa.table(
    {
        "item_id": ITEMS,
        "title": [f"red shoe model{k}" for k in range(30)],
        "leaf_category": ["sneakers" if k % 2 else "boots" for k in range(30)],
        "top_category": ["shoes"] * 30,
        "brand": ['acme "pro"' if k % 3 == 0 else "zed" for k in range(30)],
        "shop": ["s"] * 30,
        "price": [float(k) for k in range(30)],
    }
)
CFG = ModelConfig(
    dim=8,
    heads=2,
    batch_size=16,
    sampled_negatives=8,
    hard_negatives=2,
    epochs=1,
    validation_share=0.0,
)


@pytest.fixture(scope="module")
def models():
    examples = pa.table(
        {
            "user_id": ["u"] * 30,
            "query": ["red shoe"] * 30,
            "item_id": ITEMS,
            **{c: [[] for _ in ITEMS] for c in BEHAVIOUR_COLUMNS},
        }
    )
    return [train(examples, CORPUS.select(["item_id", "title"]), CFG, seed=v) for v in (1, 2)]


@pytest.fixture
def served(settings, models, exported):
    con = duckdb.connect(str(settings.warehouse))
    con.register("corpus", CORPUS)
    con.execute(f"create table mart_item_corpus as select date '{DS}' as ds, * from corpus")
    con.close()
    for version, artifact in enumerate(models, start=1):
        build_collection(DS, exported.save(artifact, settings.models, version, DS), settings)
    with store.connect(settings) as client:
        store.point_alias(client, settings.alias, store.collection_name(DS, 1))
    return settings


def _ids(result) -> set[str]:
    return {h["item_id"] for h in result["results"]}


def test_filters_restrict_results_and_reload_follows_the_alias(served):
    client = RetrievalClient(served)
    everything = client.search("red shoe", k=30)
    assert everything["model_version"] == 1 and _ids(everything) == set(ITEMS)

    boots = client.search("red shoe", k=30, filters=Filters(category="boots"))
    assert _ids(boots) == {i for k, i in enumerate(ITEMS) if k % 2 == 0}
    quoted = client.search(
        "red shoe", k=30, filters=Filters(brand='acme "pro"', price_min=3, price_max=12.5)
    )
    assert _ids(quoted) == {"i3", "i6", "i9", "i12"}  # brand with quotes matched as text
    assert _ids(client.search("red shoe", k=30, filters=Filters(category="shoes"))) == set(ITEMS)

    with store.connect(served) as milvus:
        store.point_alias(milvus, served.alias, store.collection_name(DS, 2))
    moved = client.search("red shoe", k=5)
    assert moved["model_version"] == 2 and moved["collection"].endswith("_v2")


@pytest.mark.reliability
@pytest.mark.parametrize("injection", ['zed" or brand != "', "zed' or 1==1", 'x") or (price >= 0'])
def test_filter_text_is_data_not_expression(served, injection):
    result = RetrievalClient(served).search("red shoe", k=30, filters=Filters(brand=injection))
    assert result["results"] == []  # no brand has that name: nothing leaks through


@pytest.mark.reliability
@pytest.mark.parametrize(
    "filters, message",
    [
        (Filters(brand="a\x00b"), "control"),
        (Filters(category=" "), "non-blank"),
        (Filters(brand="x" * 201), "at most"),
        (Filters(price_min=-1), "price_min"),
        (Filters(price_max=float("nan")), "price_max"),
        (Filters(price_min=5, price_max=1), "above"),
    ],
)
def test_bad_filters_are_refused_before_milvus(filters, message):
    with pytest.raises(ValueError, match=message):
        filters.expression()


def test_caller_features_replace_the_warehouse_lookup(served):
    client = RetrievalClient(served)
    own = client.search("red shoe", user_id="nobody", k=3, features={"rt_items": ["i4", "i5"]})
    assert len(own["results"]) == 3
    with pytest.raises(ValueError, match="unknown feature"):
        client.search("red shoe", k=3, features={"rt_itemz": []})
    with pytest.raises(ValueError, match="k must be"):
        client.search("red shoe", k=0)


def test_a_locked_warehouse_serves_without_personalisation(served, caplog):
    """While another process writes the warehouse (the day's dbt run), DuckDB refuses readers:
    the search is answered without the user's behaviour instead of failing."""
    import subprocess
    import sys

    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time; "
            f"con = duckdb.connect({str(served.warehouse)!r}); "
            "print('locked', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        result = RetrievalClient(served).search("red shoe", user_id="u1", k=3)
    finally:
        holder.kill()
        holder.wait()
    assert len(result["results"]) == 3
    assert "user features unavailable" in caplog.text


# A service process that cannot import the model code: what it needs of a model version is the
# exported query encoder beside the artifact (ebr/query_encoder.py).
SERVICE = """
import json, sys
for name in ("training.model", "training.train", "training.artifact", "training.export",
             "training.optim", "indexing.build"):
    sys.modules[name] = None  # any import of them now raises ImportError
from ebr.client import RetrievalClient
from ebr.settings import load_settings
print(json.dumps(RetrievalClient(load_settings()).search("red shoe", k=5)))
"""


def test_a_service_searches_without_the_model_code(served):
    local = RetrievalClient(served).search("red shoe", k=5)
    release(served)  # the service process opens the Milvus Lite file
    done = subprocess.run(
        [sys.executable, "-c", SERVICE], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    remote = json.loads(done.stdout.strip().splitlines()[-1])
    assert remote["model_version"] == local["model_version"] == 1
    assert [h["item_id"] for h in remote["results"]] == [h["item_id"] for h in local["results"]]
    assert (served.models / "v1" / "query_encoder.pt2").is_file()
