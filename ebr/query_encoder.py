"""The query side of a model version, as services load it: models/vN/query_encoder.pt2 (the user
tower exported by training/export.py) with the artifact's vocabularies and config.

Needs no model code: requests become id tensors with the shared feature pipeline
(training.features, training.vocab, training.text) and go through the exported program.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ebr import serving_ops  # noqa: F401  # registers the ops the programs call
from ebr.settings import ModelConfig
from training import features
from training.vocab import PAD, Vocabs

FILE = "query_encoder.pt2"  # training/export.py writes it
BATCH = 1024  # requests per program call


@dataclass(frozen=True, eq=False)
class QueryEncoder:
    program: torch.nn.Module
    vocabs: Vocabs
    config: ModelConfig
    meta: dict  # version, ds, parent, metrics

    @property
    def version(self) -> int:
        return self.meta["version"]

    @property
    def ds(self) -> str:
        return self.meta["ds"]

    def encode(self, table) -> np.ndarray:
        """Rows with features.REQUEST_COLUMNS -> float32 [n, dim]. Unknown tokens map to UNK."""
        rows = features.requests(table, self.vocabs, self.config, grow=False)
        out = [np.zeros((0, self.config.dim), dtype=np.float32)]
        with torch.no_grad():
            for i in range(0, len(rows), BATCH):
                batch = rows.batch(range(i, min(i + BATCH, len(rows))))
                tensors = [self._shape(getattr(batch, f.name)) for f in fields(batch)]
                out.append(self.program(*tensors)[: len(batch.user)].numpy())
        return np.concatenate(out)

    @staticmethod
    def _shape(ids: Tensor) -> Tensor:
        """Pads with PAD to the sizes the program accepts (training/export.py): at least 2."""
        for dim in range(ids.dim()):
            if ids.shape[dim] < 2:
                ids = F.pad(
                    ids, [0, 0] * (ids.dim() - 1 - dim) + [0, 2 - ids.shape[dim]], value=PAD
                )
        return ids


def load_query_encoder(path: Path | str) -> QueryEncoder:
    """The query encoder of the artifact folder models/vN."""
    path = Path(path)
    program = path / FILE
    if not program.is_file():
        raise FileNotFoundError(f"{program} is missing: {path.name} was never indexed")
    return QueryEncoder(
        program=torch.export.load(program).module(),
        vocabs=Vocabs.load(path / "vocab.json"),
        config=ModelConfig.from_json(json.loads((path / "config.json").read_text())),
        meta=json.loads((path / "meta.json").read_text()),
    )
