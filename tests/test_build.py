"""Building a day's collection: the corpus is encoded to a file first, then inserted; each item
keeps its own vector across batches that do not line up, and a model that fails to encode leaves
nothing in Milvus."""

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from ebr.client import BEHAVIOUR_COLUMNS
from ebr.settings import ModelConfig
from indexing import build, store
from training.artifact import Artifact
from training.train import train

DS = "2026-01-01"
ITEMS = [f"i{k:02d}" for k in range(23)]
CORPUS = pa.table(
    {
        "item_id": ITEMS,
        "title": [f"{('red', 'blue', 'green')[k % 3]} shoe model{k}" for k in range(23)],
        "leaf_category": ["sneakers"] * 23,
        "top_category": ["shoes"] * 23,
        "brand": ["acme"] * 23,
        "shop": ["s"] * 23,
        "price": [float(k) for k in range(23)],
    }
)


@pytest.fixture(scope="module")
def model():
    examples = pa.table(
        {"user_id": ["u"] * 23, "query": ["shoe"] * 23, "item_id": ITEMS}
        | {c: [[] for _ in ITEMS] for c in BEHAVIOUR_COLUMNS}
    )
    cfg = ModelConfig(
        dim=8,
        heads=2,
        batch_size=8,
        sampled_negatives=4,
        hard_negatives=1,
        epochs=1,
        validation_share=0.0,
    )
    return train(examples, CORPUS.select(["item_id", "title"]), cfg, seed=1)


@pytest.fixture
def world(settings):
    con = duckdb.connect(str(settings.warehouse))
    con.register("corpus", CORPUS)
    con.execute(f"create table mart_item_corpus as select date '{DS}' as ds, * from corpus")
    con.close()
    return settings


def test_every_item_is_stored_with_its_own_vector_across_batches(
    world, model, exported, monkeypatch
):
    # encoded 5 rows at a time, inserted 3 at a time: the spill file's reads cross encode batches
    # (vectors of a batch of 5 differ from the whole corpus's in the last float bit)
    monkeypatch.setattr(build, "ENCODE_BATCH", 5)
    monkeypatch.setattr(build, "INSERT_BATCH", 3)
    saved = exported.save(model, world.models, 1, DS)
    name = build.build_collection(DS, saved, world)

    expected = store.item_side(model.encode_items(CORPUS), model.model.item_norm_bound())
    with store.connect(world) as client:
        rows = client.query(name, filter='item_id != ""', output_fields=["item_id", "embedding"])
        assert store.info(client, name).complete
    assert sorted(r["item_id"] for r in rows) == ITEMS
    for row in rows:
        np.testing.assert_allclose(
            row["embedding"], expected[ITEMS.index(row["item_id"])], rtol=1e-5, atol=1e-6
        )


def test_a_model_that_fails_to_encode_leaves_no_collection(world, model, exported, monkeypatch):
    monkeypatch.setattr(build, "ENCODE_BATCH", 5)
    real = Artifact.encode_items
    calls = []

    def encode_items(self, table, *args, **kwargs):
        calls.append(table.num_rows)
        if len(calls) == 3:
            raise RuntimeError("out of memory")
        return real(self, table, *args, **kwargs)

    monkeypatch.setattr(Artifact, "encode_items", encode_items)
    saved = exported.save(model, world.models, 1, DS)
    with pytest.raises(RuntimeError, match="out of memory"):
        build.build_collection(DS, saved, world)
    assert calls == [5, 5, 5]
    with store.connect(world) as client:
        assert client.list_collections() == []
