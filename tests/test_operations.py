"""Operations: promotion lineage, rollback (function, CLI, DAG), the post-promotion canary and
input validation, on real Milvus Lite collections built by real (tiny, quickly trained) models."""

import json
import random
import subprocess
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
import torch
from lite_server import release
from test_store import _build, _report

from ebr import stages
from ebr.cli import main
from ebr.client import RetrievalClient, user_features
from ebr.settings import ModelConfig
from indexing import store
from indexing.canary import CanaryFailed
from indexing.promote import RollbackRefused, clean, code_version, history, promote
from training.artifact import load_artifact
from training.export import export_query_encoder
from training.features import LT_COLUMNS
from training.model import MGDSPR
from training.train import train

pytestmark = pytest.mark.reliability

DAYS = ["2026-01-01", "2026-01-02", "2026-01-03"]
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
    epochs=5,
    validation_share=0.0,
)
DAG_FILE = Path(__file__).resolve().parent.parent / "dags" / "ebr_rollback.py"


def _corpus() -> pa.Table:
    return pa.table({"item_id": ITEMS, "title": [" ".join(TITLES[i]) for i in ITEMS]})


@pytest.fixture(scope="module")
def models():
    """Two different tiny models (seeds 0 and 1) that find an item from 1-3 of its title words."""
    rnd = random.Random(0)
    rows = []
    for r in range(600):
        item = rnd.choice(ITEMS)
        rows.append(
            {
                "user_id": f"u{r % 20}",
                "item_id": item,
                **NO_HISTORY,
                "query": " ".join(rnd.sample(TITLES[item], rnd.randint(1, 3))),
            }
        )
    examples = pa.Table.from_pylist(rows)
    return [train(examples, _corpus(), CFG, seed=seed) for seed in (0, 1)]


@pytest.fixture
def ops(settings, models, exported):
    """A warehouse with the corpus and 40 held-out requests on each day, v1..v3 saved (v2 from
    the other model), and a gate at K=5 that blesses anything: these tests are about what comes
    after it."""
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
    corpus = pa.table(
        {
            **_corpus().to_pydict(),
            "leaf_category": ["leaf"] * 40,
            "top_category": ["top"] * 40,
            "brand": ["b"] * 40,
            "shop": ["s"] * 40,
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
        f"create table mart_item_corpus as select d.ds, c.* from corpus c cross join {days}"
    )
    con.execute(
        f"create table mart_eval_examples as select d.ds, e.* from evals e cross join {days}"
    )
    con.close()
    for version, (model, ds) in enumerate(zip([models[0], models[1], models[0]], DAYS), start=1):
        exported.save(model, settings.models, version, ds)
    yield settings
    release(settings)  # one Lite server per test, not dozens


def _gated(settings, day: int) -> str:
    """Day `day` (1-based) indexed by model v<day> and gated, not promoted."""
    stages.build_index(DAYS[day - 1], day, settings)
    return stages.gate(DAYS[day - 1], day, settings)["candidate_collection"]


def _serve(settings, day: int) -> dict:
    _gated(settings, day)
    return stages.promote(DAYS[day - 1], settings, run_id=f"daily__{day}")


def _live(settings) -> str | None:
    with store.connect(settings) as client:
        current = store.live(client, settings.alias)
    return current.name if current else None


def _canary(settings, day: int) -> dict:
    return json.loads((settings.report_day(DAYS[day - 1]) / "canary.json").read_text())


def test_promote_then_rollback_logs_lineage_and_history_shows_it(ops, capsys):
    a, b = _serve(ops, 1)["collection"], _serve(ops, 2)["collection"]
    for day in (1, 2):  # healthy promotions: through the alias, exactly what the gate measured
        canary = _canary(ops, day)
        assert (
            canary["passed"]
            and canary["requests"] == 20
            and canary["recall"] == canary["expected_recall"]
        )
        assert canary["recall"] > 0.5 and canary["rolled_back_to"] is None
    assert _live(ops) == b

    entry = stages.rollback(ops, run_id="manual__r1", user="alice", reason="odd results for shoes")
    assert _live(ops) == a
    promoted_a, promoted_b, logged = history(ops)
    assert logged == entry
    assert (entry["action"], entry["collection"], entry["model_version"], entry["ds"]) == (
        "rollback",
        a,
        1,
        DAYS[0],
    )
    assert (entry["replaced_collection"], entry["previous_collection"]) == (b, None)  # A was first
    assert (entry["user"], entry["reason"], entry["run_id"]) == (
        "alice",
        "odd results for shoes",
        "manual__r1",
    )
    assert entry["gate"] == promoted_a["gate"] and set(entry["gate"]) == {"k", "candidate", "live"}
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True
    )
    assert entry["code_version"] == code_version() == (head.stdout.strip() or entry["code_version"])
    assert promoted_b["previous_collection"] == a and promoted_b["gate"]["live"] is not None
    assert all(e["code_version"] and e["time"] and e["alias"] == ops.alias for e in history(ops))

    capsys.readouterr()
    main(["history", "--json"])
    assert json.loads(capsys.readouterr().out) == history(ops)
    main(["history"])
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["time", "action", "collection"] and len(table) == 4
    assert (
        "rollback" in table[3]
        and "alice" in table[3]
        and "manual__r1" in table[3]
        and b in table[3]
    )

    # nothing served before A: a further plain rollback is refused, and the alias stays
    with pytest.raises(RollbackRefused, match="no collection before"):
        stages.rollback(ops, run_id="manual__r2", user="alice", reason="again")
    assert _live(ops) == a and len(history(ops)) == 3
    # retention 0: B goes with its model; A serves, its model stays
    assert clean(ops) == [b]
    assert (ops.models / "v1" / "model.pt").exists() and not (ops.models / "v2").exists()


def test_rollbacks_walk_back_the_lineage_and_clean_keeps_the_next_target(ops):
    a, b, c = (_serve(ops, day)["collection"] for day in (1, 2, 3))
    stages.rollback(ops, run_id="r1", user="bob", reason="c is bad")
    assert _live(ops) == b and history(ops)[-1]["previous_collection"] == a
    # retention 0: only the live one and where the next rollback goes survive, with their models
    assert clean(ops) == [c]
    assert not (ops.models / "v3").exists() and (ops.models / "v1").exists()
    stages.rollback(ops, run_id="r2", user="bob", reason="b is bad too")
    assert _live(ops) == a and history(ops)[-1]["previous_collection"] is None
    stages.rollback(ops, run_id="r3", user="bob", reason="b was fine after all", to=b)
    assert _live(ops) == b and history(ops)[-1]["previous_collection"] == a  # b's own lineage
    # a rerun of the promotion of what already serves keeps the lineage
    assert promote(_report(DAYS[1], b), ops, run_id="rerun")["previous_collection"] == a


def test_rollback_to_a_missing_incomplete_or_modelless_collection_leaves_the_alias(ops):
    a, b = _serve(ops, 1)["collection"], _serve(ops, 2)["collection"]
    with store.connect(ops) as client:
        broken, _ = _build(client, "2026-01-05", 5, dim=CFG.dim, complete=False)
    before = history(ops)
    for to, why in [
        ("items_20260109_v9", "does not exist"),
        (broken, "not a complete"),
        (b, "already serves"),
    ]:
        with pytest.raises(RollbackRefused, match=why):
            stages.rollback(ops, run_id="r", user="carol", reason="test", to=to)
    (ops.models / "v1" / "model.pt").unlink()  # A's model gone: A can no longer serve
    with pytest.raises(RollbackRefused, match=f"{a} was built by model v1, whose artifact is gone"):
        stages.rollback(ops, run_id="r", user="carol", reason="test")
    assert history(ops) == before and _live(ops) == b


@pytest.mark.parametrize(
    "to", ["x; drop", "items_20260101_v1 or 1==1", "items_20260101_v1\n", "ebr_items"]
)
def test_rollback_rejects_names_that_are_not_collections(ops, to):
    _serve(ops, 1)
    b = _serve(ops, 2)["collection"]
    with pytest.raises(ValueError, match="to must name a collection"):
        stages.rollback(ops, run_id="r", user="dave", reason="test", to=to)
    assert _live(ops) == b and len(history(ops)) == 2


def test_rollback_user_and_reason_are_bounded_one_line_text(ops, capsys):
    _serve(ops, 1)
    _serve(ops, 2)
    bad = [
        ("u\x00", "ok"),
        ("x" * 257, "ok"),
        ("dave", ""),
        ("dave", "line\nbreak"),
        ("dave", "r" * 1001),
        ("dave", "\x1b[31mred"),
    ]
    for user, reason in bad:
        with pytest.raises(ValueError, match="user|reason"):
            stages.rollback(ops, run_id="r", user=user, reason=reason)
    with pytest.raises(SystemExit, match="to must name a collection"):
        main(["rollback", "--reason", "test", "--to", "x; drop"])
    assert len(history(ops)) == 2
    # data, not code: quotes and SQL stay verbatim in the log
    entry = stages.rollback(ops, run_id="r", user="o'brien", reason="'; drop table x; --")
    assert history(ops)[-1]["reason"] == entry["reason"] == "'; drop table x; --"


def _randomise(settings, version: int) -> None:
    """What a bad copy or a partial redeploy would do: other weights behind the same version."""
    artifact = load_artifact(settings.models / f"v{version}")
    torch.manual_seed(99)
    other = MGDSPR(artifact.config, artifact.vocabs.sizes())
    torch.save(other.state_dict(), artifact.path / "model.pt")
    export_query_encoder(other, artifact.path)  # what services load


def _record_other_version(settings, day: int, version: int) -> None:
    """The collection claims another model built it than the one that did."""
    with store.connect(settings) as client:
        client.alter_collection_properties(
            store.collection_name(DAYS[day - 1], day),
            properties={"ebr.model_version": str(version)},
        )


@pytest.mark.parametrize("damage", ["random weights", "wrong recorded version"])
def test_a_damaged_promotion_fails_its_canary_and_goes_back(ops, damage):
    a = _serve(ops, 1)["collection"]
    b = _gated(ops, 2)
    _randomise(ops, 2) if damage == "random weights" else _record_other_version(ops, 2, 1)
    with pytest.raises(CanaryFailed, match=f"canary failed for {b}.*alias {ops.alias} back on {a}"):
        stages.promote(DAYS[1], ops, run_id="daily__2")
    assert _live(ops) == a
    promoted, undone = history(ops)[-2:]
    assert (promoted["action"], promoted["collection"]) == ("promote", b)
    assert (
        undone["action"],
        undone["collection"],
        undone["replaced_collection"],
        undone["run_id"],
    ) == ("auto-rollback", a, b, "daily__2")
    assert undone["user"] == "canary" and "below the gate's" in undone["reason"]
    canary = _canary(ops, 2)
    assert not canary["passed"] and canary["rolled_back_to"] == a and not canary["alias_removed"]
    assert canary["recall"] < canary["expected_recall"] - ops.canary_margin
    assert clean(ops) == [b]  # retention 0: the restored one serves and stays, the broken one goes


def test_a_failed_first_promotion_removes_the_alias(ops):
    a = _gated(ops, 1)
    _randomise(ops, 1)
    with pytest.raises(CanaryFailed, match="alias .* removed"):
        stages.promote(DAYS[0], ops, run_id="daily__1")
    assert _live(ops) is None
    undone = history(ops)[-1]
    assert (undone["action"], undone["collection"], undone["replaced_collection"]) == (
        "auto-rollback",
        None,
        a,
    )
    assert _canary(ops, 1)["alias_removed"]
    with pytest.raises(LookupError, match="does not exist yet"):
        RetrievalClient(ops).search("w1 w2")


def test_a_canary_that_cannot_reach_the_model_fails(ops):
    a = _serve(ops, 1)["collection"]
    _gated(ops, 2)
    (ops.models / "v2" / "query_encoder.pt2").unlink()
    with pytest.raises(CanaryFailed, match="FileNotFoundError"):
        stages.promote(DAYS[1], ops, run_id="daily__2")
    assert _live(ops) == a


@pytest.mark.parametrize(
    "ds",
    [
        "2026-13-01",
        "2026-01-01; drop",
        "20260101",
        "2026-02-30",
        " 2026-01-01",
        "2026-01-01\n",
        "２０２６-01-01",
    ],
)
@pytest.mark.parametrize(
    "stage",
    ["check_landing", "transform", "check_marts", "train", "build_index", "gate", "promote"],
)
def test_stage_entries_reject_malformed_days(settings, stage, ds):
    args = {
        "build_index": (ds, 1, settings),
        "gate": (ds, 1, settings),
        "promote": (ds, settings, "r"),
    }
    with pytest.raises(ValueError, match="ds must be a"):
        getattr(stages, stage)(*args.get(stage, (ds, settings)))


def test_client_user_ids_are_bound_as_data(settings):
    lists = {
        c: ["x"] if c == "rt_items" else []
        for c in ["st_items", "past_queries", "rt_items", *LT_COLUMNS]
    }
    users = pa.Table.from_pylist(
        [
            {
                "ds": datetime(2026, 1, 1).date(),
                "user_id": u,
                "as_of": datetime(2026, 1, 2),
                **lists,
            }
            for u in ("u1", "u2")
        ]
    )
    con = duckdb.connect(str(settings.warehouse))
    con.register("users", users)
    con.execute("create table mart_user_features as select * from users")
    con.close()
    assert user_features(settings, "u1")["rt_items"] == ["x"]
    for injection in ("' or 1=1 --", "u1' or '1'='1", "u1; drop table mart_user_features"):
        assert all(
            v == [] for v in user_features(settings, injection).values()
        )  # nobody's features
    for bad in ("u\x00", "u1\n", "x" * 257):
        with pytest.raises(ValueError, match="user_id"):
            user_features(settings, bad)
    assert user_features(settings, "u2")["rt_items"] == ["x"]  # the table is intact


def test_rollback_dag_loads_with_its_params():
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk.exceptions import ParamValidationError

    bag = DagBag(dag_folder=DAG_FILE)
    assert bag.import_errors == {}
    dag = bag.dags["ebr_rollback"]
    assert type(dag.timetable).__name__ == "NullTimetable" and [t.task_id for t in dag.tasks] == [
        "rollback"
    ]
    params = dag.params
    assert set(params) == {"reason", "user", "to"}
    reason = params.get_param("reason")
    assert not reason.has_value and reason.schema["minLength"] == 1  # required in the trigger form
    with pytest.raises(ParamValidationError):
        reason.resolve("")
    assert reason.resolve("bad results") == "bad results"
    assert params.get_param("to").value is None and params.get_param("user").value == ""


def test_canary_day_uses_the_first_requests_in_request_order(ops):
    _serve(ops, 1)
    baseline = json.loads((ops.report_day(DAYS[0]) / "canary_baseline.json").read_text())
    assert baseline["request_ids"] == [f"e{k:03d}" for k in range(20)]
    assert baseline["collection"] == _live(ops) and baseline["k"] == 5


def test_a_rerun_replaces_only_a_candidate_that_never_served(ops):
    _serve(ops, 1)
    _serve(ops, 2)
    live = stages.live_model(ops)
    assert live == ops.models / "v2"
    # day 3's v3 never served: a rerun of day 3 replaces it
    assert stages._version_for(DAYS[2], ops, live) == 3
    # day 1's v1 served (and its collection may be rolled back to): a backfill of day 1 gets v4
    assert stages._version_for(DAYS[0], ops, live) == 4


def test_a_rebuild_keeps_the_versions_query_encoder_and_a_retrained_version_exports_anew(
    ops, models, exported
):
    encoder = ops.models / "v1" / "query_encoder.pt2"
    _gated(ops, 1)
    before = encoder.stat()
    _gated(ops, 1)  # a rerun of the build: the same model, the same file
    assert (encoder.stat().st_ino, encoder.stat().st_mtime_ns) == (
        before.st_ino,
        before.st_mtime_ns,
    )
    models[1].save(ops.models, 1, DAYS[0])  # the day retrained: v1 replaced whole, no encoder
    assert not encoder.exists()
    _gated(ops, 1)
    first = exported.files[models[0].model]
    assert encoder.exists() and encoder.read_bytes() != first.read_bytes()
