"""Every setting in one typed place, read from the environment.

Airflow params override the per-run ones (see dags/ebr_daily.py); nothing else reads os.environ.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

MINILM_WIDTH = 384  # all-MiniLM-L6-v2's vectors, which word_init "minilm" starts words from


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(x) for x in text.split(","))


@dataclass(frozen=True)
class ModelConfig:
    """MGDSPR hyper-parameters (paper defaults where the paper gives one)."""

    dim: int = 128
    heads: int = 4
    rt_len: int = 50  # real-time sequence: latest clicks
    st_len: int = 100  # short-term: last 10 days
    lt_len: int = 100  # long-term: last 30 days, per action and attribute
    past_queries: int = 20
    max_words: int = 16
    max_chars: int = 48
    # Softmax temperature. The paper's 2 smooths noisy click labels; 1, measured beside it at
    # three seeds (docs/quality.md), retrieved as well or better on every dataset: bfloat16,
    # Best Buy Recall@10 0.8892 -> 0.8902, unseen 0.6522 -> 0.6560, CrowdFlower relevance@10
    # 0.5043 -> 0.5094, nDCG@10 0.5791 -> 0.5929, synthetic Recall@50 0.8833 -> 0.8850 (each
    # within a standard error; float32 agreed on all but Best Buy Recall@10, 0.8912 -> 0.8902).
    tau: float = 1.0
    # Top-N pool items mixed with the positive. 4, not 8 (docs/quality.md, three seeds): Best Buy
    # Recall@10 0.8880 -> 0.8912, CrowdFlower relevance@10 0.4608 -> 0.4875, synthetic Recall@50
    # 0.8813 -> 0.8803 (within a standard error).
    hard_negatives: int = 4
    alpha_range: tuple[float, float] = (0.4, 0.6)
    sampled_negatives: int = 1024  # random corpus items added to the in-batch pool
    # 256, not 1024 (docs/quality.md, "Batch size"): over three seeds of whole training windows
    # the two tie, but a small day from scratch at three epochs is a quarter of the steps and
    # undertrained at 1024 (synthetic Recall@50 0.8505 against 0.8851). A GPU with medium days
    # wants 1024 (EBR_BATCH_SIZE): 3.8x the examples/s there; two CPU processes (workers) 512.
    batch_size: int = 256
    lr: float = 2e-3
    # The most epochs a day trains; early stopping (below) usually ends sooner. The name stays
    # `epochs` because the DAG param and EBR_EPOCHS already carry it.
    epochs: int = 3
    # Variants, so that the paper's ablations and a plain two-tower baseline train through the
    # same code. query_unit: "multi" = the paper's six query granularities; "words" = only the
    # mean of the segmented words ("without multi-granular unit").
    query_unit: str = "multi"
    # False: the user tower sees the query only; no behaviour sequences, past queries or user id
    # ("without personalisation").
    personalised: bool = True
    # Which items own an id row in the item tower: "corpus" = every catalogue item; "clicked" =
    # only items that have been clicked (a training example's positive, or in a behaviour
    # sequence; a title query is not a click); others are scored by their title alone
    # (training.features.items).
    item_ids: str = "corpus"
    # Share of training rows whose user id is replaced by UNK, the row every unseen user reads:
    # without it (or title queries) UNK is never trained and the fusion leans on ids new users
    # lack. 0.5 with the sampling correction below (together, docs/quality.md): Best Buy Recall@10
    # 0.8775 -> 0.8880 and unseen queries 0.6251 -> 0.6541 over three seeds, most of its users
    # clicking once; CrowdFlower and synthetic within a standard error.
    user_id_dropout: float = 0.5
    # Share of items in each training step scored without their id row (title alone): the title
    # path then has to rank on its own, as it must for items no one has clicked yet.
    item_id_dropout: float = 0.0
    # Share of training rows (query_unit "multi") whose Transformer-over-words unit is zeroed,
    # as a whole, in Q and in the mix; every request keeps it at inference. Zeroed everywhere,
    # the unit's absence lifted Best Buy's unseen queries by 0.065 but cost CrowdFlower and
    # synthetic (why it costs new queries was not isolated). Not in the paper. 0.5 against 0
    # over three seeds (docs/quality.md): Best Buy Recall@10 0.8902 -> 0.8944, unseen queries
    # 0.6560 -> 0.7126 (higher at every seed); CrowdFlower relevance@10 0.5094 -> 0.5106,
    # nDCG@10 0.5929 -> 0.5939; synthetic Recall@10 0.5684 -> 0.5758 (every seed) and
    # Recall@50 0.8850 -> 0.8791. 0.25: Best Buy 0.8921, unseen 0.6768 (in between),
    # synthetic 0.5658 and 0.8813.
    transformer_unit_dropout: float = 0.5
    # Title queries (training.title_queries) added to each epoch's training rows, as a share of
    # the day's examples, drawn afresh every epoch: pseudo-requests whose query is a few words of
    # an item's title, so that words of items no one has clicked yet are learnt too. Not in the
    # paper. 2, not 0.5: a day warm-started from yesterday's model trains only that day's
    # examples, and at 0.5 a day's rounds are too few to teach a catalogue's words. Replayed day
    # by day as the DAG trains (`ebr evaluate --daily`, seeds 7-9, docs/quality.md, "Two title
    # queries a click"): CrowdFlower held-out relevance@10 0.2063 -> 0.5267, Best Buy Recall@10
    # 0.8992 -> 0.9196 and unseen queries 0.6565 -> 0.7092, synthetic Recall@50 0.8735 ->
    # 0.8722. The cost: a title query trains about as long as a click (no history, but a user
    # tower of its own where a request's clicks share one), so the medium bench day's training
    # took twice as long (688 examples/s against 1,412) for the same recall there.
    title_queries: float = 2.0
    # How new rows of the word table start: "minilm" (training.lexicon: all-MiniLM-L6-v2's
    # WordPiece vectors, so that a word no click has taught yet starts near words of like
    # meaning) or "random" (small normal, like every id table). Not in the paper. `ebr evaluate`
    # (docs/quality.md): CrowdFlower held-out relevance@10 over three training seeds 0.445-0.453
    # against 0.20-0.39 from random rows; Best Buy and synthetic within noise.
    word_init: str = "minilm"
    # "softmax": the paper's sampled softmax (tau, hard negatives); "hinge": the pairwise hinge
    # loss of earlier two-tower retrieval, over the same negatives, without tau or hard negatives.
    loss: str = "softmax"
    # The softmax's pool is the batch's own positives (drawn as often as items are clicked) and
    # uniform corpus samples, so a popular item is a negative far more often than its share of
    # the corpus, and uncorrected the loss pushes it down for everyone. "log_q" subtracts from
    # each pool logit the log of the item's expected count in the pool (the sampled-softmax
    # correction for a mixed in-batch + uniform pool: Yi et al. 2019, Yang et al. 2020); "none"
    # is the paper's plain softmax. Not in the paper. `ebr evaluate` over three seeds, with
    # user-id dropout 0.5 against neither (docs/quality.md): Best Buy Recall@10 0.8697 -> 0.8880,
    # unseen queries 0.6097 -> 0.6541, both of its targets met on the mean; synthetic Recall@50
    # 0.8812 -> 0.8813; CrowdFlower relevance@10 0.4890 -> 0.4608, lower at every seed: it trades
    # some relevance on a cold catalogue for the clicks the daily gate measures. The hinge loss
    # ignores it.
    sampling_correction: str = "log_q"
    # Scores are unnormalised inner products (the user ends in LayerNorm: norm ~ sqrt(dim)), so
    # any margin can be met by growing the item vectors and it only sets how far they must grow;
    # 1 is the classic unit margin and one softmax logit at tau = 1. On synthetic days 0.1 and
    # 1 reached the same recall, 1 sooner for the words-only tower; 3 was slower.
    hinge_margin: float = 1.0
    # Early stopping on Recall@validation_k of the newest validation_share of a day's training
    # examples (0 disables): stop after `patience` epochs without improvement, keep the best.
    # 1, not 2, for a warm-started day (docs/quality.md, "Epochs and patience of a warm-started
    # day"): medium day 2 from day 1's model kept epoch 1 either way, the same model, after 2
    # epochs instead of 3; Best Buy replayed day by day over three seeds, Recall@10 0.8971 ->
    # 0.9008 and unseen queries 0.6304 -> 0.6309. `ebr evaluate` trains from scratch over a
    # whole window and keeps 2 (evaluation.harness.Options).
    patience: int = 1
    validation_share: float = 0.1
    # Fewer held-out rows than this and the day trains all its epochs and keeps the last: Recall@K
    # over n rows has a standard error near sqrt(p(1 - p) / n), 0.042 at 50 rows and 0.021 at 200
    # for Recall@10 near 0.9, more than one epoch moves it. Best Buy replayed day by day (six
    # seeds; days of 96-1,760 clicks, 50-176 held out): 200 against 50 raised unseen queries
    # 0.6350 -> 0.6594 for Recall@10 0.9047 -> 0.9026 (docs/quality.md, "Too few rows to stop
    # on"). A medium day holds out about 9,800.
    min_validation: int = 200
    validation_k: int = 50
    # The towers' arithmetic while training: "bfloat16" runs their matrix products under torch
    # autocast (weights, optimiser state, the loss and every saved vector stay float32), which
    # pays only where the device multiplies bfloat16 natively; "auto" picks it there (a CPU with
    # AMX, a GPU with bfloat16) and "float32" elsewhere. Encoding and serving run float32.
    precision: str = "auto"
    # Intra-op threads while training (torch.set_num_threads). With 2 threads each of a step's
    # thousands of small ops waits at a barrier for whichever core another process holds: on
    # 6,000 of the medium bench's day-2 examples beside one busy process, 1 thread trained
    # 1,127-1,224 examples/s and 2 threads 186-235; beside a process busy a fifth of the time
    # they tied (1,240-1,268 against 1,179-1,354). On 8,000 of them on an idle machine 2 ran
    # 1.2x faster (1,383-1,502 against 1,153-1,230). 1 suits this machine, where Airflow, dbt
    # and Milvus share the cores; a machine given to training alone can set its cores. The
    # count changes how products sum, so a day retrains to the same weights only at the same
    # count. On more threads it also takes torch's deterministic algorithms (training.train
    # turns them on): without them four 2-thread runs of the same 6,000 medium examples ended at
    # four parameter sums (24191.29-24192.21) on an AVX2-only AMD EPYC.
    threads: int = 1
    # Training processes on a CPU (training.workers: data parallel over torch.distributed's
    # gloo), each of `threads` threads; batch_size stays a step's whole batch, and the ranks
    # train one process's model but for the order of float sums. On 30,000 of the medium
    # bench's day-2 examples, idle 2 cores, 2 processes trained 822 examples/s against 740, and
    # 1,047-1,185 at batch_size 512 (a rank's step one process's at 256, what the ranks
    # exchange a step spread over twice the rows; the medium bench's recall level with 256's);
    # Best Buy's small days replayed one by one took 3x as long (each day a process to start and
    # the day featurised twice; docs/scale-out.md, "Several processes"): 1 unless the day is
    # medium or larger and the train task has the cores to itself, and then with batch_size 512.
    # Like threads, the count moves the float rounding: a day retrains to the same weights only
    # at the same count.
    workers: int = 1

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> ModelConfig:
        """A config saved as JSON (lists back to tuples). Known keys only: a config saved before
        a field existed loads with that field's default."""
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in raw.items() if k in known
        }
        return cls(**values)

    def __post_init__(self) -> None:
        # A typo in an env var or a harness override must fail loudly, not train another model.
        for name, allowed in (
            ("query_unit", ("multi", "words")),
            ("loss", ("softmax", "hinge")),
            ("item_ids", ("corpus", "clicked")),
            ("word_init", ("random", "minilm")),
            ("sampling_correction", ("log_q", "none")),
            ("precision", ("auto", "float32", "bfloat16")),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"ModelConfig.{name} must be one of {allowed}, got {getattr(self, name)!r}"
                )
        if not 0 <= self.validation_share < 1:
            raise ValueError(
                f"ModelConfig.validation_share must be in [0, 1), got {self.validation_share!r}"
            )
        if self.min_validation < 1:
            raise ValueError(
                f"ModelConfig.min_validation must be at least 1, got {self.min_validation!r}"
            )
        for name in ("user_id_dropout", "item_id_dropout", "transformer_unit_dropout"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(
                    f"ModelConfig.{name} must be in [0, 1], got {getattr(self, name)!r}"
                )
        if self.word_init == "minilm" and self.dim > MINILM_WIDTH:
            raise ValueError(
                f"ModelConfig.dim must be at most {MINILM_WIDTH} with word_init 'minilm' (the "
                f"pretrained word vectors' width), got {self.dim}"
            )
        if self.title_queries < 0:
            raise ValueError(f"ModelConfig.title_queries must be >= 0, got {self.title_queries!r}")
        if self.threads < 1:
            raise ValueError(f"ModelConfig.threads must be >= 1, got {self.threads!r}")
        if self.workers < 1:
            raise ValueError(f"ModelConfig.workers must be >= 1, got {self.workers!r}")
        if self.patience < 0:
            raise ValueError(f"ModelConfig.patience must be >= 0, got {self.patience!r}")


@dataclass(frozen=True)
class Settings:
    home: Path
    milvus_uri: str
    milvus_token: str
    alias: str
    recall_ks: tuple[int, ...]
    gate_k: int  # the K whose recall the gate decides on
    recall_floor: float
    regression_margin: float
    retention: int  # candidate collections kept besides the live and previous ones
    eval_start_hour: int  # requests at or after this hour of the day are held out
    seed: int
    start_date: str  # first day the DAG schedules (and the synthetic marketplace opens)
    # Held-out requests the gate scores both models on, at most: a fixed sample of the day's (by
    # md5 of request_id), so the gate's cost stops growing with traffic. Over 10k requests a
    # Recall@K's standard error is at most sqrt(0.25 / 10k) = 0.005, a quarter of the default
    # margin; the large bench profile's 95k requests over 1M items took 707 s for one model.
    gate_requests: int
    canary_requests: int  # held-out requests replayed through the serving client after promotion
    canary_margin: float  # allowed canary Recall@gate_k drop below the gate's figure on them
    # Share of exact search's top-gate_k the candidate's collection must return on the canary
    # requests (indexing.gate.index_agreement): HNSW at the DAG's ef found 0.93 of the top-50 on
    # the medium bench's day 2; a collection of another model's vectors found under 0.5 (tests).
    min_index_agreement: float
    max_catalogue_drop: float  # share of the previous day's catalogue a day's may lose
    airflow_pool: str  # one-slot Airflow pool every task that writes state takes (dags/)
    model: ModelConfig = field(default_factory=ModelConfig)

    def __post_init__(self) -> None:
        if self.gate_requests < 1:
            raise ValueError(f"EBR_GATE_REQUESTS must be >= 1, got {self.gate_requests}")
        # A canary of no requests would fail every promotion; say so at start-up instead.
        if self.canary_requests < 1:
            raise ValueError(f"EBR_CANARY_REQUESTS must be >= 1, got {self.canary_requests}")
        if not 0 <= self.canary_margin <= 1:
            raise ValueError(f"EBR_CANARY_MARGIN must be in [0, 1], got {self.canary_margin}")
        if not 0 <= self.min_index_agreement <= 1:
            raise ValueError(
                f"EBR_MIN_INDEX_AGREEMENT must be in [0, 1], got {self.min_index_agreement}"
            )
        if not 0 <= self.max_catalogue_drop <= 1:
            raise ValueError(
                f"EBR_MAX_CATALOGUE_DROP must be in [0, 1], got {self.max_catalogue_drop}"
            )

    @property
    def landing(self) -> Path:
        return self.home / "landing"

    @property
    def warehouse(self) -> Path:
        return self.home / "warehouse.duckdb"

    @property
    def models(self) -> Path:
        return self.home / "models"

    @property
    def reports(self) -> Path:
        return self.home / "reports"

    def landing_day(self, ds: str) -> Path:
        return self.landing / f"ds={ds}"

    def report_day(self, ds: str) -> Path:
        return self.reports / f"ds={ds}"

    def with_model(self, **overrides) -> Settings:
        return replace(self, model=replace(self.model, **overrides))


def load_settings() -> Settings:
    home = Path(_env("EBR_HOME", ".ebr")).resolve()
    m = ModelConfig()
    personalised = _env("EBR_PERSONALISED", "true").lower()
    if personalised not in ("true", "false"):
        raise ValueError(f"EBR_PERSONALISED must be true or false, got {personalised!r}")
    model = ModelConfig(
        dim=int(_env("EBR_DIM", str(m.dim))),
        tau=float(_env("EBR_TAU", str(m.tau))),
        hard_negatives=int(_env("EBR_HARD_NEGATIVES", str(m.hard_negatives))),
        alpha_range=tuple(_floats(_env("EBR_ALPHA_RANGE", "0.4,0.6"))),  # type: ignore[arg-type]
        sampled_negatives=int(_env("EBR_SAMPLED_NEGATIVES", str(m.sampled_negatives))),
        batch_size=int(_env("EBR_BATCH_SIZE", str(m.batch_size))),
        lr=float(_env("EBR_LR", str(m.lr))),
        epochs=int(_env("EBR_EPOCHS", str(m.epochs))),
        query_unit=_env("EBR_QUERY_UNIT", m.query_unit),
        personalised=personalised == "true",
        loss=_env("EBR_LOSS", m.loss),
        sampling_correction=_env("EBR_SAMPLING_CORRECTION", m.sampling_correction),
        item_ids=_env("EBR_ITEM_IDS", m.item_ids),
        item_id_dropout=float(_env("EBR_ITEM_ID_DROPOUT", str(m.item_id_dropout))),
        user_id_dropout=float(_env("EBR_USER_ID_DROPOUT", str(m.user_id_dropout))),
        transformer_unit_dropout=float(
            _env("EBR_TRANSFORMER_UNIT_DROPOUT", str(m.transformer_unit_dropout))
        ),
        title_queries=float(_env("EBR_TITLE_QUERIES", str(m.title_queries))),
        word_init=_env("EBR_WORD_INIT", m.word_init),
        patience=int(_env("EBR_PATIENCE", str(m.patience))),
        validation_share=float(_env("EBR_VALIDATION_SHARE", str(m.validation_share))),
        min_validation=int(_env("EBR_MIN_VALIDATION", str(m.min_validation))),
        precision=_env("EBR_PRECISION", m.precision),
        threads=int(_env("EBR_TRAIN_THREADS", str(m.threads))),
        workers=int(_env("EBR_TRAIN_WORKERS", str(m.workers))),
    )
    # Milvus Lite answers 800 queries in ~5 s at K=50, ~14 s at K=100, ~55 s at K=500 (measured):
    # K=500 is a setting away, not the default of a daily gate.
    ks = tuple(int(k) for k in _env("EBR_RECALL_KS", "10,50,100").split(","))
    return Settings(
        home=home,
        milvus_uri=_env("EBR_MILVUS_URI", str(home / "milvus.db")),
        milvus_token=_env("EBR_MILVUS_TOKEN", ""),
        alias=_env("EBR_ALIAS", "ebr_items"),
        recall_ks=ks,
        gate_k=int(_env("EBR_GATE_K", "50")),
        recall_floor=float(_env("EBR_RECALL_FLOOR", "0.05")),
        regression_margin=float(_env("EBR_REGRESSION_MARGIN", "0.02")),
        retention=int(_env("EBR_RETENTION", "3")),
        eval_start_hour=int(_env("EBR_EVAL_START_HOUR", "20")),
        seed=int(_env("EBR_SEED", "7")),
        start_date=_env("EBR_START_DATE", "2026-01-01"),
        gate_requests=int(_env("EBR_GATE_REQUESTS", "10000")),
        canary_requests=int(_env("EBR_CANARY_REQUESTS", "50")),
        canary_margin=float(_env("EBR_CANARY_MARGIN", "0.05")),
        min_index_agreement=float(_env("EBR_MIN_INDEX_AGREEMENT", "0.8")),
        max_catalogue_drop=float(_env("EBR_MAX_CATALOGUE_DROP", "0.2")),
        airflow_pool=_env("EBR_AIRFLOW_POOL", "ebr_serial"),
        model=model,
    )
