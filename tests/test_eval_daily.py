"""`ebr evaluate --daily`: a method trained as the daily DAG trains it, day by day, each day warm
from the model of the day before, with the rows that model held out, at the DAG's epochs and
patience (not the evaluation's)."""

from dataclasses import replace
from datetime import date, timedelta

import duckdb
import pyarrow as pa
from test_training import EVENINGS, make_day

import training.train
from ebr.settings import ModelConfig, load_settings
from evaluation import harness
from training.vocab import UNK


def test_daily_trains_each_day_warm_from_the_day_before_at_the_dags_settings(tmp_path, monkeypatch):
    days = [date(2024, 3, 1), date(2024, 3, 2), date(2024, 3, 3)]
    tables, corpora = [], []
    for k, ds in enumerate(days):
        # 600 rows a day: 10% of them, early stopping's share, is enough to validate on
        rows, corpus = make_day(seed=5 + k, n_items=20, n_examples=600, prefix=f"d{k}")
        tables.append(rows.append_column("ds", pa.array([ds] * len(rows), pa.date32())))
        corpora.append(corpus)
    train = pa.concat_tables(tables[::-1])  # days out of order: the harness sorts them
    test = tables[-1].slice(0, 20)
    task = harness.Task(
        dataset="synthetic",
        ds=days[-1].isoformat(),
        train=train,
        corpus=pa.concat_tables(corpora),
        test=test,
        relevant=[{i} for i in test.column("item_id").to_pylist()],
    )
    calls = []
    real = training.train.train

    def recorded(rows, corpus, cfg, base=None, seed=0, **kwargs):
        out = real(rows, corpus, cfg, base, seed=seed, **kwargs)
        calls.append((set(rows.column("ds").to_pylist()), base, out, cfg, rows))
        return out

    monkeypatch.setattr(training.train, "train", recorded)
    dag = ModelConfig(
        dim=16,
        heads=2,
        batch_size=64,
        sampled_negatives=32,
        hard_negatives=4,
        epochs=2,
        patience=1,
        min_validation=50,
    )
    settings = replace(load_settings(), home=tmp_path, model=dag)
    options = harness.Options(methods=("mgdspr-query-only",), seeds=(1,), max_epochs=5, daily=True)
    scored = harness._score(task, settings, options)

    # Each day after the first starts with the rows the model of the day before held out.
    assert [c[0] for c in calls] == [{days[0]}, set(days[:2]), set(days[1:])]
    for before, after in zip(calls, calls[1:]):
        held = before[2].metrics["validation_examples"]
        assert held > 0
        assert after[4].slice(0, held).equals(before[4].slice(before[4].num_rows - held))
    assert calls[0][1] is None
    assert all(calls[k][1] is calls[k - 1][2] for k in range(1, len(days)))
    assert all((c[3].epochs, c[3].patience) == (2, 1) for c in calls)  # the DAG's, not 5 and 2
    assert (scored["config"]["epochs"], scored["config"]["patience"]) == (2, 1)
    # Warm starts grow the vocabularies: the last model knows the first day's users too.
    first_users = set(tables[0].column("user_id").to_pylist())
    assert all(calls[-1][2].vocabs.user.get(u) != UNK for u in first_users)


def test_every_evening_but_the_last_trains_the_day_after(tmp_path):
    # Two days of rows before 20:00 and their evenings: the first evening is the second day's
    # to learn (as train_day reads it), the last is the test, which nothing learns.
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    for k, ds in enumerate([date(2024, 3, 1), date(2024, 3, 2)]):
        for name, n, hours in (("day", 40, 0), ("eve", 10, 20)):
            rows, _ = make_day(seed=10 * k + hours, n_examples=n, prefix=f"{name}{k}")
            later = timedelta(days=k, hours=hours)
            times = pa.array([t + later for t in rows["request_time"].to_pylist()])
            rows = rows.set_column(
                rows.schema.get_field_index("request_time"), "request_time", times
            )
            con.register(f"{name}{k}", rows.append_column("ds", pa.array([ds] * n, pa.date32())))
    con.execute(
        "create table mart_training_examples as select *, 'click' as label_event from day0 "
        "union all select *, 'click' as label_event from day1"
    )
    con.execute(EVENINGS.format(source="(select * from eve0 union all select * from eve1)"))
    evening = con.sql("select item_id from eve0 order by request_time").fetchall()
    con.close()

    train = harness._examples(replace(load_settings(), home=tmp_path))
    ids = train.column("request_id").to_pylist()
    assert ids == [
        f"{name}r{r}" for name, n in (("day0", 40), ("eve0", 10), ("day1", 40)) for r in range(n)
    ]
    assert train.column("ds").to_pylist() == [date(2024, 3, 1)] * 40 + [date(2024, 3, 2)] * 50
    assert train.column("item_id").to_pylist()[40:50] == [i for (i,) in evening]
    assert train.column("label_event").null_count == 10  # an evening row's strongest is unknown
