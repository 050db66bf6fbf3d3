"""One trained model saved as many versions, its query encoder exported once: torch.export
takes ~2.5 s a model, and the tests that save a few models dozens of times spent a minute on it.
Each saved version gets a copy, which is what build_collection would write there (and, finding
it, keeps)."""

from __future__ import annotations

import shutil
from pathlib import Path

from ebr.query_encoder import FILE
from training.artifact import Artifact
from training.export import export_query_encoder
from training.model import MGDSPR


class Exported:
    def __init__(self, folder: Path):
        self.folder = folder
        self.files: dict[MGDSPR, Path] = {}  # a model (hashed by identity) -> its encoder

    def save(self, artifact: Artifact, models: Path, version: int, ds: str) -> Artifact:
        """artifact.save(models, version, ds), the version's query encoder beside it."""
        saved = artifact.save(models, version, ds)
        if artifact.model not in self.files:
            folder = self.folder / str(len(self.files))
            folder.mkdir(parents=True)
            self.files[artifact.model] = export_query_encoder(artifact.model, folder)
        shutil.copy(self.files[artifact.model], saved.path / FILE)
        return saved
