"""Training end to end on a tiny made-up marketplace: retrieval quality, warm start, artifacts,
early stopping."""

import logging
import random
from collections import Counter
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pytest
import torch

from ebr.settings import ModelConfig, Settings, load_settings
from indexing import exact
from training import artifact as artifact_module
from training import features
from training.artifact import latest_version, load_artifact, load_meta
from training.features import LT_COLUMNS
from training.model import MGDSPR
from training.title_queries import title_queries
from training.train import _identities, _Validation, batches, pool_log_q, train, train_day
from training.vocab import PAD, UNK, Vocabs

DS = "2024-03-01"
WORDS = [f"w{k}" for k in range(60)]
# Fixed epochs (no validation): these tests are about what training learns; early stopping has
# its own tests below.
CFG = ModelConfig(
    dim=32,
    heads=4,
    batch_size=64,
    sampled_negatives=32,
    hard_negatives=4,
    epochs=8,
    validation_share=0.0,
    min_validation=50,  # where a test turns validation on: 10% of a 500-600-row day
)


def make_day(seed: int, n_items=40, n_users=20, n_examples=600, prefix="", second_clicks=0.0):
    """Items titled with 3 of 60 words; each query is 1-3 words of the clicked item's title.
    A share second_clicks of the requests click a second item (another row of the request, next
    to its first, with the request's features)."""
    rnd = random.Random(seed)
    items = [f"{prefix}i{k}" for k in range(n_items)]
    titles = {i: rnd.sample(WORDS, 3) for i in items}
    corpus = pa.table({"item_id": items, "title": [" ".join(titles[i]).upper() for i in items]})
    start = datetime(2024, 3, 1)
    rows = []
    for r in range(n_examples):
        item = rnd.choice(items)
        row = {
            "request_id": f"{prefix}r{r}",
            "request_time": start + timedelta(seconds=r),
            "user_id": f"{prefix}u{rnd.randrange(n_users)}",
            "query": " ".join(rnd.sample(titles[item], rnd.randint(1, 3))),
            "item_id": item,
            "rt_items": rnd.sample(items, rnd.randint(0, 5)),
            "st_items": rnd.sample(items, rnd.randint(0, 5)),
            "past_queries": [" ".join(rnd.sample(WORDS, 2)) for _ in range(rnd.randint(0, 3))],
        }
        for c in LT_COLUMNS:
            values = items if c.endswith("_item") else [f"{c[-4:]}{k}" for k in range(5)]
            row[c] = [rnd.choice(values) for _ in range(rnd.randint(0, 4))]
        rows.append(row)
        if second_clicks and rnd.random() < second_clicks:
            rows.append({**row, "item_id": rnd.choice([i for i in items if i != item])})
    return pa.Table.from_pylist(rows), corpus


def title_search(corpus: pa.Table) -> pa.Table:
    """One request per item: an unseen user searching the item's title, no history."""
    empty = {"rt_items": [], "st_items": [], "past_queries": [], **{c: [] for c in LT_COLUMNS}}
    titles = corpus["title"].to_pylist()
    return pa.Table.from_pylist([{"user_id": "nobody", "query": t, **empty} for t in titles])


# mart_eval_examples from training-mart-shaped rows, one clicked item a request.
EVENINGS = (
    "create table mart_eval_examples as select * exclude (item_id), [item_id] as clicked_items, "
    "[]::varchar[] as purchased_items from {source}"
)


def settings_for(home: Path, cfg: ModelConfig, monkeypatch) -> Settings:
    monkeypatch.setenv("EBR_HOME", str(home))
    return replace(load_settings(), seed=3, model=cfg)


@pytest.fixture(scope="module")
def day():
    return make_day(seed=0)


@pytest.fixture(scope="module")
def trained(day):
    examples, corpus = day
    return train(examples, corpus, CFG, seed=0)


def test_title_words_find_the_item_in_top5(trained, day):
    _, corpus = day
    users = trained.encode_requests(title_search(corpus))
    items = trained.encode_items(corpus)
    assert users.dtype == items.dtype == np.float32 and items.shape == (40, CFG.dim)
    scores = users @ items.T
    rank = (scores > np.diag(scores)[:, None]).sum(1)  # items scoring above the item's own title
    assert (rank < 5).all(), rank
    losses = trained.metrics["loss_per_epoch"]
    assert len(losses) == CFG.epochs and losses[-1] < losses[0]


def test_requests_are_encoded_in_length_order_and_returned_in_theirs(trained, day):
    """encode_requests batches rows of similar history length together: each row still gets the
    vector it gets alone, in its own place."""
    examples, _ = day
    rows = examples.slice(0, 50)  # 0-5 real-time and short-term clicks each, in random order
    together = trained.encode_requests(rows, batch_size=8)
    alone = np.concatenate([trained.encode_requests(rows.slice(i, 1)) for i in range(50)])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    assert trained.encode_requests(rows.slice(0, 0)).shape == (0, CFG.dim)


def test_artifact_round_trip(trained, day, tmp_path):
    _, corpus = day
    models = tmp_path / "models"
    assert latest_version(models) == 0
    saved = trained.save(models, version=1, ds=DS)
    assert sorted(p.name for p in models.iterdir()) == ["v1"]  # no temp folder left behind
    files = {p.name for p in saved.path.iterdir()}
    assert files == {"model.pt", "vocab.json", "config.json", "meta.json"}
    loaded = load_artifact(models / "v1")
    assert (loaded.version, loaded.ds, loaded.parent, loaded.dim) == (1, DS, None, CFG.dim)
    assert loaded.config == CFG
    assert set(loaded.metrics) >= {"loss_per_epoch", "examples", "examples_per_s", "seconds"}
    queries = title_search(corpus)
    np.testing.assert_array_equal(loaded.encode_items(corpus), trained.encode_items(corpus))
    np.testing.assert_array_equal(loaded.encode_requests(queries), trained.encode_requests(queries))
    batch = corpus.to_batches()[0]  # indexing streams RecordBatches
    np.testing.assert_array_equal(loaded.encode_items(batch), trained.encode_items(corpus))
    assert loaded.encode_items(corpus.slice(0, 0)).shape == (0, CFG.dim)
    assert latest_version(models) == 1 and load_meta(models / "v1")["ds"] == DS
    assert load_meta(tmp_path) is None
    # A rerun of a day replaces its candidate version, leaving nothing else behind.
    trained.save(models, version=1, ds="2024-03-09")
    assert load_meta(models / "v1")["ds"] == "2024-03-09"
    assert sorted(p.name for p in models.iterdir()) == ["v1"]


def test_interrupted_save_leaves_nothing(trained, tmp_path, monkeypatch):
    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # as if the process were stopped mid-write

    monkeypatch.setattr(artifact_module.torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        trained.save(tmp_path, version=2, ds=DS)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / ".v3-leftover").mkdir()  # what a SIGKILL would leave: not a version
    assert latest_version(tmp_path) == 0


def test_warm_start_grows_vocab_and_keeps_ids(trained, caplog):
    examples, corpus = make_day(seed=1, n_items=10, n_examples=100, prefix="new-")
    old_sizes = trained.vocabs.sizes()
    old_items = list(trained.vocabs.item.tokens)
    with caplog.at_level(logging.INFO, logger="training.train"):
        warm = train(examples, corpus, replace(CFG, epochs=1), base=trained, seed=0, log_every=1)
    steps = [m for m in (r.getMessage() for r in caplog.records) if "rows/s" in m]
    assert steps and all("step" in m and "loss" in m for m in steps)
    sizes = warm.vocabs.sizes()
    assert sizes["item"] == old_sizes["item"] + 10 and sizes["user"] > old_sizes["user"]
    assert warm.vocabs.item.tokens[: len(old_items)] == old_items  # old ids keep their rows
    assert warm.model.emb["item"].weight.shape[0] == sizes["item"]
    assert trained.vocabs.sizes() == old_sizes  # the base artifact is not mutated
    assert warm.parent == trained.version


def test_train_day_reads_the_warehouse_and_warm_starts(tmp_path, monkeypatch, caplog):
    examples, corpus = make_day(seed=2, n_items=20, n_examples=200)
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    con.register("examples", examples)
    con.register("corpus", corpus)
    # The same rows on two days, stored shuffled: each day must read only its own rows, in order.
    days = "(values (date '2024-03-01'), (date '2024-03-02')) as d(ds)"
    con.execute(
        "create table mart_training_examples as select d.ds, 'click' as label_event, e.* "
        f"from examples e cross join {days} order by hash(request_id)"
    )
    con.execute(
        f"create table mart_item_corpus as select d.ds, c.* from corpus c cross join {days}"
    )
    con.execute(EVENINGS.format(source="mart_training_examples where false"))
    con.close()
    settings = settings_for(tmp_path, replace(CFG, epochs=2, validation_share=0.1), monkeypatch)

    v1 = train_day(DS, settings, base=None, version=1)
    assert (v1.version, v1.ds, v1.parent, v1.path) == (1, DS, None, settings.models / "v1")
    # 10% of 200 is too few to validate on: every example trains, for every epoch.
    assert v1.metrics["examples"] == 200 and v1.metrics["validation_examples"] == 0
    assert (v1.metrics["epochs"], v1.metrics["best_epoch"], v1.metrics["stopped_early"]) == (
        2,
        None,
        False,
    )
    caplog.clear()  # v1's lines are captured too where the root logger passes INFO
    with caplog.at_level(logging.INFO, logger="training.train"):
        v2 = train_day("2024-03-02", settings, base=settings.models / "v1", version=2)
    assert (v2.version, v2.parent) == (2, 1)
    # Every line names the day and the stage; the day's context ends with train_day.
    lines = [r.getMessage() for r in caplog.records]
    assert "ds=2024-03-02 stage=train v2 from v1" in lines and len(lines) > 2
    assert all(line.startswith("ds=2024-03-02 stage=train ") for line in lines)
    assert v2.vocabs.sizes() == v1.vocabs.sizes()  # same catalogue and users: nothing new
    assert latest_version(settings.models) == 2

    # Same day, same seed: the same model, whatever order the rows were stored in.
    v3 = train_day(DS, settings, base=None, version=3)
    for name, tensor in v1.model.state_dict().items():
        assert torch.equal(tensor, v3.model.state_dict()[name]), name


def test_the_rows_a_day_never_learnt_train_the_next_day(tmp_path, monkeypatch, caplog):
    first, corpus = make_day(seed=4, n_items=20, n_examples=500, prefix="a")
    # The newest 50 rows (10%: early stopping's) are the only ones of users tail-u*.
    users = first["user_id"].to_pylist()[:450] + [f"tail-u{k}" for k in range(50)]
    first = first.set_column(first.schema.get_field_index("user_id"), "user_id", pa.array(users))
    second, _ = make_day(seed=5, n_items=20, n_examples=600, prefix="b")
    # The first day's evening: the gate's requests, of users seen nowhere else.
    evening, _ = make_day(seed=6, n_items=20, n_examples=30, prefix="e")
    evening = evening.set_column(
        evening.schema.get_field_index("item_id"), "item_id", first["item_id"].slice(0, 30)
    )
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    for name, table in (("first", first), ("second", second), ("corpus", corpus)):
        con.register(name, table)
    con.register("evening", evening)
    con.execute(
        "create table mart_training_examples as "
        "select date '2024-03-01' as ds, 'click' as label_event, * from first union all "
        "select date '2024-03-02' as ds, 'click' as label_event, * from second"
    )
    days = "(values (date '2024-03-01'), (date '2024-03-02')) as d(ds)"
    con.execute(
        f"create table mart_item_corpus as select d.ds, c.* from corpus c cross join {days}"
    )
    con.execute(EVENINGS.format(source="(select date '2024-03-01' as ds, * from evening)"))
    con.close()
    cfg = replace(CFG, epochs=1, validation_share=0.1)
    settings = settings_for(tmp_path, cfg, monkeypatch)

    v1 = train_day(DS, settings, base=None, version=1)
    assert v1.metrics["validation_examples"] == 50 and v1.metrics["carried_examples"] == 0
    assert v1.vocabs.user.get("tail-u0") == UNK  # held out: never learnt that day
    assert v1.vocabs.user.get("eu0") == UNK  # its evening: judged on, never learnt

    with caplog.at_level(logging.INFO, logger="training.train"):
        v2 = train_day("2024-03-02", settings, base=v1.path, version=2)
    assert v2.metrics["carried_examples"] == 80
    assert "50 examples held out of 2024-03-01 and 30 of its evening trained today" in caplog.text
    # 680 rows, the newest 68 of them the second day's held-out share
    assert (v2.metrics["examples"], v2.metrics["validation_examples"]) == (612, 68)
    assert all(v2.vocabs.user.get(f"tail-u{k}") != UNK for k in range(50))
    assert all(v2.vocabs.user.get(u) != UNK for u in evening["user_id"].to_pylist())

    # A rerun of the parent's own day has no earlier day's rows to carry.
    rerun = train_day("2024-03-02", settings, base=v2.path, version=3)
    assert rerun.metrics["carried_examples"] == 0 and rerun.metrics["examples"] == 540


def recall_of(artifact, validation: pa.Table, corpus: pa.Table, k: int) -> float:
    """Recall@k recomputed from the artifact's public encoders, independently of training."""
    scores = artifact.encode_requests(validation) @ artifact.encode_items(corpus).T
    top = np.argsort(-scores, axis=1)[:, :k]
    ids = np.array(corpus["item_id"].to_pylist())
    wanted = validation["item_id"].to_pylist()
    return float(np.mean([want in ids[row] for want, row in zip(wanted, top)]))


def test_early_stopping_when_validation_stops_improving(day, caplog):
    examples, corpus = day
    cfg = replace(CFG, lr=0.0, epochs=10, patience=2, validation_share=0.1, validation_k=3)
    with caplog.at_level(logging.INFO, logger="training.train"):
        model = train(examples, corpus, cfg, seed=0)
    m = model.metrics
    # lr = 0 never improves on the first epoch: it and `patience` more epochs, then stop.
    assert (m["epochs"], m["stopped_early"], m["best_epoch"]) == (3, True, 1)
    assert len(m["loss_per_epoch"]) == len(m["validation_recall_per_epoch"]) == 3
    assert len(set(m["validation_recall_per_epoch"])) == 1
    # The newest 10% (60 of 600, by request time) are held out, never trained on.
    assert (m["examples"], m["validation_examples"]) == (540, 60)
    held_out = examples.slice(540)
    assert m["validation_recall_per_epoch"][0] == pytest.approx(
        recall_of(model, held_out, corpus, 3)
    )
    epochs = [r.message for r in caplog.records if "validation recall@3" in r.message]
    assert len(epochs) == 3 and all("examples/s" in e and "elapsed" in e for e in epochs)


def test_validation_recall_pairs_each_request_with_its_own_item(trained, day, monkeypatch):
    """Validation encodes its requests in order of history length (features.Requests.by_length);
    each must still be scored against its own item. A model that ranks every request alike
    would hide a mismatch (the hit count is the same under any pairing): this one does not.
    Scores go through the gate's exact search in blocks (indexing.exact.SCORES floats each):
    blocks of one request count the same hits."""
    examples, corpus = day
    held_out = examples.slice(540)
    items = features.items(corpus, trained.vocabs, CFG, grow=False)
    validation = _Validation.of(held_out, items, trained.vocabs, CFG)
    order = validation.requests.by_length()
    assert (order != np.arange(len(order))).any(), "precondition: rows are reordered"
    got = validation.recall(trained.model, items, 3, "cpu")
    assert got == pytest.approx(recall_of(trained, held_out, corpus, 3))
    assert got > 0.5  # the requests are told apart: a mispairing would change the count
    monkeypatch.setattr(exact, "SCORES", len(items))
    assert validation.recall(trained.model, items, 3, "cpu") == got


def test_validation_encodes_a_request_with_several_held_out_clicks_once(trained, day):
    _, corpus = day
    held_out = make_day(seed=0, second_clicks=0.5)[0].slice(540)  # the same corpus as `day`
    items = features.items(corpus, trained.vocabs, CFG, grow=False)
    validation = _Validation.of(held_out, items, trained.vocabs, CFG)
    assert len(validation) == len(held_out) > len(validation.requests)  # precondition
    got = validation.recall(trained.model, items, 3, "cpu")
    assert got == pytest.approx(recall_of(trained, held_out, corpus, 3))  # every click counted


def test_a_request_with_several_clicks_runs_the_user_tower_once(monkeypatch):
    """Training batches keep a request's rows together (train.batches) and run the user tower on
    each of a batch's requests once, however many clicks it has."""
    examples, corpus = make_day(seed=4, second_clicks=0.5)
    requests = len(set(examples["request_id"].to_pylist()))
    assert len(examples) > requests  # precondition
    seen = []
    original = MGDSPR.user_tower

    def counted(self, b, kept=None):
        seen.append(len(b.user))
        return original(self, b, kept)

    monkeypatch.setattr(MGDSPR, "user_tower", counted)
    cfg = replace(CFG, epochs=1, title_queries=0.0)
    train(examples, corpus, cfg, seed=0)
    steps = -(-len(examples) // cfg.batch_size)
    assert len(seen) == steps
    # Only a request cut by a batch's end runs twice.
    assert requests <= sum(seen) <= requests + steps - 1


def test_batches_keep_each_request_together_and_shuffle_the_requests():
    request_of = np.array([0, 0, 1, 2, 2, 2, 3, 4, 4, 5, 6])
    rows = np.arange(1, 11)  # an epoch's rows: any subset
    gen = torch.Generator().manual_seed(0)
    cut = batches(rows, request_of, 4, gen)
    order = np.concatenate(cut)
    assert sorted(order) == list(rows) and [len(b) for b in cut] == [4, 4, 2]
    runs = request_of[order]
    assert np.count_nonzero(np.diff(runs)) + 1 == len(set(runs))  # each request in one run
    shuffled = {tuple(request_of[np.concatenate(batches(rows, request_of, 4, gen))])}
    shuffled |= {tuple(request_of[np.concatenate(batches(rows, request_of, 4, gen))])}
    assert len(shuffled | {tuple(runs)}) > 1


def test_fewer_held_out_rows_than_min_validation_train_every_epoch(day):
    examples, corpus = day
    cfg = replace(CFG, epochs=2, validation_share=0.1, min_validation=61)  # 60 would be held
    m = train(examples, corpus, cfg, seed=0).metrics
    assert (m["examples"], m["validation_examples"], m["epochs"], m["best_epoch"]) == (
        600,
        0,
        2,
        None,
    )


def test_best_epoch_weights_are_returned(day):
    examples, corpus = day
    # A high learning rate makes validation recall wander: its best is not the last epoch (at
    # 299a8e8: 0.133 at epoch 5, 0.05 at the last; lr 0.2's best had tied its last by then).
    cfg = replace(CFG, lr=0.3, epochs=6, patience=6, validation_share=0.1, validation_k=3)
    model = train(examples, corpus, cfg, seed=0)
    recalls = model.metrics["validation_recall_per_epoch"]
    assert len(recalls) == 6 and not model.metrics["stopped_early"]
    best = max(recalls)
    assert recalls[-1] < best, "precondition: the last epoch is not the best"
    assert recalls[model.metrics["best_epoch"] - 1] == best
    assert recall_of(model, examples.slice(540), corpus, 3) == pytest.approx(best)


@pytest.mark.parametrize("arithmetic", ["float32", "bfloat16"])
def test_precision_sets_the_towers_arithmetic_and_nothing_else(day, arithmetic):
    from training.train import cpu_has_bfloat16

    if arithmetic == "bfloat16" and not cpu_has_bfloat16():
        pytest.skip("this CPU has no bfloat16 kernels: its refusal is tested below")
    examples, corpus = day
    cfg = replace(CFG, epochs=2, precision=arithmetic)
    # The output dtype of every linear layer the towers run while training.
    seen: set[torch.dtype] = set()

    def record(module, args, output):
        if module.training and isinstance(module, torch.nn.Linear):
            seen.add(output.dtype)

    hook = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        model = train(examples.slice(0, 300), corpus, cfg, seed=0)
    finally:
        hook.remove()
    assert seen == {getattr(torch, arithmetic)}
    m = model.metrics
    assert m["precision"] == arithmetic and m["loss_per_epoch"][-1] < m["loss_per_epoch"][0]
    assert {p.dtype for p in model.model.parameters()} == {torch.float32}
    assert model.encode_items(corpus).dtype == np.float32
    with pytest.raises(ValueError, match="precision"):
        replace(CFG, precision="float16")


def test_bfloat16_on_a_cpu_without_its_kernels_is_refused_by_name(day, monkeypatch):
    from training import train as train_module

    examples, corpus = day
    monkeypatch.setattr(train_module, "cpu_has_bfloat16", lambda: False)
    cfg = replace(CFG, epochs=1, precision="bfloat16")
    with pytest.raises(ValueError, match=r"precision 'bfloat16' \(EBR_PRECISION\) needs a CPU"):
        train(examples.slice(0, 100), corpus, cfg, seed=0, device="cpu")
    assert train_module.precision(replace(cfg, precision="float32"), "cpu") == "float32"


def test_validation_rows_never_grow_vocabularies_and_unknown_items_miss(day):
    examples, corpus = day
    validation = examples.slice(500)  # 100 rows
    n = validation.num_rows
    users = ["stranger"] * n
    items = validation["item_id"].to_pylist()
    items[:25] = ["gone"] * 25  # not in the corpus: always a miss
    validation = validation.set_column(
        validation.schema.get_field_index("user_id"), "user_id", pa.array(users)
    )
    validation = validation.set_column(
        validation.schema.get_field_index("item_id"), "item_id", pa.array(items)
    )
    # A row with an empty id maps to UNK, as "gone" does: they must not match each other.
    corpus = pa.concat_tables([corpus, pa.table({"item_id": [""], "title": ["w1"]})])
    # K = 41 covers the whole corpus: every item of the corpus is found, "gone" never is.
    cfg = replace(CFG, epochs=1, validation_k=41, validation_share=0.5)
    model = train(examples.slice(0, 500), corpus, cfg, seed=0, validation=validation)
    m = model.metrics
    assert (m["examples"], m["validation_examples"]) == (500, 100)  # explicit rows: no split
    assert m["validation_recall_per_epoch"] == [0.75]
    assert model.vocabs.user.get("stranger") == UNK and model.vocabs.item.get("gone") == UNK


def test_training_runs_on_the_configured_threads_and_gives_the_caller_its_own_back(monkeypatch):
    from training import train as train_module

    seen = []
    real = train_module._train

    def counting(*args):
        seen.append((torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()))
        return real(*args)

    monkeypatch.setattr(train_module, "_train", counting)
    examples, corpus = make_day(0, n_examples=100)
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        train(examples, corpus, replace(CFG, epochs=1, threads=2), validation=examples.slice(0, 0))
        # Deterministic kernels while training on the CPU, the caller's setting after.
        assert seen == [(2, True)] and torch.get_num_threads() == 3
        assert not torch.are_deterministic_algorithms_enabled()
    finally:
        torch.set_num_threads(before)


def test_a_day_retrains_to_the_same_weights_on_two_threads():
    examples, corpus = make_day(0, n_items=400, n_users=200, n_examples=3000)
    cfg = replace(CFG, dim=128, batch_size=256, sampled_negatives=256, epochs=1, threads=2)
    first, second = (
        train(examples, corpus, cfg, seed=3, validation=examples.slice(0, 0)).model.state_dict()
        for _ in range(2)
    )
    for name, weights in first.items():
        assert torch.equal(weights, second[name]), name


def test_settings_read_variants_and_early_stopping(monkeypatch):
    for name, value in {
        "EBR_QUERY_UNIT": "words",
        "EBR_PERSONALISED": "False",
        "EBR_LOSS": "hinge",
        "EBR_PATIENCE": "4",
        "EBR_VALIDATION_SHARE": "0.2",
        "EBR_MIN_VALIDATION": "500",
        "EBR_ITEM_IDS": "clicked",
        "EBR_USER_ID_DROPOUT": "0.25",
        "EBR_WORD_INIT": "random",
        "EBR_SAMPLING_CORRECTION": "none",
        "EBR_HARD_NEGATIVES": "16",
        "EBR_TRANSFORMER_UNIT_DROPOUT": "0.25",
        "EBR_TRAIN_THREADS": "2",
        "EBR_TRAIN_WORKERS": "3",
    }.items():
        monkeypatch.setenv(name, value)
    m = load_settings().model
    assert m.word_init == "random" and ModelConfig().word_init == "minilm"
    assert m.sampling_correction == "none" and ModelConfig().sampling_correction == "log_q"
    assert m.hard_negatives == 16 and ModelConfig().hard_negatives == 4
    assert (m.item_ids, m.user_id_dropout, m.item_id_dropout) == ("clicked", 0.25, 0.0)
    assert m.transformer_unit_dropout == 0.25
    assert m.threads == 2 and ModelConfig().threads == 1
    assert m.workers == 3 and ModelConfig().workers == 1
    assert m.min_validation == 500 and ModelConfig().min_validation == 200
    assert (m.query_unit, m.personalised, m.loss, m.patience, m.validation_share) == (
        "words",
        False,
        "hinge",
        4,
        0.2,
    )
    monkeypatch.setenv("EBR_TRAIN_THREADS", "0")
    with pytest.raises(ValueError, match="threads must be >= 1"):
        load_settings()
    monkeypatch.setenv("EBR_TRAIN_THREADS", "1")
    monkeypatch.setenv("EBR_TRAIN_WORKERS", "0")
    with pytest.raises(ValueError, match="workers must be >= 1"):
        load_settings()
    monkeypatch.setenv("EBR_TRAIN_WORKERS", "1")
    monkeypatch.setenv("EBR_PERSONALISED", "no")
    with pytest.raises(ValueError, match="EBR_PERSONALISED"):
        load_settings()
    monkeypatch.setenv("EBR_PERSONALISED", "true")
    monkeypatch.setenv("EBR_QUERY_UNIT", "chars")
    with pytest.raises(ValueError, match="query_unit"):
        load_settings()
    monkeypatch.setenv("EBR_QUERY_UNIT", "multi")
    monkeypatch.setenv("EBR_WORD_INIT", "glove")
    with pytest.raises(ValueError, match="word_init"):
        load_settings()
    monkeypatch.setenv("EBR_WORD_INIT", "random")
    monkeypatch.setenv("EBR_SAMPLING_CORRECTION", "logq")
    with pytest.raises(ValueError, match="sampling_correction"):
        load_settings()
    # The pretrained vectors are 384 wide: a wider model can only start words at random.
    with pytest.raises(ValueError, match="dim must be at most 384 with word_init 'minilm'"):
        ModelConfig(dim=512)
    assert ModelConfig(dim=512, word_init="random").dim == 512
    with pytest.raises(ValueError, match="transformer_unit_dropout must be in"):
        ModelConfig(transformer_unit_dropout=1.5)


def test_pool_log_q_counts_the_batch_draw_by_clicks_and_the_uniform_draw():
    # Four positives (their identities): item 3 twice, items 5 and 0 once. A step's pool holds
    # 2 of them and 4 uniform draws from a corpus of 8.
    log_q = pool_log_q(np.array([3, 5, 3, 0]), 7, batch=2, sampled=4, corpus=8)
    expected = np.full(7, 0.5)  # 4 / 8: the uniform draw alone
    expected[3] += 2 * 2 / 4
    expected[[5, 0]] += 2 * 1 / 4
    assert np.allclose(log_q.exp().numpy(), expected)


def test_log_q_gives_back_the_popular_item_what_the_batch_pool_takes(day):
    examples, corpus = day
    # Every query says nothing ("any") and i0 takes 60% of the clicks: the right ranking is
    # the click shares, i0 first with 0.6 of the probability.
    rnd = random.Random(0)
    items = corpus["item_id"].to_pylist()
    clicked = ["i0" if rnd.random() < 0.6 else rnd.choice(items[1:]) for _ in range(len(examples))]
    examples = examples.set_column(
        examples.schema.get_field_index("query"), "query", pa.array(["any"] * len(examples))
    ).set_column(examples.schema.get_field_index("item_id"), "item_id", pa.array(clicked))
    request = title_search(corpus).slice(0, 1)
    request = request.set_column(
        request.schema.get_field_index("query"), "query", pa.array(["any"])
    )
    share = {}
    for correction in ("none", "log_q"):
        cfg = replace(
            CFG, personalised=False, title_queries=0.0, epochs=4, sampling_correction=correction
        )
        model = train(examples, corpus, cfg, seed=0)
        scores = torch.from_numpy(model.encode_requests(request) @ model.encode_items(corpus).T)
        share[correction] = torch.softmax(scores[0] / cfg.tau, 0)[0].item()
    # In most pools i0 is another row's negative many times over: the plain softmax learns to
    # rank it below its click share; the correction gives that back (0.48 against 0.97 here:
    # past the share, as its copies leave its own rows' pools while its logit pays them all).
    assert share["none"] < 0.6 < share["log_q"]


def test_clicked_item_ids_leave_never_clicked_items_to_their_titles(day):
    examples, corpus = day
    # Two items no one clicks, with one title: with ids for every corpus item each gets its own
    # row, which training meets only as a sampled negative.
    twin = corpus["title"][0].as_py()
    cold = pa.table({"item_id": ["cold-a", "cold-b", "seen-c"], "title": [twin, twin, twin]})
    corpus = pa.concat_tables([corpus, cold])
    # seen-c is never a positive, but some users' real-time sequences hold it: clicked then.
    rt = [
        ["seen-c", *items] if r % 10 == 0 else items
        for r, items in enumerate(examples["rt_items"].to_pylist())
    ]
    examples = examples.set_column(
        examples.schema.get_field_index("rt_items"), "rt_items", pa.array(rt)
    )
    # Title queries (every round takes the unclicked items first) are asked of all three, and
    # give cold-a and cold-b no id row: they train the title alone.
    cfg = replace(CFG, item_ids="clicked", title_queries=0.5)
    model = train(examples, corpus, cfg, seed=0)
    assert model.vocabs.item.get("cold-a") == UNK  # neither the corpus nor a title query gave one
    vectors = model.encode_items(cold)
    np.testing.assert_array_equal(vectors[0], vectors[1])  # the title alone scores them
    # seen-c's row is the one training scored it with: the item tower trained it (sequences
    # read it without a gradient), where an unread row would add its random start.
    seen = model.vocabs.item.get("seen-c")
    torch.manual_seed(0)  # train() seeds torch with its seed right before building the model
    start = MGDSPR(model.config, model.vocabs.sizes()).emb["item"].weight[seen]
    assert not torch.equal(model.model.emb["item"].weight[seen], start)
    everyone = train(examples, corpus, replace(cfg, item_ids="corpus"), seed=0)
    assert everyone.vocabs.item.get("cold-a") != UNK
    assert not np.array_equal(*everyone.encode_items(cold)[:2])


def test_the_loss_tells_items_apart_by_item_id_not_by_id_row(day):
    examples, corpus = day
    cfg = replace(CFG, item_ids="clicked")
    items = features.items(corpus, Vocabs(), cfg, grow=False)  # no id rows: every one PAD
    assert set(items.item) == {PAD}
    picked = [3, 0, 3, 7]
    positives = features.positives(corpus.take(picked), np.full(4, PAD), items)
    pos_keys, item_keys = _identities(positives, items)
    assert len(set(item_keys)) == corpus.num_rows
    np.testing.assert_array_equal(pos_keys, item_keys[picked])


def test_id_dropout_trains_the_rows_unseen_users_and_cold_items_read(day):
    examples, corpus = day

    def initial(model):  # train() seeds torch with its seed right before building the model
        torch.manual_seed(0)
        return MGDSPR(model.config, model.vocabs.sizes())

    # Only the item tower trains the item table: the behaviour sequences read it as it is.
    for personalised in (False, True):
        cfg = replace(CFG, personalised=personalised, epochs=2)
        no_ids = train(examples, corpus, replace(cfg, item_id_dropout=1.0), seed=0)
        ids = train(examples, corpus, cfg, seed=0)
        start = initial(no_ids).emb["item"].weight
        assert torch.equal(no_ids.model.emb["item"].weight, start), personalised
        assert not torch.equal(ids.model.emb["item"].weight, start), personalised
        if personalised:  # the sequences were read all the same: their LSTM trained
            lstm = no_ids.model.rt_lstm.weight_ih_l0
            assert not torch.equal(lstm, initial(no_ids).rt_lstm.weight_ih_l0)
    # Every training user has an id: UNK, the row of every unseen user, trains only when ids
    # are dropped (or title queries, asked by no one, are added).
    cfg = replace(CFG, epochs=1, title_queries=0.0)
    for p, trains in ((0.0, False), (0.5, True)):
        model = train(examples, corpus, replace(cfg, user_id_dropout=p), seed=0)
        unk = model.model.emb["user"].weight[UNK]
        assert torch.equal(unk, initial(model).emb["user"].weight[UNK]) != trains, p
    # Without personalisation there is no user id to drop: the setting changes nothing.
    cfg = replace(cfg, personalised=False)
    kept, dropped = (
        train(examples, corpus, replace(cfg, user_id_dropout=p), seed=0) for p in (0, 1)
    )
    assert torch.equal(kept.model.emb["item"].weight, dropped.model.emb["item"].weight)


def test_title_queries_are_windows_of_titles_from_unknown_users(day):
    examples, corpus = day
    mixed, rounds = title_queries(examples, corpus, 0.1, seed=5)
    real, added = mixed.slice(0, examples.num_rows), mixed.slice(examples.num_rows)
    assert real.column("query").equals(examples.column("query"))
    assert added.num_rows == 60  # a tenth of 600 rows: more than the 40 items, so some twice
    assert rounds.tolist() == [0] * 60
    counts = Counter(added.column("item_id").to_pylist())
    assert set(counts) == set(corpus["item_id"].to_pylist()) and set(counts.values()) == {1, 2}
    titles = dict(zip(corpus["item_id"].to_pylist(), corpus["title"].to_pylist()))
    for row in added.to_pylist():
        words, title = row["query"].split(), titles[row["item_id"]].lower().split()
        assert 1 <= len(words) <= 3 and any(
            title[i : i + len(words)] == words for i in range(len(title))
        ), row
        assert row["user_id"] == "" and row["rt_items"] == [] and row["past_queries"] == []
    assert mixed.equals(title_queries(examples, corpus, 0.1, seed=5)[0])  # deterministic
    assert title_queries(examples, corpus, 0.0, seed=5)[0].num_rows == examples.num_rows


def test_each_round_of_title_queries_draws_items_where_the_last_left_off(day):
    examples, corpus = day
    mixed, rounds = title_queries(examples, corpus, 0.1, seed=5, rounds=3)
    assert rounds.tolist() == [0] * 60 + [1] * 60 + [2] * 60
    item_ids = np.array(mixed.column("item_id").to_pylist()[examples.num_rows :])
    # 40 items: two rounds of 60 draw every item exactly three times, whichever way it falls.
    assert set(Counter(item_ids[rounds < 2]).values()) == {3}
    first, _ = title_queries(examples, corpus, 0.1, seed=5)
    assert not mixed.slice(first.num_rows, 60).equals(first.slice(examples.num_rows))


def test_every_round_of_title_queries_draws_the_unclicked_items_first(day):
    examples, corpus = day
    cold = pa.table(
        {"item_id": [f"cold{k}" for k in range(20)], "title": [f"X{k} Y{k}" for k in range(20)]}
    )
    corpus = pa.concat_tables([corpus.select(["item_id", "title"]), cold])
    clicked = set(examples.column("item_id").to_pylist())
    unclicked = {i for i in corpus.column("item_id").to_pylist() if i not in clicked}
    assert len(unclicked) >= 20
    per_round = len(unclicked) + 10
    share = (per_round + 0.5) / examples.num_rows
    mixed, rounds = title_queries(examples, corpus, share, seed=5, rounds=3)
    drawn = np.array(mixed.column("item_id").to_pylist()[examples.num_rows :])
    assert rounds.tolist() == [0] * per_round + [1] * per_round + [2] * per_round
    for r in range(3):
        items = drawn[rounds == r].tolist()
        # Every unclicked item, then 10 rows drawn from the whole corpus, clicked items too.
        assert unclicked <= set(items) and len(items) == per_round
        assert any(i in clicked for i in items)


def test_title_queries_teach_the_words_of_items_no_one_clicked(day):
    examples, corpus = day
    # Ten items with words of their own, never clicked: only ever sampled negatives.
    cold = pa.table(
        {
            "item_id": [f"cold{k}" for k in range(10)],
            "title": [f"X{k} Y{k} Z{k}" for k in range(10)],
        }
    )
    corpus = pa.concat_tables([corpus, cold])
    cfg = replace(CFG, personalised=False)

    def ranks(share):
        model = train(examples, corpus, replace(cfg, title_queries=share), seed=0)
        scores = model.encode_requests(title_search(cold)) @ model.encode_items(corpus).T
        own = scores[np.arange(10), 40 + np.arange(10)]
        return (scores > own[:, None]).sum(1)  # items above the cold item for its own title

    without, with_titles = ranks(0.0), ranks(0.5)
    assert (with_titles < 3).mean() >= 0.8 and (without < 3).mean() <= 0.3, (without, with_titles)
