"""`ebr`: the command line of the EBR pipeline: synthetic logs, the demo, quality and cost reports,
what serves and its history, search, rollback, and documentation sites."""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import subprocess
import sys
import time
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from ebr.settings import Settings, load_settings

REPO = Path(__file__).resolve().parent.parent


def airflow_env(settings: Settings) -> dict[str, str]:
    """Airflow on SQLite under AIRFLOW_HOME, beside EBR_HOME, with this repo's DAGs."""
    env = dict(os.environ)
    env.setdefault("AIRFLOW_HOME", str(settings.home.parent / ".airflow"))
    env.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(REPO / "dags"))
    env.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    env.setdefault("AIRFLOW__COSMOS__ENABLE_TELEMETRY", "False")
    env["EBR_HOME"] = str(settings.home)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def _say(text: str) -> None:
    print(f"[ebr] {text}", flush=True)


def cmd_generate(args, settings: Settings) -> None:
    from ebr.synthetic import generate

    start = date.fromisoformat(args.start or settings.start_date)
    for path in generate(settings.landing, start, args.days, args.profile, settings.seed):
        _say(f"wrote {path}")


def _airflow_json(env: dict, *args: str) -> list[dict]:
    """The JSON rows an airflow CLI command prints (its warnings share stdout: skip them)."""
    out = subprocess.run(
        ["airflow", *args, "-o", "json"], env=env, capture_output=True, text=True
    ).stdout
    rows = [line for line in out.splitlines() if line.startswith("[{") or line == "[]"]
    return json.loads(rows[-1]) if rows else []


def _task_times(env: dict, logical_date: str) -> dict[str, float]:
    """Each task's duration in the latest run, read back from Airflow's metadata database."""
    runs = [
        r
        for r in _airflow_json(env, "dags", "list-runs", "ebr_daily")
        if str(r.get("logical_date", "")).startswith(logical_date)
    ]
    if not runs:
        return {}
    times = {}
    rows = _airflow_json(env, "tasks", "states-for-dag-run", "ebr_daily", runs[0]["run_id"])
    for row in sorted(rows, key=lambda r: r.get("start_date") or ""):  # pipeline order
        if row.get("start_date") and row.get("end_date"):
            times[row["task_id"]] = (
                datetime.fromisoformat(row["end_date"]) - datetime.fromisoformat(row["start_date"])
            ).total_seconds()
    return times


def logical_date_for(ds: str) -> str:
    """A daily data-interval run is dated by the end of its interval: day D runs as D+1."""
    return (date.fromisoformat(ds) + timedelta(days=1)).isoformat()


def run_day(ds: str, env: dict, log: Path) -> tuple[bool, float]:
    started = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.run(
            ["airflow", "dags", "test", "ebr_daily", logical_date_for(ds)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return proc.returncode == 0, time.perf_counter() - started


def cmd_demo(args, settings: Settings) -> None:
    env = airflow_env(settings)
    start = date.fromisoformat(settings.start_date)
    _say(
        f"state under {settings.home}, Airflow under {env['AIRFLOW_HOME']}, Milvus at {settings.milvus_uri}"
    )
    _say(
        f"1/4 generating {args.days} days of synthetic search logs (profile {args.profile}, seed {settings.seed})"
    )
    args.start = settings.start_date
    cmd_generate(args, settings)
    _say(f"2/4 migrating the Airflow metadata database (SQLite), pool {settings.airflow_pool}")
    subprocess.run(["airflow", "db", "migrate"], env=env, check=True, capture_output=True)
    subprocess.run(
        ["airflow", "pools", "set", settings.airflow_pool, "1", "one writer at a time"],
        env=env,
        check=True,
        capture_output=True,
    )
    log_dir = settings.home / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    for k in range(args.days):
        ds = (start + timedelta(days=k)).isoformat()
        log = log_dir / f"dags_test_{ds}.log"
        _say(f"3/4 day {ds}: airflow dags test ebr_daily {logical_date_for(ds)} (log: {log})")
        ok, seconds = run_day(ds, env, log)
        times = _task_times(env, logical_date_for(ds))
        dbt = [sec for task, sec in times.items() if task.startswith("transforms.")]
        for task, sec in times.items():
            if task == "check_marts" and dbt:  # the dbt tasks ran between the two checks
                print(
                    f"        {f'transforms ({len(dbt)} dbt run/test tasks)':<36} {sum(dbt):7.1f} s"
                )
            if not task.startswith("transforms."):
                print(f"        {task:<36} {sec:7.1f} s")
        gate_path = settings.report_day(ds) / "gate.json"
        if gate_path.exists():
            g = json.loads(gate_path.read_text())
            live = g["live_recall"][str(g["gate_k"])] if g["live_recall"] else None
            print(
                f"        gate: candidate v{g['candidate_version']} Recall@{g['gate_k']}="
                f"{g['candidate_recall'][str(g['gate_k'])]:.4f} live="
                f"{'none' if live is None else f'{live:.4f}'} floor={g['floor']} -> "
                f"{'PROMOTE' if g['passed'] else 'REFUSE: ' + '; '.join(g['reasons'])}"
            )
        _say(f"day {ds} {'succeeded' if ok else 'FAILED'} in {seconds:.0f} s")
    _say("4/4 what serves now")
    cmd_status(argparse.Namespace(json=False), settings)
    from ebr.client import RetrievalClient, sample_requests

    client = RetrievalClient(settings)
    for user, query in sample_requests(settings, n=3):
        result = client.search(query, user_id=user, k=5)
        print(f"\n  query {query!r} for user {user}:")
        for hit in result["results"]:
            print(f"    {hit['score']:8.3f}  {hit['item_id']:<8} {hit['title']}")


def status(settings: Settings) -> dict:
    from indexing import store
    from indexing.promote import history

    with store.connect(settings) as client:
        current = store.live(client, settings.alias)
        collections = store.ours(client)
    out: dict = {
        "alias": settings.alias,
        "milvus_uri": settings.milvus_uri,
        "collections": collections,
    }
    if current:
        gate = settings.report_day(current.ds) / "gate.json"
        out.update(
            collection=current.name,
            model_version=current.model_version,
            ds=current.ds,
            gate=json.loads(gate.read_text()) if gate.exists() else None,
            promotions=len(history(settings)),
        )
    return out


def cmd_status(args, settings: Settings) -> None:
    s = status(settings)
    if args.json:
        print(json.dumps(s, indent=2))
        return
    if "collection" not in s:
        print(f"alias {s['alias']}: not created yet (no promotion so far)")
        return
    g = s["gate"] or {}
    print(
        f"alias {s['alias']} -> {s['collection']} (model v{s['model_version']}, data day {s['ds']})"
    )
    if g:
        print(
            f"  gate: Recall@K candidate {g['candidate_recall']} live {g['live_recall']} "
            f"floor {g['floor']} margin {g['margin']} on {g['eval_requests']} of "
            f"{g.get('held_out_requests', g['eval_requests'])} held-out requests"
        )
    print(f"  collections: {', '.join(s['collections'])}")


def cmd_search(args, settings: Settings) -> None:
    from ebr.client import Filters, RetrievalClient

    filters = Filters(args.category, args.brand, args.price_min, args.price_max)
    result = RetrievalClient(settings).search(
        args.query, user_id=args.user, k=args.k, filters=filters
    )
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{result['alias']} -> {result['collection']} (model v{result['model_version']})")
    for hit in result["results"]:
        print(f"{hit['score']:8.3f}  {hit['item_id']:<10} {hit['title']}")


HISTORY_COLUMNS = (
    "time",
    "action",
    "collection",
    "model",
    "ds",
    "replaced",
    "previous",
    "recall@k cand/live",
    "code",
    "run_id",
    "user",
    "reason",
)


def _history_row(entry: dict) -> tuple[str, ...]:
    """One log entry as table cells; entries written before a field existed show "-"."""
    gate = entry.get("gate") or {}
    k = str(gate.get("k", ""))
    cand, live = (gate.get("candidate") or {}).get(k), (gate.get("live") or {}).get(k)
    recall = (
        f"@{k} {cand:.4f}/{'-' if live is None else f'{live:.4f}'}" if cand is not None else "-"
    )
    version = entry.get("model_version")
    cells = (
        entry["time"],
        entry["action"],
        entry.get("collection") or "(alias removed)",
        "-" if version is None else f"v{version}",
        entry.get("ds"),
        entry.get("replaced_collection"),
        entry.get("previous_collection"),
        recall,
        (entry.get("code_version") or "")[:12],
        entry.get("run_id"),
        entry.get("user"),
        entry.get("reason"),
    )
    return tuple(str(c) if c else "-" for c in cells)


def cmd_history(args, settings: Settings) -> None:
    from indexing.promote import history

    entries = history(settings)
    if args.json:
        print(json.dumps(entries, indent=2))
        return
    rows = [HISTORY_COLUMNS, *map(_history_row, entries)]
    widths = [max(len(row[c]) for row in rows) for c in range(len(HISTORY_COLUMNS))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


def cmd_rollback(args, settings: Settings) -> None:
    from ebr.stages import rollback
    from indexing.promote import RollbackRefused

    run_id = f"cli__{datetime.now().astimezone().isoformat(timespec='seconds')}"
    try:
        entry = rollback(
            settings, run_id, user=args.user or getpass.getuser(), reason=args.reason, to=args.to
        )
    except (ValueError, RollbackRefused) as e:
        sys.exit(f"ebr rollback: {e}")
    print(
        f"alias {entry['alias']} -> {entry['collection']} (model v{entry['model_version']}, data day "
        f"{entry['ds']}), was {entry['replaced_collection']}; run {run_id}"
    )


def cmd_evaluate(args, settings: Settings) -> None:
    from evaluation import harness, report
    from indexing.promote import code_version

    options = harness.Options(
        datasets=tuple(args.dataset or harness.DATASETS),
        methods=tuple(args.method or harness.METHODS),
        data_root=Path(args.data),
        max_epochs=args.epochs,
        crowdflower_days=args.crowdflower_days,
        crowdflower_sessions=args.crowdflower_sessions,
        synthetic_days=args.synthetic_days,
        synthetic_profile=args.synthetic_profile,
        sweep=args.sweep,
        seeds=tuple(args.seeds),
        daily=args.daily,
    )
    out = settings.reports / "eval"
    start = time.perf_counter()
    header: dict[str, Any] = {
        "command": "ebr " + " ".join(args.argv),
        "code_version": code_version(),
    }

    def keep(dataset: str, result: dict) -> None:
        # Each dataset's figures are kept as they come; the report is rebuilt from every dataset
        # measured so far, so `--dataset X` refreshes X's section and keeps the others.
        out.mkdir(parents=True, exist_ok=True)
        seconds = time.perf_counter() - start
        (out / f"{dataset}.json").write_text(
            json.dumps({**header, "seconds": seconds, "result": result}, default=str)
        )

    if not args.report_only:
        harness.evaluate(settings, options, on_result=keep)
    kept = {
        p.stem: json.loads(p.read_text())
        for p in sorted(out.glob("*.json"))
        if p.stem in harness.DATASETS
    }
    results = {d: kept[d]["result"] for d in harness.DATASETS if d in kept}
    header["runs"] = {
        d: {k: kept[d].get(k) for k in ("command", "code_version", "seconds")} for d in results
    }
    md = report.write(results, out, header)
    print(md.read_text().split("\n## ", 1)[0])  # the headline table
    _say(f"report: {md} (+ report.json and PNG plots beside it)")


def cmd_bench(args, settings: Settings) -> None:
    from benchmarks import report, run
    from ebr.synthetic import PROFILES
    from indexing.promote import code_version

    out = settings.reports / "bench"
    code = code_version()  # before the run: a commit made while it runs is not what it measured
    if not args.report_only:
        for profile in args.profile or run.DEFAULT_PROFILES:
            home = run.bench_settings(settings, profile).home
            _say(f"benchmarking {profile}: {args.days} days from an empty {home}")
            result = run.run(settings, profile, args.days, args.train_sample, args.fast_forward)
            # Each profile's figures are kept as they come; the report is rebuilt from every
            # profile measured so far, so `--profile X` refreshes X's section and keeps the others.
            out.mkdir(parents=True, exist_ok=True)
            (out / f"{profile}.json").write_text(
                json.dumps(
                    {
                        "command": "ebr " + " ".join(args.argv),
                        "code_version": code,
                        "result": result,
                    },
                    default=str,
                )
            )
    kept = {
        p.stem: json.loads(p.read_text()) for p in sorted(out.glob("*.json")) if p.stem in PROFILES
    }
    if not kept:
        sys.exit(f"ebr bench: no benchmark figures under {out}: run without --report-only first")
    header = {
        "runs": {p: {k: v for k, v in saved.items() if k != "result"} for p, saved in kept.items()}
    }
    md = report.write({p: saved["result"] for p, saved in kept.items()}, out, header)
    print(md.read_text().split("\n## Plots", 1)[0])
    _say(f"report: {md} (+ report.json and PNG plots beside it)")


def cmd_docs(args: argparse.Namespace, settings: Settings) -> None:
    from ebr.docs import NothingToDocument, build_dbt_docs, build_expectations_docs

    # GE logs every class it registers at INFO: hundreds of lines that say nothing here.
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    build = build_dbt_docs if args.what == "dbt" else build_expectations_docs
    try:
        index = build(settings)
    except (NothingToDocument, RuntimeError) as e:
        sys.exit(f"ebr docs {args.what}: {e}")
    if args.what == "dbt":
        _say("static_index.html beside index.html opens without a web server")
    print(index)


EPILOG = """\
Settings come from the environment (README, "Settings"): EBR_HOME (all state, default ./.ebr),
EBR_MILVUS_URI and EBR_MILVUS_TOKEN (Milvus Lite file or server), EBR_ALIAS (what services
query), the gate (EBR_RECALL_FLOOR, EBR_REGRESSION_MARGIN, EBR_GATE_K) and the model
(EBR_DIM, EBR_TAU, EBR_EPOCHS, ...). The daily pipeline itself runs in Airflow (dags/ebr_daily.py).

examples:
  ebr demo --days 3                         # synthetic days through the real DAG
  ebr status                                # what serves now
  ebr search "red shoes" --user u12 -k 20   # what a service gets
  ebr rollback --reason "bad ranking"       # serve the previous collection again
"""
PROFILES = ["tiny", "small", "medium", "large"]


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"a seed appears twice in {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    """The `ebr` command line: every subcommand, option and help text."""
    parser = argparse.ArgumentParser(
        prog="ebr",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "generate",
        help="write synthetic landing days (deterministic from EBR_SEED)",
        description="Writes EBR_HOME/landing/ds=DAY/{events,items}.parquet for each day, in the "
        "landing contract (docs/contracts.md); a day regenerates identically on its own.",
    )
    p.add_argument("--start", help="first day, YYYY-MM-DD (default EBR_START_DATE)")
    p.add_argument("--days", type=int, default=3, help="how many days (default 3)")
    p.add_argument(
        "--profile",
        default="small",
        choices=PROFILES,
        help="marketplace size (default small; medium ~1M events/day, large ~10M)",
    )
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser(
        "demo",
        help="generate logs and run the real ebr_daily DAG day by day",
        description="Generates synthetic days, migrates Airflow's database, creates the pool "
        "EBR_AIRFLOW_POOL and runs `airflow dags test ebr_daily` once per day: the same tasks "
        "the scheduler runs. Ends with what serves.",
    )
    p.add_argument("--days", type=int, default=3, help="how many days (default 3)")
    p.add_argument(
        "--profile", default="small", choices=PROFILES, help="marketplace size (default small)"
    )
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "evaluate",
        help="quality on real logs and synthetic data: MGDSPR, ablations "
        "and baselines on the same splits; report under EBR_HOME/reports/eval/",
    )
    p.add_argument(
        "--dataset",
        action="append",
        choices=["bestbuy", "crowdflower", "synthetic"],
        help="repeatable (default: all)",
    )
    p.add_argument(
        "--method",
        action="append",
        help="repeatable (default: all baselines, MGDSPR and its ablations)",
    )
    p.add_argument(
        "--data",
        default=str(REPO.parent / "shared" / "data"),
        help="folder holding bestbuy/ and crowdflower/",
    )
    p.add_argument("--epochs", type=int, default=6, help="most epochs per model (early stopping)")
    p.add_argument(
        "--daily",
        action="store_true",
        help="train day by day, each day warm from the last, as the daily DAG does (its epochs "
        "and patience; --epochs then does not apply)",
    )
    p.add_argument("--crowdflower-days", type=int, default=7, help="days the generated clicks span")
    p.add_argument(
        "--crowdflower-sessions", type=int, default=20, help="generated requests per training query"
    )
    p.add_argument(
        "--synthetic-days", type=int, default=3, help="synthetic days trained on (default 3)"
    )
    p.add_argument(
        "--sweep",
        action="store_true",
        help="also train MGDSPR with one default changed at a time (the defaults' evidence)",
    )
    p.add_argument(
        "--seeds",
        type=_ints,
        default=(),
        help="training seeds, e.g. 7,8,9: each trained method is trained once per seed and its "
        "figures averaged, each seed's kept (default: EBR_SEED alone)",
    )
    p.add_argument(
        "--report-only",
        action="store_true",
        help="rebuild the report from the figures kept in reports/eval/<dataset>.json",
    )
    p.add_argument(
        "--synthetic-profile",
        default="small",
        choices=PROFILES,
        help="synthetic marketplace size (default small)",
    )
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "bench",
        help="benchmark the real stages on synthetic days at marketplace sizes; report "
        "under EBR_HOME/reports/bench/",
        description="Generates synthetic days per profile into EBR_HOME/bench/<profile>/ (its own "
        "warehouse, models and Milvus Lite file, emptied first: never what serves), runs every "
        "stage of every day in its own process (wall time, throughput, peak memory), then the "
        "baselines (exact search, the machine's matrix-multiply FLOP/s, training from scratch, "
        "serving latency), and writes report.md, report.json and PNG plots under "
        "EBR_HOME/reports/bench/. Profiles: small (~95k events/day, 2k items), medium (~1M "
        "events/day, 200k items), large (~10M events/day, 1M items).",
    )
    p.add_argument(
        "--profile",
        action="append",
        choices=PROFILES,
        help="repeatable (default: small, medium and large)",
    )
    p.add_argument(
        "--days",
        type=int,
        default=3,
        help="days per profile (default 3; 3 or more extrapolates the day-30 cost, 30 measures it)",
    )
    p.add_argument(
        "--fast-forward",
        action="store_true",
        help="run every stage on days 1, 2 and the last only; the days between are landed and "
        "transformed in one dbt process (the last day's histories), not trained on, so the "
        "last day warm-starts from day 2's model: day 30's cost without 27 days of training",
    )
    p.add_argument(
        "--train-sample",
        type=int,
        metavar="N",
        help="train each day on its first N examples only (default: 100000 at large, "
        "where a whole day would train for hours on 2 cores; all examples elsewhere); "
        "the report gives the rate and the extrapolated full-day time",
    )
    p.add_argument(
        "--report-only",
        action="store_true",
        help="rebuild the report from the figures kept in reports/bench/<profile>.json",
    )
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser(
        "status", help="the live alias, its collection, model version, day and gate figures"
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser(
        "search",
        help="search the live alias with the model that built it",
        description="What a service gets from ebr.client.RetrievalClient: the alias resolved, "
        "the query encoded by the exported encoder of the model that built that collection, "
        "the user's behaviour from the warehouse, optional filters.",
    )
    p.add_argument("query", help="the search text")
    p.add_argument("--user", help="user id whose behaviour personalises the query")
    p.add_argument("-k", type=int, default=10, help="how many items (default 10)")
    p.add_argument("--category", help="only items of this leaf or top category")
    p.add_argument("--brand", help="only items of this brand")
    p.add_argument("--price-min", type=float, help="only items at this price or above")
    p.add_argument("--price-max", type=float, help="only items at this price or below")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser(
        "history",
        help="the promotion log: what served when, and why",
        description="Each promotion and rollback: time, collection, model version, data day, "
        "gate figures, code version, the run or user that did it, and why.",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_history)

    p = sub.add_parser(
        "rollback", help="move the alias back to the previous collection (or --to one)"
    )
    p.add_argument("--reason", required=True, help="why: kept in the promotion log")
    p.add_argument("--user", help="who asks (default: the OS user)")
    p.add_argument(
        "--to", help="collection items_<yyyymmdd>_v<N> to serve (default: the previous one)"
    )
    p.set_defaults(func=cmd_rollback)

    p = sub.add_parser(
        "docs",
        help="generate static documentation under EBR_HOME/docs/: dbt docs or GE Data Docs",
        description="Generates static documentation sites under EBR_HOME/docs/ and prints the "
        "path of the site's index.html. Both need a day run first (`make demo`, or one day "
        "through the DAG).",
    )
    docs = p.add_subparsers(dest="what", required=True, metavar="{dbt,expectations}")
    d = docs.add_parser(
        "dbt",
        help="`dbt docs generate` of transforms/ against the warehouse, into EBR_HOME/docs/dbt/",
        description="Runs the real `dbt docs generate --static` of the dbt project in transforms/ "
        "(same profile, target and environment as the transform stage; models compiled with the "
        "vars of the newest day in the warehouse) with target path EBR_HOME/docs/dbt/: "
        "index.html, static_index.html (opens from file:// without a web server), manifest.json "
        "and catalog.json (every model's columns and types as they are in the warehouse). "
        "Fails when the warehouse does not exist or holds no transformed day yet.",
    )
    d.set_defaults(func=cmd_docs)
    d = docs.add_parser(
        "expectations",
        help="Great Expectations Data Docs of the checked days, into EBR_HOME/docs/expectations/",
        description="Builds Great Expectations Data Docs in EBR_HOME/docs/expectations/ (rebuilt "
        "from scratch) from the validation results the landing and mart checks kept under "
        "EBR_HOME/reports/ds=DAY/ge/: one page per suite (its expectations, as validated) and "
        "one per validation result, listed by day. Nothing is validated again. Fails when no "
        "day has been checked yet.",
    )
    d.set_defaults(func=cmd_docs)

    return parser


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    args.func(args, load_settings())


if __name__ == "__main__":
    main()
