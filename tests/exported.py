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


class Exported:
    def __init__(self, folder: Path):
        self.folder = folder
        # id of the model -> the model (so that the id stays its own) and its exported encoder
        self.files: dict[int, tuple[object, Path]] = {}

    def save(self, artifact: Artifact, models: Path, version: int, ds: str) -> Artifact:
        """artifact.save(models, version, ds), the version's query encoder beside it."""
        saved = artifact.save(models, version, ds)
        key = id(artifact.model)
        if key not in self.files:
            folder = self.folder / str(len(self.files))
            folder.mkdir(parents=True)
            self.files[key] = (artifact.model, export_query_encoder(artifact.model, folder))
        shutil.copy(self.files[key][1], saved.path / FILE)
        return saved
