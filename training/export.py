"""Exports the query side of a model: models/vN/query_encoder.pt2, a torch.export program of the
user tower that serving loads without this package's model code (ebr/query_encoder.py).

The program takes the id tensors of features.RequestBatch in field order. Every size is dynamic
from 2 up: torch.export specialises a size of 1, so callers pad to 2 with PAD, which every branch
masks (rows are right-padded, and the real-time LSTM, ebr.serving_ops.lstm here, runs forward).
"""

from __future__ import annotations

import os
from dataclasses import fields
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.export import Dim

from ebr.query_encoder import FILE

from .features import ACTIONS, ATTRS, RequestBatch
from .model import MGDSPR


class UserTower(nn.Module):
    """MGDSPR.user_tower over plain tensors (an exported program takes no dataclass)."""

    def __init__(self, model: MGDSPR):
        super().__init__()
        self.model = model

    def forward(
        self,
        user: Tensor,
        words: Tensor,
        char1: Tensor,
        char2: Tensor,
        past: Tensor,
        rt: Tensor,
        st: Tensor,
        lt: Tensor,
    ) -> Tensor:
        return self.model.user_tower(RequestBatch(user, words, char1, char2, past, rt, st, lt))


def export_query_encoder(model: MGDSPR, folder: Path) -> Path:
    """Writes folder/query_encoder.pt2 atomically (a reader sees the old file or the new one) and
    returns its path."""
    batch = Dim("batch", min=2)

    def length(name: str) -> Dim:
        return Dim(name, min=2)

    example = RequestBatch(
        user=_ids(2),
        words=_ids(2, 2),
        char1=_ids(2, 2),
        char2=_ids(2, 2),
        past=_ids(2, 2, 2),
        rt=_ids(2, 2),
        st=_ids(2, 2),
        lt=_ids(2, len(ATTRS), len(ACTIONS), 2),
    )
    shapes = {
        "user": {0: batch},
        "words": {0: batch, 1: length("words")},
        "char1": {0: batch, 1: length("char1")},
        "char2": {0: batch, 1: length("char2")},
        "past": {0: batch, 1: length("past"), 2: length("past_words")},
        "rt": {0: batch, 1: length("rt")},
        "st": {0: batch, 1: length("st")},
        "lt": {0: batch, 3: length("lt")},
    }
    model.eval()
    program = torch.export.export(
        UserTower(model),
        tuple(getattr(example, f.name) for f in fields(RequestBatch)),
        dynamic_shapes=shapes,
    )
    path = Path(folder) / FILE
    # Still ending in .pt2: torch.export.save warns about any other name.
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        torch.export.save(program, tmp)
        tmp.chmod(0o644)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _ids(*shape: int) -> Tensor:
    return torch.ones(shape, dtype=torch.long)  # id 1 (UNK) is in every table
