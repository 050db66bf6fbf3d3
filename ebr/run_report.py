"""The report of one day's run, for a person: what came in, how training went, what the gate saw,
what serves now. Written by the DAG's last task whatever happened before it (a refused or failed
day is when it is read most), from the JSON the stages left in reports/ds=DAY/ and the model's
metadata: report.md beside recall.png and training.png.
"""

from __future__ import annotations

import json
from pathlib import Path

from ebr.settings import Settings

REPORT = "report.md"


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _int_keys(figures: dict | None) -> dict[int, float] | None:
    return {int(k): v for k, v in figures.items()} if figures else None


def _candidate_meta(settings: Settings, gate: dict | None, ds: str) -> dict | None:
    """The day's model: the gate's candidate, else the newest artifact trained on the day."""
    metas = (
        [_read(p / "meta.json") for p in settings.models.glob("v*")]
        if settings.models.is_dir()
        else []
    )
    days = [m for m in metas if m is not None and m["ds"] == ds]
    if gate:
        days = [m for m in days if m["version"] == gate["candidate_version"]] or days
    return max(days, key=lambda m: m["version"]) if days else None


def write(ds: str, settings: Settings, run_id: str) -> Path:
    """Writes reports/ds=DAY/report.md (+ PNGs) and returns its path."""
    day = settings.report_day(ds)
    day.mkdir(parents=True, exist_ok=True)
    landing, marts = _read(day / "dq_landing.json"), _read(day / "dq_marts.json")
    gate, canary = _read(day / "gate.json"), _read(day / "canary.json")
    meta = _candidate_meta(settings, gate, ds)
    from indexing.promote import history  # no Milvus connection: the promotion log says what serves

    moves = history(settings)
    serving = moves[-1] if moves else None
    promoted_today = [m for m in moves if m["run_id"] == run_id]

    lines = [
        f"# ebr_daily, data day {ds}",
        "",
        f"Run `{run_id}`. {_outcome(gate, promoted_today, canary)}",
        "",
    ]
    lines += _quality(landing, marts)
    lines += _training(meta, day)
    lines += _gate(gate, day)
    if canary:
        lines += [
            "## Canary",
            "",
            f"{'passed' if canary['passed'] else 'FAILED'}: {canary['requests']} held-out "
            f"requests through the serving client{': ' + '; '.join(canary['problems']) if canary['problems'] else ''}.",
            "",
        ]
    lines += ["## Serving now", ""]
    lines += [
        f"Alias `{serving['alias']}` -> `{serving['collection']}` (model v{serving['model_version']}, data "
        f"day {serving['ds']}), since {serving['time']} ({serving['action']} by `{serving['run_id']}`)."
        if serving and serving["collection"]
        else "Nothing serves yet.",
        "",
    ]
    path = day / REPORT
    path.write_text("\n".join(lines))
    return path


def _outcome(gate: dict | None, promoted: list[dict], canary: dict | None) -> str:
    if gate is None:
        return (
            "**Stopped before the gate** (see the failed task's log and the data quality section)."
        )
    if not gate["passed"]:
        return f"**Refused by the gate**: {'; '.join(gate['reasons'])}. The alias did not move."
    if canary and not canary["passed"]:
        return "**Promoted, then moved back by the canary.**"
    # A rerun of a day keeps its run id: only a promotion of this very candidate counts.
    if any(
        m["action"] == "promote" and m["collection"] == gate["candidate_collection"]
        for m in promoted
    ):
        return f"**Promoted** `{gate['candidate_collection']}`."
    return "Blessed, **not promoted** (older than the live model's day, or promotion did not run)."


def _quality(landing: dict | None, marts: dict | None) -> list[str]:
    lines = [
        "## Data volumes and quality",
        "",
        "| check | table | rows | expectations | failed |",
        "|---|---|---|---|---|",
    ]
    for name, summary in (("landing", landing), ("marts", marts)):
        if summary is None:
            lines.append(f"| {name} | – | – | not run | – |")
            continue
        for table, report in summary["tables"].items():
            failed = report["expectations_evaluated"] - report["expectations_successful"]
            lines.append(
                f"| {name} | {table} | {report['rows']:,} | {report['expectations_evaluated']} | {failed} |"
            )
    failures = [
        f
        for s in (landing, marts)
        if s
        for f in (line for t in s["tables"].values() for line in t["failures"])
    ]
    return lines + [""] + [f"- {f}" for f in failures] + ([""] if failures else [])


def _training(meta: dict | None, day: Path) -> list[str]:
    if meta is None:
        return ["## Training", "", "No model was trained on this day.", ""]
    m = meta["metrics"]
    lines = [
        "## Training",
        "",
        f"Model v{meta['version']}, warm-started from "
        f"{'v' + str(meta['parent']) if meta.get('parent') else 'scratch'}: {m.get('examples', '?')} examples, "
        f"{m['epochs']} epochs (best {m.get('best_epoch', '?')}{', stopped early' if m.get('stopped_early') else ''}), "
        f"{m['examples_per_s']:.0f} examples/s.",
        "",
    ]
    if m.get("loss_per_epoch"):
        _plot_training(
            m["loss_per_epoch"], m.get("validation_recall_per_epoch") or [], day / "training.png"
        )
        lines += ["![training](training.png)", ""]
    return lines


def _gate(gate: dict | None, day: Path) -> list[str]:
    if gate is None:
        return ["## Gate", "", "Not reached.", ""]
    cand = _int_keys(gate["candidate_recall"]) or {}
    live = _int_keys(gate["live_recall"])
    lines = [
        "## Gate",
        "",
        f"{gate['eval_requests']} of the day's {gate.get('held_out_requests', gate['eval_requests'])}"
        " held-out requests (a fixed sample, at most EBR_GATE_REQUESTS), each model retrieving"
        " by exact search over "
        f"the day's corpus; decides on Recall@{gate['gate_k']}: floor {gate['floor']}, allowed "
        f"drop against live {gate['margin']}. The candidate's collection returned "
        f"{gate['index_agreement']:.1%} of exact search's top-{gate['gate_k']} on "
        f"{gate['index_requests']} requests (at least {gate['min_index_agreement']:.0%} needed).",
        "",
        f"| K | candidate v{gate['candidate_version']} | live "
        f"{'v' + str(gate['live_version']) if live else '(none)'} |",
        "|---|---|---|",
    ]
    lines += [
        f"| {k} | {cand[k]:.4f} | {live[k]:.4f} |" if live else f"| {k} | {cand[k]:.4f} | – |"
        for k in sorted(cand)
    ]
    _plot_recall(cand, live, gate, day / "recall.png")
    return lines + ["", "![recall](recall.png)", ""]


def _plot_training(losses: list[float], recalls: list[float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, loss_axis = plt.subplots(figsize=(6, 3.5))
    epochs = range(1, len(losses) + 1)
    loss_axis.plot(epochs, losses, "o-", color="tab:blue", label="training loss")
    loss_axis.set(xlabel="epoch", ylabel="loss", xticks=list(epochs))
    if recalls:
        recall_axis = loss_axis.twinx()
        recall_axis.plot(
            range(1, len(recalls) + 1),
            recalls,
            "s--",
            color="tab:orange",
            label="validation recall",
        )
        recall_axis.set_ylabel("validation recall")
    fig.legend(loc="upper center", ncol=2, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_recall(
    cand: dict[int, float], live: dict[int, float] | None, gate: dict, path: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = sorted(cand)
    fig, axis = plt.subplots(figsize=(6, 3.5))
    axis.plot(ks, [cand[k] for k in ks], "o-", label=f"candidate v{gate['candidate_version']}")
    if live:
        axis.plot(ks, [live[k] for k in ks], "s--", label=f"live v{gate['live_version']}")
    axis.axhline(gate["floor"], color="grey", linewidth=0.8, label="floor")
    axis.set(xscale="log", xlabel="K", ylabel="Recall@K", ylim=(0, 1), title=f"ds={gate['ds']}")
    axis.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
