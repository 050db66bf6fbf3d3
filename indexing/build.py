"""Full corpus re-encoding with a model's item tower into a new versioned collection."""

from __future__ import annotations

import logging
import tempfile
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
from duckdb import DuckDBPyConnection

from ebr.settings import Settings
from ebr.warehouse import reading
from indexing import store

if TYPE_CHECKING:  # training is imported by whoever loads the artifact
    from training.artifact import Artifact

log = logging.getLogger(__name__)
# Rows read and encoded at a time: per-call costs (a batch's distinct title words, Arrow kernel
# calls) shrink with size, 8192 -> 65536 rows ran 1.4x the items/s on the medium corpus.
ENCODE_BATCH = 65536
INSERT_BATCH = 8192  # rows per Milvus insert call (one gRPC message)


def build_collection(ds: str, artifact: Artifact, settings: Settings) -> str:
    """Exports the model's query side (for services), streams the day's corpus mart through its
    item tower into a temporary file, then from it into items_<day>_v<N>."""
    from ebr.query_encoder import FILE as QUERY_ENCODER
    from training.export import export_query_encoder

    if artifact.path is None:
        raise ValueError("build_collection needs a saved artifact: its query side goes beside it")
    # Before the collection exists: whatever resolves a collection finds its query encoder.
    # Once a version: a rerun keeps it, as a version folder only ever changes whole
    # (Artifact.save), so an encoder in it is this model's (the file is written atomically).
    if not (artifact.path / QUERY_ENCODER).exists():
        export_query_encoder(artifact.model, artifact.path)
        log.info("ds=%s stage=build exported the query encoder of v%d", ds, artifact.version)
    name = store.collection_name(ds, artifact.version)
    with reading(settings.warehouse) as con, tempfile.TemporaryFile() as spill:
        total = con.execute("select count(*) from mart_item_corpus where ds = ?", [ds]).fetchall()[
            0
        ][0]
        if total == 0:
            raise ValueError(f"mart_item_corpus has no items for ds={ds}: nothing to index")
        # The whole corpus is encoded (to a file, not memory) before Milvus is touched. Milvus
        # Lite's server works on each insert after the call returns (sealing segments, their
        # interim indexes), so encoding between inserts shared the 2 cores with it: the medium
        # corpus encoded at 380-503k items/s that way and at 653-733k first, with the build's
        # wall time the same (61-62 s). A model that fails to encode leaves no collection.
        done = 0
        for batch in _corpus(con, ds):
            spill.write(artifact.encode_items(batch).tobytes())
            done += batch.num_rows
            log.info("ds=%s stage=build encoded %d/%d items", ds, done, total)
        spill.seek(0)
        with store.connect(settings) as client:
            store.create(client, name, artifact.dim)
            bound = artifact.model.item_norm_bound()
            done = 0
            for batch in _corpus(con, ds):
                for start in range(0, batch.num_rows, INSERT_BATCH):
                    rows = batch.slice(start, INSERT_BATCH)
                    width = rows.num_rows * artifact.dim
                    vectors = np.frombuffer(spill.read(width * 4), dtype=np.float32)
                    store.insert(
                        client, name, rows.to_pydict(), vectors.reshape(-1, artifact.dim), bound
                    )
                done += batch.num_rows
                log.info("ds=%s stage=build inserted %d/%d items into %s", ds, done, total, name)
            store.finish(client, name, artifact.version, ds)
    return name


def _corpus(con: DuckDBPyConnection, ds: str) -> pa.RecordBatchReader:
    """The day's corpus mart, ENCODE_BATCH rows at a time, in one order on every read."""
    return con.sql(
        "select item_id, title, leaf_category, top_category, brand, shop, price "
        "from mart_item_corpus where ds = ? order by item_id",
        params=[ds],
    ).to_arrow_reader(ENCODE_BATCH)
