import json
import logging

import numpy as np
import pytest

from indexing import store
from indexing.promote import GateRefused, clean, history, promote


def _build(client, ds, version, dim=8, n=50, seed=0, complete=True):
    name = store.collection_name(ds, version)
    store.create(client, name, dim)
    rows = {
        "item_id": [f"i{k}" for k in range(n)],
        "title": [f"title {k}" for k in range(n)],
        "leaf_category": ["leaf"] * n,
        "top_category": ["top"] * n,
        "brand": ["b"] * n,
        "shop": ["s"] * n,
        "price": [1.0] * n,
    }
    vectors = np.random.default_rng(seed).normal(size=(n, dim)).astype("float32")
    vectors /= np.linalg.norm(
        vectors, axis=1, keepdims=True
    )  # unit vectors: each is its own best IP match
    store.insert(client, name, rows, vectors, norm_bound=1.0)
    if complete:
        store.finish(client, name, version, ds)
    return name, vectors


def _report(ds, name, passed=True):
    return {
        "ds": ds,
        "candidate_collection": name,
        "passed": passed,
        "reasons": [] if passed else ["bad"],
        "gate_k": 50,
        "candidate_recall": {"50": 0.5},
        "live_recall": None,
    }


def test_alias_moves_atomically_and_records_the_model_version(settings):
    with store.connect(settings) as client:
        a, va = _build(client, "2026-01-01", 1)
        b, _ = _build(client, "2026-01-02", 2, seed=1)
        assert store.live(client, settings.alias) is None
    promote(_report("2026-01-01", a), settings, run_id="r1")
    with store.connect(settings) as client:
        live = store.live(client, settings.alias)
        assert (live.name, live.model_version, live.ds, live.complete) == (a, 1, "2026-01-01", True)
        # the alias serves searches; an item's own vector finds it first
        hits = store.search(client, settings.alias, va[:3], k=1)
        assert [h[0]["item_id"] for h in hits] == ["i0", "i1", "i2"]
        # The gate's id-only search ranks exactly as the full one, over several search calls.
        many = np.repeat(va, 11, axis=0)  # 550 vectors: two calls of store.SEARCH_BATCH
        full = store.search(client, settings.alias, many, k=5)
        assert store.search_ids(client, settings.alias, many, k=5) == [
            [h["item_id"] for h in row] for row in full
        ]
        assert len(full) == 550 and all(len(row) == 5 for row in full)
    promote(_report("2026-01-02", b), settings, run_id="r2")
    with store.connect(settings) as client:
        assert store.live(client, settings.alias).name == b
    log = history(settings)
    assert [e["collection"] for e in log] == [a, b] and log[1]["previous_collection"] == a


def test_a_refused_or_incomplete_candidate_never_moves_the_alias(settings):
    with store.connect(settings) as client:
        a, _ = _build(client, "2026-01-01", 1)
        b, _ = _build(client, "2026-01-02", 2)
        c, _ = _build(client, "2026-01-03", 3, complete=False)
    promote(_report("2026-01-01", a), settings, run_id="r1")
    with pytest.raises(GateRefused, match="unchanged"):
        promote(_report("2026-01-02", b, passed=False), settings, run_id="r2")
    with pytest.raises(GateRefused, match="not a complete collection"):
        promote(_report("2026-01-03", c), settings, run_id="r3")
    with store.connect(settings) as client:
        assert store.live(client, settings.alias).name == a
        assert client.has_collection(b)  # kept for inspection


def test_clean_keeps_retention_and_never_drops_live_or_previous(settings):
    settings = settings.__class__(**{**settings.__dict__, "retention": 1})
    with store.connect(settings) as client:
        names = [_build(client, f"2026-01-0{d}", d)[0] for d in range(1, 6)]
    for v in (1, 2):
        (settings.models / f"v{v}").mkdir(parents=True)
    promote(_report("2026-01-01", names[0]), settings, run_id="r1")
    promote(_report("2026-01-02", names[1]), settings, run_id="r2")
    dropped = clean(settings)
    # live (v2), previous (v1) and the newest candidate (v5) stay
    assert sorted(dropped) == sorted(names[2:4])
    with store.connect(settings) as client:
        assert store.ours(client) == sorted([names[0], names[1], names[4]])
        with pytest.raises(RuntimeError, match="refusing to drop"):
            store.drop(client, names[1], store.aliased(client))
        assert store.live(client, settings.alias).name == names[1]
    assert (settings.models / "v1").exists() and (settings.models / "v2").exists()
    assert (
        json.loads((settings.reports / "promotions.jsonl").read_text().splitlines()[0])["run_id"]
        == "r1"
    )


def test_a_new_process_can_search_what_an_earlier_one_built(settings):
    from milvus_lite.server_manager import server_manager_instance

    with store.connect(settings) as client:
        name, vectors = _build(client, "2026-01-01", 1)
        store.point_alias(client, settings.alias, name)
    # what a new process sees: a fresh Lite server over the same file, nothing loaded
    server_manager_instance.release_server(settings.milvus_uri)
    with store.connect(settings) as client:
        hits = store.search(client, settings.alias, vectors[:2], k=1)
    assert [h[0]["item_id"] for h in hits] == ["i0", "i1"]


def test_an_older_day_is_kept_but_not_promoted_unless_asked(settings):
    with store.connect(settings) as client:
        old, _ = _build(client, "2026-01-01", 1)
        new, _ = _build(client, "2026-01-02", 2)
    promote(_report("2026-01-02", new), settings, run_id="r1")
    assert promote(_report("2026-01-01", old), settings, run_id="backfill") is None
    with store.connect(settings) as client:
        assert store.live(client, settings.alias).name == new
    assert (
        promote(_report("2026-01-01", old), settings, run_id="asked", allow_older=True)[
            "collection"
        ]
        == old
    )


def test_items_are_stored_one_wider_on_a_sphere_and_scores_stay_inner_products(settings):
    """Vectors of unequal norms: stored as [x, sqrt(B^2 - |x|^2)], searched as [q, 0], the hits
    are the exact inner-product top-k with q . x as their scores (60 items: ef 64 sees them all)."""
    rng = np.random.default_rng(3)
    items = rng.normal(size=(60, 8)).astype("float32") * rng.uniform(0.1, 3, size=(60, 1))
    queries = rng.normal(size=(20, 8)).astype("float32")
    bound = float(np.linalg.norm(items, axis=1).max()) * 1.5
    stored = store.item_side(items, bound)
    assert stored.shape == (60, 9)
    np.testing.assert_allclose(np.linalg.norm(stored, axis=1), bound, rtol=1e-5)
    np.testing.assert_allclose(stored @ store.query_side(queries).T, items @ queries.T, atol=1e-4)
    with pytest.raises(ValueError, match=r"over the collection's norm bound 1\.0000"):
        store.item_side(items, 1.0)

    name = store.collection_name("2026-01-01", 1)
    rows = {
        "item_id": [f"i{k}" for k in range(60)],
        "price": [1.0] * 60,
        **{f: ["x"] * 60 for f in store.SCALAR_FIELDS},
    }
    with store.connect(settings) as client:
        store.create(client, name, 8)
        store.insert(client, name, rows, items, bound)
        store.finish(client, name, 1, "2026-01-01")
        hits = store.search(client, name, queries, k=5)
    exact = np.argsort(-(queries @ items.T), axis=1)[:, :5]
    assert [[h["item_id"] for h in row] for row in hits] == [
        [f"i{j}" for j in row] for row in exact
    ]
    np.testing.assert_allclose(
        [[h["distance"] for h in row] for row in hits],
        np.take_along_axis(queries @ items.T, exact, axis=1),
        rtol=1e-4,
    )

    # A collection of the layout before (x stored as it is: 8 wide for 8-wide queries) still serves.
    old = store.collection_name("2026-01-01", 2)
    with store.connect(settings) as client:
        store.create(client, old, 7)  # an embedding field 8 wide
        client.insert(
            old,
            [
                {**{f: v[k] for f, v in rows.items()}, "embedding": x.tolist()}
                for k, x in enumerate(items)
            ],
        )
        store.finish(client, old, 2, "2026-01-01")
        assert store.search_ids(client, old, queries, k=5) == [
            [f"i{j}" for j in row] for row in exact
        ]


def test_building_an_index_on_milvus_lite_logs_no_error(settings, caplog):
    """pymilvus waits for an index by asking for a timestamp, which Milvus Lite's gRPC adapter
    does not implement: pymilvus carries on without one, but the adapter's server logged each ask
    as an ERROR with a traceback, in every build's log."""
    with caplog.at_level("INFO"), store.connect(settings) as client:
        _build(client, "2026-01-01", 1)
        assert store.info(client, store.collection_name("2026-01-01", 1)).complete
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == []

    def Search():  # any other method the adapter lacks is still an error worth seeing
        raise NotImplementedError("Method not implemented!")

    try:
        Search()
    except NotImplementedError:
        logging.getLogger("grpc._server").exception("Exception calling application")
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == [
        "Exception calling application"
    ]
