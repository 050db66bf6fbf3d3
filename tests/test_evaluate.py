"""A small end-to-end `ebr evaluate`: slices of the real Best Buy and CrowdFlower files and two
tiny synthetic days go through the importers, GE, dbt, training, Milvus and the report."""

import csv
import json
import shutil
from pathlib import Path

import pytest

from ebr import cli
from evaluation import harness, oracle

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not DATA.is_dir(), reason=f"the shared real data is not at {DATA}"),
]


def _slice_bestbuy(root: Path, last_day: str) -> int:
    """The clicks of the log's first days, in the real files' format (the split is by time)."""
    (root / "bestbuy").mkdir(parents=True)
    shutil.copy(DATA / "bestbuy" / "products_parsed.csv", root / "bestbuy")
    kept = 0
    for name in ("train.csv", "test.csv"):
        with (
            (DATA / "bestbuy" / name).open(newline="") as src,
            (root / "bestbuy" / name).open("w", newline="") as dst,
        ):
            reader = csv.DictReader(src)
            writer = csv.DictWriter(dst, reader.fieldnames)
            writer.writeheader()
            for row in reader:
                if row["query_time"][:10] <= last_day:
                    writer.writerow(row)
                    kept += 1
    return kept


def _slice_crowdflower(root: Path, queries: int) -> None:
    (root / "crowdflower").mkdir(parents=True)
    with (
        (DATA / "crowdflower" / "train.csv").open(newline="", encoding="utf-8") as src,
        (root / "crowdflower" / "train.csv").open("w", newline="", encoding="utf-8") as dst,
    ):
        reader = csv.DictReader(src)
        writer = csv.DictWriter(dst, reader.fieldnames, quoting=csv.QUOTE_ALL)
        writer.writeheader()
        chosen: list[str] = []
        for row in reader:
            if row["query"] not in chosen and len(chosen) < queries:
                chosen.append(row["query"])
            if row["query"] in chosen:
                writer.writerow(row)


def test_evaluate_writes_a_report_of_every_dataset(tmp_path, monkeypatch, capsys):
    data = tmp_path / "data"
    clicks = _slice_bestbuy(data, "2011-08-13")
    _slice_crowdflower(data, queries=24)
    home = tmp_path / "ebr"
    for name, value in {
        "EBR_HOME": str(home),
        "EBR_DIM": "16",
        "EBR_BATCH_SIZE": "64",
        "EBR_SAMPLED_NEGATIVES": "128",
        "EBR_START_DATE": "2026-01-01",
        "EBR_PATIENCE": "0",  # the daily DAG's: evaluation trains from scratch with its own
    }.items():
        monkeypatch.setenv(name, value)
    methods = ["popularity", "memorisation", "bm25", "mgdspr", "mgdspr-query-only"]
    monkeypatch.setattr(harness, "SWEEP", {"tau 2": {"tau": 2.0}})  # one setting: time
    cli.main(
        [
            "evaluate",
            "--data",
            str(data),
            "--epochs",
            "2",
            "--crowdflower-days",
            "2",
            "--crowdflower-sessions",
            "6",
            "--synthetic-days",
            "2",
            "--synthetic-profile",
            "tiny",
            "--sweep",
            *[a for m in methods for a in ("--method", m)],
        ]
    )

    out = home / "reports" / "eval"
    report = json.loads((out / "report.json").read_text())
    results = report["results"]
    assert set(results) == {"bestbuy", "crowdflower", "synthetic"}
    bestbuy = results["bestbuy"]
    # The time split: a fifth of the slice's clicks are tested, none of them trained on.
    assert bestbuy["facts"]["test"] == pytest.approx(
        0.2 * (clicks - bestbuy["facts"]["dropped_unknown_sku"]), abs=1
    )
    assert bestbuy["facts"]["train"] + bestbuy["facts"]["test"] <= clicks
    for dataset, result in results.items():
        # Only synthetic days have a generator whose hidden preferences an oracle can read.
        oracles = {oracle.ENGINE, oracle.ENGINE_AND_TIER} if dataset == "synthetic" else set()
        assert set(result["methods"]) == {*methods, "mgdspr via Milvus", *oracles}, dataset
        for name, method in result["methods"].items():
            recall = {int(k): v[0] for k, v in method["recall"].items()}
            assert all(0 <= r <= 1 for r in recall.values()), (dataset, name)
            assert recall[10] <= recall[50] <= recall[100], (dataset, name)  # monotone in K
        # The sweep trains on mgdspr's rows with its one change: tau 2 has other losses.
        swept, default = (
            result["sweep"]["tau 2"]["training"],
            result["methods"]["mgdspr"]["training"],
        )
        assert swept["examples"] == default["examples"]
        assert swept["loss_per_epoch"] != default["loss_per_epoch"], dataset
        assert result["config"]["patience"] == harness.Options().patience == 2, dataset
        trained = result["methods"]["mgdspr"]["training"]
        assert (
            1 <= trained["epochs"] <= 2
            and trained["examples"] == result["facts"]["train"] - trained["validation_examples"]
        )
    # Memorisation is exact on a query it saw: on Best Buy it must beat popularity.
    assert (
        bestbuy["methods"]["memorisation"]["recall"]["10"][0]
        > bestbuy["methods"]["popularity"]["recall"]["10"][0]
    )
    # Graded labels give relevance figures; held-out queries are never in training, so
    # memorisation falls back to popularity exactly.
    crowd = results["crowdflower"]["methods"]
    assert 0 <= crowd["bm25"]["ndcg@10"][0] <= 1 and 0 <= crowd["bm25"]["relevance_rate@10"][0] <= 1
    assert crowd["memorisation"]["recall"] == crowd["popularity"]["recall"]
    md = (out / "report.md").read_text()
    assert "## Targets" in md and "| mgdspr |" in md
    assert "the true brand preference adds" in md  # the synthetic target's headroom
    # The synthetic test split by the hidden tier of its clicks: disjoint, each with its recall.
    synthetic = results["synthetic"]
    tiers = [synthetic["subsets"][s] for s in (oracle.PREFERRED_TIER, oracle.OTHER_TIERS)]
    assert min(tiers) > 0 and sum(tiers) <= synthetic["facts"]["test"]
    assert f"R: {oracle.OTHER_TIERS}@50" in md and f"{oracle.OTHER_TIERS} {tiers[1]}" in md
    assert f"on {oracle.PREFERRED_TIER} mgdspr " in md  # the target's gap, split by tier
    # How far each ranking leans toward the user's tier: the true tier's oracle the most.
    share = {m: v["user's tier share@50"][0] for m, v in synthetic["methods"].items()}
    assert share[oracle.ENGINE_AND_TIER] > share[oracle.ENGINE] and 0 <= min(share.values())
    assert "| user's tier share@50 |" in md
    assert md.count("defaults sweep") == 3 and "| tau 2 |" in md and "| defaults (mgdspr) |" in md
    for dataset in results:
        assert (out / f"recall_{dataset}.png").stat().st_size > 1000
    assert "report:" in capsys.readouterr().out
