"""The evaluation report: report.json (everything), report.md (the tables a person reads), PNG plots.

Figures are "mean ± standard error" over test requests (or held-out queries). Targets and the
paper's claims are checked here from the measured figures and written down whether met or not.
"""

from __future__ import annotations

import json
from pathlib import Path

from evaluation.oracle import ENGINE, ENGINE_AND_TIER, OTHER_TIERS, PREFERRED_TIER

RECALL_K = 10  # the headline cut-off for click logs
SYNTHETIC_K = 50
BASELINE_METHODS = ("popularity", "memorisation", "bm25", "minilm", "two-tower-hinge")
# Plot lines: baselines dashed, the synthetic oracles (references, not methods) dotted.
LINES = {**dict.fromkeys(BASELINE_METHODS, "--"), ENGINE: ":", ENGINE_AND_TIER: ":"}
# The figures the targets are about, as the main and seeds tables show them: (dataset, metric,
# K or None, column).
HEADLINES = [
    ("bestbuy", "recall", RECALL_K, f"Best Buy R@{RECALL_K}"),
    ("bestbuy", "recall: unseen query", RECALL_K, f"Best Buy unseen R@{RECALL_K}"),
    ("crowdflower", "relevance_rate@10", None, "CrowdFlower rel@10"),
    ("crowdflower", "ndcg@10", None, "CrowdFlower nDCG@10"),
    ("synthetic", "recall", SYNTHETIC_K, f"Synthetic R@{SYNTHETIC_K}"),
]
SOURCES = {
    "bestbuy": "Best Buy mobile search click log (Kaggle, ACM SF Bay Area Chapter hackathon, 2012)",
    "crowdflower": "CrowdFlower Search Results Relevance (Kaggle, 2015)",
    "synthetic": "the project's synthetic marketplace (ebr.synthetic, seeded)",
}


def write(results: dict, out: Path, header: dict) -> Path:
    """Writes out/report.{json,md} and out/*.png; returns the Markdown path."""
    out.mkdir(parents=True, exist_ok=True)
    results = _int_keys(results)  # figures read back from JSON have "10" where K was 10
    checks = {"targets": targets(results), "paper": paper_claims(results)}
    (out / "report.json").write_text(
        json.dumps({**header, "results": results, **checks}, indent=2, default=str)
    )
    plots = _plots(results, out)
    md = out / "report.md"
    md.write_text(markdown(results, header, checks, plots))
    return md


def _int_keys(value):
    if isinstance(value, dict):
        return {
            int(k) if isinstance(k, str) and k.isdigit() else k: _int_keys(v)
            for k, v in value.items()
        }
    return value


# --- reading figures ---------------------------------------------------------------------------


def _get(results: dict, dataset: str, method: str, metric: str, k: int | None = None):
    """(mean, se) of a metric, or None where that dataset or method was not run."""
    try:
        return _pick(results[dataset]["methods"][method], metric, k)
    except (KeyError, TypeError):
        return None


def _by_seed(results: dict, dataset: str, method: str, metric: str, k: int | None = None):
    """{seed: mean} of a metric where the method was trained with more than one seed, else None."""
    try:
        seeds = results[dataset]["methods"][method]["seeds"]
        return {s: _pick(figures, metric, k)[0] for s, figures in seeds.items()}
    except (KeyError, TypeError):
        return None


def _pick(figures: dict, metric: str, k: int | None) -> tuple:
    """(mean, se) of a metric in one method's (or one seed's) figures: at K where it has one."""
    value = figures[metric]
    return tuple(value[k] if k is not None else value)


def _fmt(value) -> str:
    if value is None:
        return "–"
    mean, se = value
    return f"{mean:.4f} ± {se:.4f}"


# --- targets and claims ------------------------------------------------------------------------


def targets(results: dict) -> list[dict]:
    """The issue's quality targets: each with the figure, the best competitor and the gap."""
    rows = []

    def beat(name, dataset, metric, k, rivals, note=""):
        ours = _get(results, dataset, "mgdspr", metric, k)
        others = {r: _get(results, dataset, r, metric, k) for r in rivals}
        others = {r: v for r, v in others.items() if v is not None}
        if ours is None or not others:
            return
        best = max(others, key=lambda r: others[r][0])
        gap = ours[0] - others[best][0]
        # Seed by seed: against the rival's same seed where it trains too, else its one figure.
        ours_by_seed = _by_seed(results, dataset, "mgdspr", metric, k)
        rival_by_seed = _by_seed(results, dataset, best, metric, k) or {}
        if ours_by_seed:
            gaps = ", ".join(
                f"{s} {v - rival_by_seed.get(s, others[best][0]):+.4f}"
                for s, v in ours_by_seed.items()
            )
            note = f"gap by seed: {gaps}" + (f"; {note}" if note else "")
        rows.append(
            {
                "target": name,
                "mgdspr": ours,
                "best_rival": best,
                "rival": others[best],
                "gap": gap,
                "met": gap > 0,
                "note": note,
            }
        )

    beat(
        f"Best Buy Recall@{RECALL_K} > every baseline",
        "bestbuy",
        "recall",
        RECALL_K,
        BASELINE_METHODS,
    )
    beat(
        f"Best Buy Recall@{RECALL_K} on unseen queries > every baseline",
        "bestbuy",
        "recall: unseen query",
        RECALL_K,
        BASELINE_METHODS,
    )
    beat(
        "CrowdFlower relevance rate@10 > BM25 and MiniLM",
        "crowdflower",
        "relevance_rate@10",
        None,
        ("bm25", "minilm"),
    )
    beat(
        "CrowdFlower nDCG@10 > BM25 and MiniLM", "crowdflower", "ndcg@10", None, ("bm25", "minilm")
    )
    beat(
        f"Synthetic Recall@{SYNTHETIC_K}: personalised > query-only",
        "synthetic",
        "recall",
        SYNTHETIC_K,
        ("mgdspr-query-only",),
        _headroom(results, SYNTHETIC_K),
    )
    return rows


def _headroom(results: dict, k: int) -> str:
    """What the generator's true preferences add to the query alone at K (evaluation.oracle):
    the most a personalised model could be expected to gain there; then the same split by the
    tier of the test clicks, where the gain and the cost of leaning toward a tier fall."""
    engine, personal = (
        _get(results, "synthetic", m, "recall", k) for m in (ENGINE, ENGINE_AND_TIER)
    )
    if engine is None or personal is None:
        return ""
    note = (
        f"the true brand preference adds {personal[0] - engine[0]:+.4f} to the engine's own "
        f"ranking at K={k} ({ENGINE_AND_TIER} {_fmt(personal)} vs {_fmt(engine)})"
    )
    for subset in (PREFERRED_TIER, OTHER_TIERS):
        metric = f"recall: {subset}"
        figures = {
            m: _get(results, "synthetic", m, metric, k)
            for m in ("mgdspr", "mgdspr-query-only", ENGINE, ENGINE_AND_TIER)
        }
        if None in figures.values():
            continue
        ours, query_only, lexical, told = (v[0] for v in figures.values())
        note += (
            f"; on {subset} mgdspr {_fmt(figures['mgdspr'])} vs query-only "
            f"{_fmt(figures['mgdspr-query-only'])} ({ours - query_only:+.4f}; the true "
            f"preference {told - lexical:+.4f})"
        )
    return note


def paper_claims(results: dict) -> list[dict]:
    """The paper: tau > 1 and hard negatives raise relevance at a small recall cost; softmax
    beats hinge in recall and in convergence speed. Each compared on our figures."""
    claims = []
    # Each delta is the method with the claim's setting minus the one without: for tau the
    # variant holds it (the defaults train at tau 1), for hard negatives the defaults do.
    for name, ours, theirs in (
        ("tau = 2 vs tau = 1", "mgdspr-tau2", "mgdspr"),
        ("hard-negative mixing vs none", "mgdspr", "mgdspr-no-hard-negatives"),
    ):
        rel = _delta(results, "crowdflower", ours, theirs, "relevance_rate@10", None)
        recalls = {
            d: _delta(results, d, ours, theirs, "recall", RECALL_K)
            for d in ("bestbuy", "crowdflower")
        }
        if rel is None and all(v is None for v in recalls.values()):
            continue
        agrees = None if rel is None else rel > 0  # the claim is about relevance: graded labels
        claims.append(
            {
                "claim": f"{name}: relevance up, small recall cost",
                "relevance_rate@10 delta (crowdflower)": rel,
                "by seed": _delta_by_seed(
                    results, "crowdflower", ours, theirs, "relevance_rate@10"
                ),
                **{f"Recall@{RECALL_K} delta ({d})": v for d, v in recalls.items()},
                "agrees": agrees,
            }
        )
    rec = {d: _delta(results, d, "mgdspr", "mgdspr-hinge", "recall", RECALL_K) for d in results}
    rec = {d: v for d, v in rec.items() if v is not None}
    if rec:
        speed = {d: _first_epoch_gap(results, d) for d in rec}
        claims.append(
            {
                "claim": "softmax beats hinge in recall and convergence speed",
                **{f"Recall@{RECALL_K} delta ({d})": v for d, v in rec.items()},
                **{f"validation recall after epoch 1 delta ({d})": v for d, v in speed.items()},
                "agrees": all(v > 0 for v in rec.values())
                and all(v is not None and v > 0 for v in speed.values()),
            }
        )
    return claims


def _delta(results, dataset, ours, theirs, metric, k):
    a, b = (_get(results, dataset, m, metric, k) for m in (ours, theirs))
    return None if a is None or b is None else a[0] - b[0]


def _delta_by_seed(results, dataset, ours, theirs, metric, k=None) -> str | None:
    """ours minus theirs seed by seed, where both trained with the same seeds."""
    a, b = (_by_seed(results, dataset, m, metric, k) for m in (ours, theirs))
    if not a or not b or a.keys() != b.keys():
        return None
    return ", ".join(f"{s} {a[s] - b[s]:+.4f}" for s in a)


def _first_epoch_gap(results, dataset):
    """Softmax minus hinge validation recall after the first epoch: who learns faster."""
    try:
        soft = results[dataset]["methods"]["mgdspr"]["training"]["validation_recall_per_epoch"][0]
        hinge = results[dataset]["methods"]["mgdspr-hinge"]["training"][
            "validation_recall_per_epoch"
        ][0]
    except (KeyError, IndexError, TypeError):
        return None
    return soft - hinge


# --- Markdown ----------------------------------------------------------------------------------


def markdown(results: dict, header: dict, checks: dict, plots: list[str]) -> str:
    lines = [
        "# Retrieval quality: MGDSPR against baselines, with ablations",
        "",
        *[
            f"- {d}: `{r['command']}` at code {r['code_version'][:12]}, {r.get('seconds') or 0:.0f} s "
            "on this machine"
            for d, r in header.get("runs", {}).items()
        ],
        "",
        "Figures are mean ± standard error over the test requests (held-out queries for "
        "CrowdFlower). Every method ranks the same requests over the same corpus.",
        "",
    ]
    seeded = {d: r["seeds"] for d, r in results.items() if len(r.get("seeds", ())) > 1}
    if seeded:
        lines += [
            "Trained methods were trained once per seed ("
            + "; ".join(f"{d}: {', '.join(map(str, s))}" for d, s in seeded.items())
            + "): a figure is the mean over requests of each request's mean over the seeds, "
            "its standard error the test set's; the seeds' own figures are under Seeds.",
            "",
        ]
    lines += _main_table(results) + [""]
    if seeded:
        lines += _seeds_table(results) + [""]
    for dataset, result in results.items():
        lines += _dataset_section(dataset, result) + [""]
        if result.get("sweep"):
            lines += _sweep_section(dataset, result) + [""]
    lines += [
        "## Targets",
        "",
        "| target | MGDSPR | best rival | rival | gap | met | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for t in checks["targets"]:
        lines.append(
            f"| {t['target']} | {_fmt(t['mgdspr'])} | {t['best_rival']} | "
            f"{_fmt(t['rival'])} | {t['gap']:+.4f} | {'yes' if t['met'] else 'NO'} | "
            f"{t.get('note', '')} |"
        )
    lines += ["", "## The paper's claims on our data", ""]
    for c in checks["paper"]:
        figures = ", ".join(
            f"{k} {v:+.4f}" if isinstance(v, float) else f"{k} ({v})"
            for k, v in c.items()
            if k not in ("claim", "agrees") and v is not None
        )
        verdict = {
            True: "agrees",
            False: "does not agree",
            None: "not judged (needs CrowdFlower's graded labels)",
        }[c["agrees"]]
        lines.append(
            f"- **{c['claim']}**: {verdict} ({figures}; deltas are MGDSPR minus the variant)."
        )
    lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    lines += [
        "",
        "Data: " + "; ".join(SOURCES[d] for d in results) + ". Used for research and "
        "benchmarking only.",
    ]
    return "\n".join(lines) + "\n"


def _main_table(results: dict) -> list[str]:
    columns = [c for c in HEADLINES if c[0] in results]
    methods = list(dict.fromkeys(m for r in results.values() for m in r["methods"]))
    lines = [
        "| method | " + " | ".join(c[3] for c in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for m in methods:
        lines.append(
            f"| {m} | "
            + " | ".join(_fmt(_get(results, d, m, metric, k)) for d, metric, k, _ in columns)
            + " |"
        )
    return lines


def _seeds_table(results: dict) -> list[str]:
    """The main table's figures seed by seed (in seed order), and their spread (max - min)."""
    columns = [c for c in HEADLINES if c[0] in results]
    methods = list(dict.fromkeys(m for r in results.values() for m in r["methods"]))
    lines = [
        "## Seeds",
        "",
        "| method | " + " | ".join(c[3] for c in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for m in methods:
        cells = [_by_seed(results, d, m, metric, k) for d, metric, k, _ in columns]
        if any(cells):
            lines.append(
                f"| {m} | "
                + " | ".join(
                    " / ".join(f"{v:.4f}" for v in c.values())
                    + f" (spread {max(c.values()) - min(c.values()):.4f})"
                    if c
                    else "–"
                    for c in cells
                )
                + " |"
            )
    return lines


def _dataset_section(dataset: str, result: dict) -> list[str]:
    from evaluation.harness import KS

    facts = ", ".join(f"{k} {v}" for k, v in result["facts"].items() if k != "seconds")
    stages = ", ".join(f"{k} {v:.0f} s" for k, v in result["facts"].get("seconds", {}).items())
    subsets = ", ".join(f"{k} {v}" for k, v in result.get("subsets", {}).items())
    first = next(iter(result["methods"].values()))
    recall_keys = [m for m in first if m.startswith("recall")]
    # (mean, se) figures without a K: relevance and nDCG, and the synthetic tier share.
    other_keys = [m for m, v in first.items() if isinstance(v, list | tuple)]
    lines = [
        f"## {dataset}",
        "",
        f"{SOURCES[dataset]}. {facts}.",
        "",
        f"Stage times: {stages}." if stages else "",
        "",
        *([f"Test subsets (requests): {subsets}.", ""] if subsets else []),
        *(
            [
                f"Epochs and examples/s are seed {result['seeds'][0]}'s; seconds are every seed's.",
                "",
            ]
            if len(result.get("seeds", ())) > 1
            else []
        ),
        "| method | "
        + " | ".join(
            f"{key.replace('recall', 'R')}@{k}"
            for key in recall_keys
            for k in KS
            if k in (10, 50, 100)
        )
        + "".join(f" | {key}" for key in other_keys)
        + " | epochs (best) | train ex/s | seconds |",
        "|---|" + "---|" * (3 * len(recall_keys) + len(other_keys) + 3),
    ]
    for name, m in result["methods"].items():
        t = m.get("training") or {}
        epochs = f"{t['epochs']} ({t.get('best_epoch', '?')})" if t else "–"
        speed = f"{t['examples_per_s']:.0f}" if t else "–"
        lines.append(
            f"| {name} | "
            + " | ".join(
                _fmt(tuple(m[key][k])) for key in recall_keys for k in KS if k in (10, 50, 100)
            )
            + "".join(f" | {_fmt(tuple(m[key]))}" for key in other_keys)
            + f" | {epochs} | {speed} | {m.get('seconds', 0):.0f} |"
        )
    return lines


def _sweep_section(dataset: str, result: dict) -> list[str]:
    """MGDSPR with one default changed at a time, beside the defaults ("mgdspr")."""
    from evaluation.harness import SWEPT_ABLATIONS

    metric, k = "recall", SYNTHETIC_K if dataset == "synthetic" else RECALL_K
    methods = result["methods"]
    rows = {"defaults (mgdspr)": methods["mgdspr"]} if "mgdspr" in methods else {}
    rows |= {f"{s} ({m})": methods[m] for s, m in SWEPT_ABLATIONS.items() if m in methods}
    rows |= result["sweep"]
    extra = [
        key for key in next(iter(rows.values())) if key.startswith(("recall: ", "relev", "ndcg"))
    ]
    base = rows.get("defaults (mgdspr)", {}).get(metric, {}).get(k)
    lines = [
        f"### {dataset}: defaults sweep (`--sweep`)",
        "",
        "One setting changed at a time from the defaults (ModelConfig); same split, seed and "
        "early stopping as the mgdspr row.",
        "",
        f"| setting | R@{k} | "
        + " | ".join(
            f"{e.replace('recall', 'R')}@{k}" if e.startswith("recall") else e for e in extra
        )
        + f" | Δ R@{k} vs defaults | epochs (best) | train ex/s | seconds |",
        "|---|---|" + "---|" * (len(extra) + 4),
    ]
    for name, m in rows.items():
        t = m.get("training") or {}
        figure = m[metric][k]
        delta = f"{figure[0] - base[0]:+.4f}" if base is not None else "–"
        values = [_fmt(tuple(m[e][k] if isinstance(m[e], dict) else m[e])) for e in extra]
        lines.append(
            f"| {name} | {_fmt(tuple(figure))} | "
            + "".join(f"{v} | " for v in values)
            + f"{delta} | {t.get('epochs', '–')} ({t.get('best_epoch', '–')}) | "
            f"{t.get('examples_per_s', 0):.0f} | {m.get('seconds', 0):.0f} |"
        )
    return lines


# --- plots -------------------------------------------------------------------------------------


def _plots(results: dict, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display here, nor in CI
    import matplotlib.pyplot as plt

    names = []
    for dataset, result in results.items():
        fig, ax = plt.subplots(figsize=(7, 4.5))
        ax.set_prop_cycle(color=plt.color_sequences["tab20"])  # a dozen methods: no colour twice
        for method, m in result["methods"].items():
            ks = sorted(int(k) for k in m["recall"])
            ax.plot(
                ks,
                [m["recall"][k][0] for k in ks],
                marker="o",
                label=method,
                linestyle=LINES.get(method, "-"),
            )
        ax.set(xscale="log", xlabel="K", ylabel="Recall@K", title=f"{dataset}: Recall@K")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        names.append(save_figure(fig, out / f"recall_{dataset}.png"))

        trained = {n: m["training"] for n, m in result["methods"].items() if m.get("training")}
        if trained:
            fig, ax = plt.subplots(figsize=(7, 4.5))
            for method, t in trained.items():
                curve = t.get("validation_recall_per_epoch") or []
                ax.plot(range(1, len(curve) + 1), curve, marker="o", label=method)
            ax.set(xlabel="epoch", ylabel="validation recall", title=f"{dataset}: convergence")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
            names.append(save_figure(fig, out / f"convergence_{dataset}.png"))
    return names


def save_figure(fig, path: Path) -> str:
    """Writes a matplotlib figure (reports here and in benchmarks/) and returns the file name."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name
