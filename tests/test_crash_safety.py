"""Crash safety: a real stage in a real child process, SIGKILLed in the middle of its work, leaves
the alias on a complete collection; the debris is found and removed and a rerun converges.

The child runs the stage function unchanged; only the function at the kill point is wrapped (in
the child alone) to write a marker file and sleep, so the parent knows it is mid-stage and kills it
there. Milvus Lite runs inside the process that opens the .db (an flock allows one at a time):
the parent releases its own Lite server before starting a child, and after the kill opens the
file again, which also shows that a SIGKILLed holder leaves no stale lock.
"""

import logging
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
import torch
from lite_server import release
from test_store import _build, _report

from ebr import stages
from ebr.settings import ModelConfig
from indexing import store
from indexing.gate import evaluate, read_eval
from indexing.promote import (
    GateRefused,
    clean,
    history,
    promote,
    remove_debris,
)
from training import artifact as artifacts
from training.artifact import debris, latest_version, load_artifact, load_meta
from training.features import LT_COLUMNS
from training.train import train

pytestmark = pytest.mark.reliability
REPO = Path(__file__).resolve().parent.parent
DAYS = ["2026-01-01", "2026-01-02"]
WORDS = [f"w{k}" for k in range(60)]
ITEMS = [f"i{k}" for k in range(40)]
TITLES = {i: random.Random(i).sample(WORDS, 3) for i in ITEMS}
NO_HISTORY = {"rt_items": [], "st_items": [], "past_queries": [], **{c: [] for c in LT_COLUMNS}}
CFG = ModelConfig(
    dim=16,
    heads=2,
    batch_size=64,
    sampled_negatives=32,
    hard_negatives=4,
    epochs=3,
    validation_share=0.0,
)
LIVE, CANDIDATE = "items_20260101_v1", "items_20260102_v2"

# Runs in the child before the stage: the test's settings, and stall(), the kill point.
PRELUDE = """
import os, time
from pathlib import Path, PosixPath
from ebr.settings import ModelConfig, Settings
from ebr import stages
import torch
torch.set_num_threads(1)
settings = eval(os.environ["CRASH_SETTINGS"])

def stall():
    Path(os.environ["CRASH_MARKER"]).write_text(str(os.getpid()))
    time.sleep(300)  # the parent SIGKILLs us here
"""


def _examples(n: int, seed: int) -> list[dict]:
    rnd = random.Random(seed)
    rows = []
    for r in range(n):
        item = rnd.choice(ITEMS)
        rows.append(
            {
                "user_id": f"u{r % 20}",
                "item_id": item,
                **NO_HISTORY,
                "query": " ".join(rnd.sample(TITLES[item], rnd.randint(1, 3))),
            }
        )
    return rows


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """These models are tiny: on a busy 2-core machine torch's intra-op threads only contend
    (training here measured 10x slower with 2 threads than with 1)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model():
    """A tiny model that finds an item from 1-3 of its title words (as in test_operations)."""
    corpus = pa.table({"item_id": ITEMS, "title": [" ".join(TITLES[i]) for i in ITEMS]})
    return train(pa.Table.from_pylist(_examples(600, 0)), corpus, CFG, seed=0)


@pytest.fixture
def world(settings, model, exported):
    """Day 1 served by v1 (built, promoted, logged); the warehouse holds both days' corpus,
    held-out requests and (small) training examples. A gate at K=5 that blesses anything."""
    settings = replace(
        settings,
        recall_ks=(5,),
        gate_k=5,
        recall_floor=0.0,
        regression_margin=1.0,
        canary_requests=20,
        canary_margin=0.05,
        retention=0,
        model=CFG,
    )
    n = len(ITEMS)
    corpus = pa.table(
        {
            "item_id": ITEMS,
            "title": [" ".join(TITLES[i]) for i in ITEMS],
            "leaf_category": ["leaf"] * n,
            "top_category": ["top"] * n,
            "brand": ["b"] * n,
            "shop": ["s"] * n,
            "price": [1.0] * n,
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
    examples = pa.Table.from_pylist(
        [
            {
                "request_id": f"t{k:03d}",
                "request_time": datetime(2026, 1, 1, 8) + timedelta(minutes=k),
                "label_event": "click",
                **row,
            }
            for k, row in enumerate(_examples(200, 1))
        ]
    )
    con = duckdb.connect(str(settings.warehouse))
    for table, rows in [
        ("mart_item_corpus", corpus),
        ("mart_eval_examples", evals),
        ("mart_training_examples", examples),
    ]:
        con.register("rows", rows)
        days = "(values " + ", ".join(f"(date '{d}')" for d in DAYS) + ") as d(ds)"
        con.execute(f"create table {table} as select d.ds, r.* from rows r cross join {days}")
        con.unregister("rows")
    con.close()
    exported.save(model, settings.models, 1, DAYS[0])
    assert stages.build_index(DAYS[0], 1, settings) == LIVE
    promote(_report(DAYS[0], LIVE), settings, run_id="daily__1")
    release(settings)
    yield settings
    release(settings)


def _kill_mid(settings, tmp_path: Path, body: str) -> None:
    """Runs PRELUDE + body in a child process, waits until it calls stall(), SIGKILLs it."""
    release(settings)  # the parent holds no Lite server (nor client) while the child runs
    marker, output = tmp_path / "stalled", tmp_path / "child.log"
    env = {
        **os.environ,
        "EBR_HOME": str(settings.home),
        "CRASH_SETTINGS": repr(settings),
        "CRASH_MARKER": str(marker),
    }
    with output.open("w") as out:
        child = subprocess.Popen(
            [sys.executable, "-c", PRELUDE + textwrap.dedent(body)],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            if child.poll() is not None:
                pytest.fail(
                    f"the child ended ({child.returncode}) before its kill point:\n"
                    f"{output.read_text()[-4000:]}"
                )
            if time.monotonic() > deadline:
                pytest.fail(
                    f"the child never reached its kill point:\n{output.read_text()[-4000:]}"
                )
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(30) == -signal.SIGKILL
    finally:
        if child.poll() is None:  # only on a failure above: never leave our child behind
            child.kill()
            child.wait(30)


def _serving(settings) -> tuple[store.CollectionInfo, float]:
    """What the alias serves and its Recall@5 on day 1's held-out requests, searched through the
    alias with the model the collection records."""
    with store.connect(settings) as client:
        current = store.live(client, settings.alias)
        assert current is not None, "the alias is missing"
        model = load_artifact(settings.models / f"v{current.model_version}")
        recall = evaluate(client, settings.alias, model, read_eval(DAYS[0], settings), (5,))[5]
    return current, recall


def _dot_folders(settings) -> list[str]:
    return sorted(p.name for p in settings.models.iterdir() if p.name.startswith("."))


# ---- (a) training: killed while saving the artifact -------------------------------------------


@pytest.mark.parametrize("point", ["writing files", "between the renames"])
def test_a_save_killed_midway_leaves_no_partial_version_and_its_debris_is_cleared(
    world, tmp_path, model, monkeypatch, point
):
    if point == "writing files":  # a new version: killed after model.pt, before the rest
        body = """
            import torch
            real = torch.save
            def save(*args, **kwargs):
                real(*args, **kwargs)
                stall()
            torch.save = save
            stages.train("2026-01-02", settings)
        """
    else:  # a rerun of day 2 replacing its unpromoted v2: killed once v2 is moved aside
        model.save(world.models, 2, DAYS[1])
        old_weights = (world.models / "v2" / "model.pt").read_bytes()
        body = """
            real = os.rename
            def rename(src, dst):
                real(src, dst)
                if str(dst).endswith("-replaced"):
                    stall()
            os.rename = rename
            stages.train("2026-01-02", settings)
        """
    _kill_mid(world, tmp_path, body)

    # no v2 at all (never a partial one): latest_version and the next run's version ignore the debris
    assert not (world.models / "v2").exists() and latest_version(world.models) == 1
    left = _dot_folders(world)
    if point == "writing files":
        assert len(left) == 1 and left[0].startswith(".v2-")
        assert (world.models / left[0] / "model.pt").exists()  # the kill fell inside the save
        assert not (world.models / left[0] / "meta.json").exists()
    else:
        tmp, aside = left
        assert aside == tmp + "-replaced" and tmp.startswith(".v2-")
        assert (
            load_meta(world.models / tmp)["parent"] == 1
        )  # the new one was complete, not yet in place
    # young debris may be a save still running in another process: only an old one is debris
    assert debris(world.models) == []
    assert [p.name for p in debris(world.models, min_age_s=0)] == left
    assert remove_debris(world)["artifacts"] == [] and _dot_folders(world) == left

    if (
        point == "writing files"
    ):  # what clean() (which starts with remove_debris) does an hour later
        monkeypatch.setattr(artifacts, "DEBRIS_MIN_AGE_S", 0)
        assert clean(world) == []
        assert _dot_folders(world) == [] and sorted(os.listdir(world.models)) == ["v1"]
    else:  # like the save's own error path: the old v2 goes back, the new one's folder goes
        assert remove_debris(world, min_age_s=0) == {
            "collections": [],
            "artifacts": [tmp],
            "restored": ["v2"],
        }
        assert _dot_folders(world) == []
        assert (world.models / "v2" / "model.pt").read_bytes() == old_weights
        assert load_meta(world.models / "v2")["parent"] is None

    # the rerun of the day saves v2, warm-started from the live v1
    assert stages.train(DAYS[1], world) == 2
    assert load_artifact(world.models / "v2").meta["parent"] == 1 and _dot_folders(world) == []
    assert _serving(world)[0].name == LIVE


# ---- (b) encoding / index build: killed after create ------------------------------------------


@pytest.mark.parametrize("point", ["inserting", "loading"])
def test_a_build_killed_midway_leaves_the_alias_serving_and_the_half_collection_goes(
    world, tmp_path, model, exported, monkeypatch, point
):
    exported.save(model, world.models, 2, DAYS[1])
    if point == "inserting":  # the first batch is in, the corpus not finished
        body = """
            from indexing import store
            real = store.insert
            def insert(*args, **kwargs):
                real(*args, **kwargs)
                stall()
            store.insert = insert
            stages.build_index("2026-01-02", 2, settings)
        """
    else:  # flushed and indexed, killed before load and the complete mark
        body = """
            from pymilvus import MilvusClient
            MilvusClient.load_collection = lambda self, *args, **kwargs: stall()
            stages.build_index("2026-01-02", 2, settings)
        """
    _kill_mid(world, tmp_path, body)

    # the Lite file opens again at once (the kernel dropped the dead child's flock; LOCK stays)
    assert (Path(world.milvus_uri) / "LOCK").exists()
    current, recall = _serving(world)
    assert (current.name, current.complete) == (LIVE, True) and recall > 0.5
    with store.connect(world) as client:
        assert store.incomplete(client) == [CANDIDATE] and store.ours(client) == [LIVE, CANDIDATE]
        assert not store.info(client, CANDIDATE).complete
        # the rows inserted before the kill (one batch: all of them), never flushed in the "inserting"
        # case, are there: Milvus Lite replayed its write-ahead log; only the complete mark is missing
        assert client.get_collection_stats(CANDIDATE)["row_count"] == len(ITEMS)
    with pytest.raises(
        GateRefused, match="not a complete collection"
    ):  # the gate's blessing cannot help it
        promote(_report(DAYS[1], CANDIDATE), world, run_id="daily__2")

    if point == "inserting":
        # on a Milvus server a young incomplete collection may still be building elsewhere: left
        monkeypatch.setattr(store, "created_at", lambda client, name: time.time() - 5)
        assert remove_debris(world, min_age_s=60)["collections"] == []
        monkeypatch.undo()
        assert remove_debris(world, min_age_s=0) == {
            "collections": [CANDIDATE],
            "artifacts": [],
            "restored": [],
        }
        with store.connect(world) as client:
            assert store.ours(client) == [LIVE] and store.incomplete(client) == []
    # either way the rerun of the day converges (store.create replaces a non-live half collection)
    assert stages.build_index(DAYS[1], 2, world) == CANDIDATE
    with store.connect(world) as client:
        assert store.incomplete(client) == [] and store.info(client, CANDIDATE).complete
        assert client.get_collection_stats(CANDIDATE)["row_count"] == len(ITEMS)
        assert store.live(client, world.alias).name == LIVE
    assert (world.models / "v2").is_dir()  # the model a rerun needs was never debris


# ---- (c) promotion: killed while moving the alias, or after it and before the log line ---------


@pytest.mark.parametrize("point", ["writing the alias", "before the log line"])
def test_a_promotion_killed_midway_leaves_a_complete_collection_behind_the_alias(
    world, tmp_path, model, exported, point
):
    exported.save(model, world.models, 2, DAYS[1])
    stages.build_index(DAYS[1], 2, world)
    assert stages.gate(DAYS[1], 2, world)["passed"]
    if point == "writing the alias":  # Milvus Lite wrote aliases.json.tmp, not yet renamed over
        body = """
            real = os.replace
            def replace(src, dst, **kwargs):
                if str(dst).endswith("aliases.json"):
                    stall()
                real(src, dst, **kwargs)
            os.replace = replace
            stages.promote("2026-01-02", settings, run_id="daily__2")
        """
    else:  # the alias moved; promotions.jsonl not yet appended
        body = """
            from indexing import store
            real = store.point_alias
            def point_alias(*args):
                real(*args)
                stall()
            store.point_alias = point_alias
            stages.promote("2026-01-02", settings, run_id="daily__2")
        """
    _kill_mid(world, tmp_path, body)

    moved = point == "before the log line"
    current, recall = _serving(world)
    assert (current.name, current.complete) == (
        (CANDIDATE if moved else LIVE),
        True,
    ) and recall > 0.5
    assert [e["collection"] for e in history(world)] == [LIVE]  # no line either way
    if not moved:
        assert (Path(world.milvus_uri) / "aliases.json.tmp").exists()  # killed inside the write

    # the retried promote task converges: alias on the candidate, one logged promotion, canary passed
    entry = stages.promote(DAYS[1], world, run_id="daily__2_retry")
    assert entry["canary"]["passed"] and _serving(world)[0].name == CANDIDATE
    assert [(e["action"], e["collection"]) for e in history(world)] == [
        ("promote", LIVE),
        ("promote", CANDIDATE),
    ]
    if not moved:
        assert (entry["replaced_collection"], entry["previous_collection"]) == (LIVE, LIVE)
        return
    # The move itself was not logged: the retry takes what the log last served as what this
    # promotion replaced, so the lineage to LIVE survives and a plain rollback undoes it.
    assert (entry["replaced_collection"], entry["previous_collection"]) == (LIVE, LIVE)
    assert (
        stages.rollback(world, run_id="r", user="ops", reason="after the crash")["collection"]
        == LIVE
    )
    assert _serving(world)[0].name == LIVE


# ---- remove_debris on its own ----------------------------------------------------------------


def test_remove_debris_never_drops_an_aliased_collection_even_if_incomplete(settings, caplog):
    with store.connect(settings) as client:
        live, _ = _build(client, "2026-01-01", 1)
        store.point_alias(client, settings.alias, live)
        # not reachable through promote/rollback (they refuse it): forced here
        client.alter_collection_properties(live, properties={"ebr.complete": "0"})
        half, _ = _build(client, "2026-01-02", 2, complete=False)
        done, _ = _build(client, "2026-01-03", 3)
        assert store.incomplete(client) == [live, half]
    with caplog.at_level(logging.ERROR, logger="indexing.promote"):
        assert remove_debris(settings, min_age_s=0)["collections"] == [half]
    assert f"{live} is aliased but not complete" in caplog.text
    with store.connect(settings) as client:
        assert (
            store.ours(client) == [live, done] and store.live(client, settings.alias).name == live
        )
    release(settings)


def test_created_at_reads_the_physical_part_of_a_hybrid_timestamp():
    class Client:
        def __init__(self, desc):
            self.desc = desc

        def describe_collection(self, name):
            return self.desc

    millis = 1_767_225_600_123  # 2026-01-01T00:00:00.123Z
    assert store.created_at(Client({"created_timestamp": (millis << 18) + 5}), "c") == millis / 1000
    assert store.created_at(Client({}), "c") is None  # Milvus Lite says nothing
