"""Full corpus re-encoding with a model's item tower into a new versioned collection."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ebr.settings import Settings
from ebr.warehouse import reading
from indexing import store

if TYPE_CHECKING:  # training is imported by whoever loads the artifact
    from training.artifact import Artifact

log = logging.getLogger(__name__)
ENCODE_BATCH = 8192


def build_collection(ds: str, artifact: Artifact, settings: Settings) -> str:
    """Exports the model's query side (for services) and streams the day's corpus mart through
    its item tower into items_<day>_v<N>."""
    from training.export import export_query_encoder

    if artifact.path is None:
        raise ValueError("build_collection needs a saved artifact: its query side goes beside it")
    # Before the collection exists: whatever resolves a collection finds its query encoder.
    export_query_encoder(artifact.model, artifact.path)
    log.info("ds=%s stage=build exported the query encoder of v%d", ds, artifact.version)
    name = store.collection_name(ds, artifact.version)
    with reading(settings.warehouse) as con:
        total = con.execute("select count(*) from mart_item_corpus where ds = ?", [ds]).fetchall()[
            0
        ][0]
        if total == 0:
            raise ValueError(f"mart_item_corpus has no items for ds={ds}: nothing to index")
        reader = con.sql(
            "select item_id, title, leaf_category, top_category, brand, shop, price "
            "from mart_item_corpus where ds = ? order by item_id",
            params=[ds],
        ).fetch_record_batch(ENCODE_BATCH)
        with store.connect(settings) as client:
            store.create(client, name, artifact.dim)
            bound = artifact.model.item_norm_bound()
            done = 0
            for batch in reader:
                vectors = artifact.encode_items(batch)
                store.insert(client, name, batch.to_pydict(), vectors, bound)
                done += batch.num_rows
                log.info("ds=%s stage=build encoded %d/%d items into %s", ds, done, total, name)
            store.finish(client, name, artifact.version, ds)
    return name
