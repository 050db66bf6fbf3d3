"""A regressed model is never promoted: a day of poisoned logs, a candidate with damaged
weights, or a collection that does not hold the gated model's vectors, is refused by the real
recall gate and the alias stays where it was.

Three tiny synthetic days run through the real stage functions (GE, dbt, training, Milvus Lite)."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch

from ebr import stages
from ebr.synthetic import generate
from indexing import store
from indexing.promote import GateRefused, history
from training.artifact import load_artifact

pytestmark = [pytest.mark.slow, pytest.mark.reliability]
DAY1, DAY2, DAY3 = "2026-01-01", "2026-01-02", "2026-01-03"


def _through_the_gate(ds: str, settings) -> dict:
    stages.check_landing(ds, settings)
    stages.transform(ds, settings)
    stages.check_marts(ds, settings)
    version = stages.train(ds, settings)
    stages.build_index(ds, version, settings)
    return stages.gate(ds, version, settings)


def _poison_training_hours(day_folder, eval_start_hour: int, seed: int) -> int:
    """Every click, cart and purchase before the held-out hours points at a random catalogue
    item (bot traffic, a broken click tracker): valid ids, so the landing checks pass."""
    events = pq.read_table(day_folder / "events.parquet")
    items = (
        pq.read_table(day_folder / "items.parquet").column("item_id").to_numpy(zero_copy_only=False)
    )
    hour = pc.hour(events["event_time"])
    poisoned = pc.and_(
        pc.is_in(events["event_type"], pa.array(["click", "cart", "purchase"])),
        pc.less(hour, eval_start_hour),
    ).to_numpy(zero_copy_only=False)
    ids = events["item_id"].to_numpy(zero_copy_only=False).copy()
    ids[poisoned] = np.random.default_rng(seed).choice(items, int(poisoned.sum()))
    column = events.schema.get_field_index("item_id")
    pq.write_table(
        events.set_column(column, "item_id", pa.array(ids, pa.string())),
        day_folder / "events.parquet",
    )
    return int(poisoned.sum())


def _assert_refused_and_alias_kept(settings, ds: str, report: dict) -> None:
    k = settings.gate_k
    assert not report["passed"] and any("regresses" in r for r in report["reasons"]), report
    assert report["candidate_recall"][k] < report["live_recall"][k] - settings.regression_margin
    with pytest.raises(GateRefused, match="unchanged"):
        stages.promote(ds, settings, run_id=f"daily__{ds}")
    with store.connect(settings) as client:
        assert store.live(client, settings.alias).name == store.collection_name(DAY1, 1)
    assert [e["action"] for e in history(settings)] == ["promote"]


def test_poisoned_logs_and_damaged_weights_are_refused(settings):
    """Day one is promoted; day two's logs are poisoned; day three's candidate is corrupted, then
    gated with good weights against the collection the corrupted one built."""
    settings = replace(settings, recall_floor=0.05).with_model(
        dim=32,
        batch_size=64,
        epochs=12,
        title_queries=0.5,  # the default 2: 2x the rows, slower
    )
    days = generate(settings.landing, date(2026, 1, 1), 3, "tiny", settings.seed)
    first = _through_the_gate(DAY1, settings)
    assert first["passed"] and first["index_agreement"] >= settings.min_index_agreement
    stages.promote(DAY1, settings, run_id="daily__1")

    assert _poison_training_hours(days[1], settings.eval_start_hour, seed=3) > 100
    _assert_refused_and_alias_kept(settings, DAY2, _through_the_gate(DAY2, settings))

    for stage in (stages.check_landing, stages.transform, stages.check_marts):
        stage(DAY3, settings)
    version = stages.train(DAY3, settings)
    artifact = load_artifact(settings.models / f"v{version}")
    with torch.no_grad():  # a corrupted checkpoint: every weight replaced by noise of its scale
        for tensor in artifact.model.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(torch.randn_like(tensor) * tensor.std().nan_to_num(1.0))
    artifact.save(settings.models, version, DAY3)
    stages.build_index(DAY3, version, settings)
    _assert_refused_and_alias_kept(settings, DAY3, stages.gate(DAY3, version, settings))

    # v3 now holds day one's good weights, its collection still the damaged model's vectors: the
    # model's recall matches the live one's, and the index check refuses what would serve.
    load_artifact(settings.models / "v1").save(settings.models, version, DAY3)
    report = stages.gate(DAY3, version, settings)
    k = settings.gate_k
    assert report["candidate_recall"][k] == pytest.approx(report["live_recall"][k])
    assert report["index_agreement"] < 0.5 and not report["passed"], report
    assert [r for r in report["reasons"] if "does not serve" in r] == report["reasons"], report
    with pytest.raises(GateRefused, match="unchanged"):
        stages.promote(DAY3, settings, run_id=f"daily__{DAY3}")
    with store.connect(settings) as client:
        assert store.live(client, settings.alias).name == store.collection_name(DAY1, 1)

    from milvus_lite.server_manager import server_manager_instance

    server_manager_instance.release_server(settings.milvus_uri)
