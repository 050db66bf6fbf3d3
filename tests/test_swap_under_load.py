"""Zero-downtime swaps, as services share Milvus Lite (docs/serving.md): one standalone Milvus Lite
server process owns the data; the pipeline and a reader service are separate processes that reach
it through EBR_MILVUS_URI. While the reader queries the alias continuously through
ebr.client.RetrievalClient, the pipeline runs ten days of build -> gate -> promote -> clean, then
a rollback and a clean (which drops the collection that served a moment before, and its model)."""

import json
import os
import random
import socket
import subprocess
import sys
import time
from dataclasses import replace
from datetime import datetime
from itertools import pairwise
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
import torch

from ebr import stages
from ebr.client import BEHAVIOUR_COLUMNS, RetrievalClient
from ebr.query_encoder import QueryEncoder
from ebr.settings import ModelConfig
from indexing import store
from training.train import train

REPO = Path(__file__).resolve().parent.parent
DAYS = [f"2026-01-{d:02d}" for d in range(1, 12)]  # day i is indexed by model v<i+1>
WORDS = [f"w{k}" for k in range(60)]
ITEMS = [f"i{k}" for k in range(40)]
TITLES = {i: random.Random(i).sample(WORDS, 3) for i in ITEMS}
NO_HISTORY = {c: [] for c in BEHAVIOUR_COLUMNS}
# Short behaviour sequences keep one query's encoding at ~10 ms on a shared 2-core machine: what is
# measured here is the swap, not the encoder.
CFG = ModelConfig(
    dim=8,
    heads=2,
    rt_len=5,
    st_len=5,
    lt_len=5,
    past_queries=2,
    batch_size=40,
    sampled_negatives=8,
    hard_negatives=2,
    epochs=1,
    validation_share=0.0,
)
# The reader's pace: back to back it manages ~35 here on an idle machine. What it reached is a
# figure of the machine (recorded, and printed under `make reliability`'s table), not a verdict:
# 17-30 queries/s were seen here, depending on what else ran on the 2 cores.
TARGET_QPS = 30
DWELL_S = 1.0  # the alias rests at least this long on each collection, so every state is queried

# The reader service: its own process and RetrievalClient, settings from the environment like any
# service. Each query is one JSON line; the version of the artifact that encoded it is taken from
# the encoder call itself, not from what the client reports.
READER = """
import json, sys, time
from pathlib import Path
import torch
from ebr.client import RetrievalClient
from ebr.settings import load_settings
from ebr.query_encoder import QueryEncoder

torch.set_num_threads(1)  # one query at a time: more threads only contend for the 2 cores
out, stop, period = Path(sys.argv[1]), Path(sys.argv[2]), 1 / float(sys.argv[3])
hold, held = Path(sys.argv[4]), Path(sys.argv[5])
encoded_by = []
encode = QueryEncoder.encode
def spy(self, *args, **kwargs):
    # While `hold` exists, a query that has resolved the alias and loaded its model waits here,
    # before it searches: the test moves the alias under it at a moment it chooses.
    if hold.exists() and not encoded_by:
        held.touch()
        while hold.exists():
            time.sleep(0.005)
    encoded_by.append(self.version)
    return encode(self, *args, **kwargs)
QueryEncoder.encode = spy

client = RetrievalClient(load_settings())
n, due = 0, time.monotonic()
with out.open("w") as f:
    while not stop.exists():
        encoded_by.clear()
        start = time.time()
        try:
            served = client.search(f"w{n % 60} w{(7 * n) % 60}", k=5)
            row = {"ok": True, "results": len(served["results"]), "collection": served["collection"],
                   "collection_version": served["model_version"], "encoder_version": encoded_by[-1],
                   "shops": sorted({hit["shop"] for hit in served["results"]})}
        except Exception as e:
            row = {"ok": False, "error": f"{type(e).__name__}: {e}"[:1000]}
        f.write(json.dumps({**row, "start": start, "end": time.time(), "encodes": len(encoded_by)}) + "\\n")
        f.flush()
        n += 1
        due = max(due + period, time.monotonic())
        time.sleep(max(0.0, due - time.monotonic()))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def lite_server(tmp_path):
    """`milvus-lite server` on a free port over a fresh data dir, until the test ends."""
    port = _free_port()
    command = [
        str(Path(sys.executable).parent / "milvus-lite"),
        "server",
        "--data-dir",
        str(tmp_path / "milvus"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    with (tmp_path / "milvus-lite.log").open("w") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(
                        f"the server did not start:\n{(tmp_path / 'milvus-lite.log').read_text()}"
                    )
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(30)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The pipeline shares the 2 cores with the server and the reader: torch threads only contend."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def models():
    """Three different models (seeds), cheaply trained (one step): the gate and canary here bless
    any model, these tests are about the swap."""
    examples = pa.Table.from_pylist(
        [
            {"user_id": "u", "item_id": i, "query": " ".join(TITLES[i][:2]), **NO_HISTORY}
            for i in ITEMS
        ]
    )
    corpus = pa.table({"item_id": ITEMS, "title": [" ".join(TITLES[i]) for i in ITEMS]})
    return [train(examples, corpus, CFG, seed=seed) for seed in range(3)]


def _prepare(settings, models, exported, milvus_uri: str):
    """Settings on milvus_uri, a warehouse of 11 days (each day's shop field names its day, so a
    hit tells which collection served it), v1..v11 saved (neighbours from different models), and
    a gate and canary that bless any model."""
    settings = replace(
        settings,
        milvus_uri=milvus_uri,
        recall_ks=(5,),
        gate_k=5,
        recall_floor=0.0,
        regression_margin=1.0,
        canary_requests=20,
        canary_margin=0.05,
        retention=0,
        model=CFG,
    )
    corpus = pa.table(
        {
            "item_id": ITEMS,
            "title": [" ".join(TITLES[i]) for i in ITEMS],
            "leaf_category": ["leaf"] * 40,
            "top_category": ["top"] * 40,
            "brand": ["b"] * 40,
            "price": [1.0] * 40,
        }
    )
    evals = pa.Table.from_pylist(
        [
            {
                "request_id": f"e{k:03d}",
                "user_id": f"u{k % 20}",
                "request_time": datetime(2026, 1, 1, 21),
                "query": " ".join(TITLES[item][:2]),
                "clicked_items": [item],
                "purchased_items": [],
                **NO_HISTORY,
            }
            for k, item in enumerate(ITEMS)
        ]
    )
    con = duckdb.connect(str(settings.warehouse))
    con.register("corpus", corpus)
    con.register("evals", evals)
    days = "(values " + ", ".join(f"(date '{d}')" for d in DAYS) + ") as d(ds)"
    con.execute(
        f"create table mart_item_corpus as select d.ds, c.*, 'shop-' || d.ds as shop "
        f"from corpus c cross join {days}"
    )
    con.execute(
        f"create table mart_eval_examples as select d.ds, e.* from evals e cross join {days}"
    )
    con.close()
    for version, ds in enumerate(DAYS, start=1):
        exported.save(models[version % 3], settings.models, version, ds)
    return settings


@pytest.fixture
def pipeline(settings, models, exported, lite_server):
    return _prepare(settings, models, exported, lite_server)


@pytest.fixture
def local(settings, models, exported):
    """The same on an in-process Milvus Lite (.db), for the single-process cases."""
    yield _prepare(settings, models, exported, settings.milvus_uri)
    from milvus_lite.server_manager import server_manager_instance

    server_manager_instance.release_server(settings.milvus_uri)


def _day(settings, day: int) -> str:
    """The daily DAG's index half for DAYS[day]: build, gate, promote (with its canary), clean."""
    ds, version = DAYS[day], day + 1
    stages.build_index(ds, version, settings)
    assert stages.gate(ds, version, settings)["passed"]
    entry = stages.promote(ds, settings, run_id=f"daily__{ds}")
    assert entry["canary"]["passed"]
    stages.clean(settings)
    return entry["collection"]


def _hold(tmp_path) -> tuple[Path, Path]:
    """The reader's handshake files: the test creates the first, the reader answers with the
    second once a query waits on it (see READER)."""
    return tmp_path / "hold", tmp_path / "held"


def _start_reader(settings, tmp_path) -> tuple[subprocess.Popen, Path, Path, Path]:
    out, stop, log = tmp_path / "queries.jsonl", tmp_path / "stop", tmp_path / "reader.log"
    env = {
        **os.environ,
        "EBR_HOME": str(settings.home),
        "EBR_MILVUS_URI": settings.milvus_uri,
        "EBR_ALIAS": settings.alias,
    }
    with log.open("w") as sink:
        reader = subprocess.Popen(
            [sys.executable, "-c", READER, *map(str, (out, stop, TARGET_QPS, *_hold(tmp_path)))],
            cwd=REPO,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 120
    while not (out.exists() and out.read_text().strip()):  # started: torch imported, one query done
        if reader.poll() is not None or time.monotonic() > deadline:
            reader.kill()
            reader.wait(30)
            pytest.fail(f"the reader never answered a query:\n{log.read_text()[-4000:]}")
        time.sleep(0.1)
    return reader, out, stop, log


@pytest.mark.slow
@pytest.mark.reliability
def test_ten_promotions_and_a_rollback_under_load_fail_no_query(
    pipeline, tmp_path, record_property
):
    settings = pipeline
    served = [_day(settings, 0)]  # the collections the alias rests on, in order
    reader, out, stop, log = _start_reader(settings, tmp_path)
    swaps = []  # (start, end) of every stage call that moves the alias
    try:
        time.sleep(DWELL_S)
        began = time.time()
        for day in range(1, 11):
            start = time.time()
            served.append(_day(settings, day))
            swaps.append((start, time.time()))
            time.sleep(DWELL_S)
        # The rollback and clean take ~20 ms, less than the reader's pause between queries, so
        # one query is held where the race is (alias resolved, model loaded, not yet searched)
        # while the alias moves back and clean drops the collection and model it resolved.
        hold, held = _hold(tmp_path)
        hold.touch()
        deadline = time.monotonic() + 60
        while not held.exists():
            assert reader.poll() is None and time.monotonic() < deadline, "no query was held"
            time.sleep(0.005)
        start = time.time()
        entry = stages.rollback(
            settings, run_id="manual__load", user="ops", reason="swap under load"
        )
        stages.clean(settings)  # drops the collection the alias just left, and its model
        swaps.append((start, time.time()))
        hold.unlink()
        served.append(entry["collection"])
        time.sleep(DWELL_S)
        ended = time.time()
    finally:
        stop.touch()
        try:
            reader.wait(60)
        except subprocess.TimeoutExpired:
            reader.kill()
            reader.wait(30)
    assert reader.returncode == 0, log.read_text()[-4000:]

    queries = [json.loads(line) for line in out.read_text().splitlines()]
    window = [q for q in queries if began <= q["start"] <= ended]
    failed = [q for q in queries if not q["ok"]]
    answered = [q for q in queries if q["ok"]]
    empty = [q for q in answered if q["results"] == 0]
    # Three witnesses must agree on each answer: the version recorded on the collection searched,
    # the version of the artifact that encoded the query, and the day (shop) of every hit.
    version_of_day = {f"shop-{ds}": version for version, ds in enumerate(DAYS, start=1)}
    mismatched = [
        q
        for q in answered
        if not q["encoder_version"]
        == q["collection_version"]
        == int(q["collection"].rsplit("_v", 1)[1])
        or {version_of_day[s] for s in q["shops"]} != {q["encoder_version"]}
    ]
    seconds = ended - began
    qps = len(window) / seconds
    gaps = [b["start"] - a["end"] for a, b in pairwise(queries)]
    for name, value in [
        ("queries_served", len(answered)),
        ("failed_queries", len(failed)),
        ("empty_results", len(empty)),
        ("version_mismatches", len(mismatched)),
        ("queries_per_second", round(qps, 1)),
        ("load_seconds", round(seconds, 1)),
        ("swaps", len(swaps)),
        ("retried_queries", sum(q["encodes"] > 1 for q in answered)),
        ("max_query_gap_seconds", round(max(gaps), 3)),
        ("max_query_seconds", round(max(q["end"] - q["start"] for q in queries), 3)),
    ]:
        record_property(name, value)

    assert failed == [] and empty == [] and mismatched == []
    # Every swap had queries in flight around it, and the reader saw each collection the alias
    # rested on, in order: no state was skipped, none came back out of turn. The query held across
    # the rollback found its collection gone, resolved the alias again and was served by day 10.
    (start, end) = swaps[-1]
    [across] = [q for q in answered if q["start"] < start and q["end"] > end]
    assert (across["encodes"], across["collection"]) == (2, served[-1]), across
    for k, (start, end) in enumerate(swaps):
        around = [round(q[t] - start, 3) for q in window for t in ("start", "end")]
        assert any(q["start"] < end and q["end"] > start for q in window), (
            f"no query in flight across swap {k + 1} ({end - start:.3f} s); the nearest query "
            f"edges, s from its start: {sorted(around, key=abs)[:4]}"
        )
    seen = [q["collection"] for q in answered]
    assert [c for k, c in enumerate(seen) if k == 0 or c != seen[k - 1]] == served
    with store.connect(settings) as client:
        assert store.live(client, settings.alias).name == served[-1] == served[-3]  # day 10 again


def _shops(served: dict) -> set[str]:
    return {hit["shop"] for hit in served["results"]}


@pytest.mark.reliability
@pytest.mark.parametrize("gone", ["collection", "model"])
def test_a_request_whose_collection_is_cleaned_away_midway_resolves_the_alias_again(
    local, monkeypatch, gone
):
    """The race the load test holds one query in (collection gone), here for both things clean()
    takes away: a request resolves the alias, then a rollback moves it and clean() drops the
    collection just left, and its model, before the request searches that collection (or loads
    that model). The request resolves again and the restored one answers."""
    settings = local
    first, second = _day(settings, 0), _day(settings, 1)
    raced, encoded_by = [], []
    live, search, encode = store.live, store.search, QueryEncoder.encode

    def race():
        if not raced:  # once: rollback and clean call store.live themselves
            raced.append(True)
            stages.rollback(settings, run_id="manual__race", user="ops", reason="race")
            assert stages.clean(settings) == [second] and not (settings.models / "v2").exists()

    def live_then_race(*args, **kwargs):  # resolved to v2; then the encoder finds no model
        current = live(*args, **kwargs)
        race()
        return current

    def race_then_search(*args, **kwargs):  # resolved and encoded with v2; then no collection
        race()
        return search(*args, **kwargs)

    def spy(self, *args, **kwargs):
        encoded_by.append(self.version)
        return encode(self, *args, **kwargs)

    if gone == "model":
        monkeypatch.setattr(store, "live", live_then_race)
    else:
        monkeypatch.setattr(store, "search", race_then_search)
    monkeypatch.setattr(QueryEncoder, "encode", spy)

    served = RetrievalClient(settings).search("w1 w2", k=5)
    assert raced and (served["collection"], served["model_version"]) == (first, 1)
    assert len(served["results"]) == 5 and _shops(served) == {f"shop-{DAYS[0]}"}
    assert encoded_by == ([1] if gone == "model" else [2, 1])


@pytest.mark.reliability
def test_a_model_folder_holding_another_version_is_refused(local):
    settings = local
    _day(settings, 0)
    meta = settings.models / "v1" / "meta.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "version": 3}))
    with pytest.raises(
        RuntimeError, match="holds model v3, not the v1 that built items_20260101_v1"
    ):
        RetrievalClient(settings).search("w1 w2", k=5)
