"""Milvus Lite in tests: one process owns a .db file at a time."""

from ebr.settings import Settings


def release(settings: Settings) -> None:
    """Stop this process's Milvus Lite server for the file, so that another process may open it
    (and so that a test leaves no server behind)."""
    from milvus_lite.server_manager import server_manager_instance

    server_manager_instance.release_server(settings.milvus_uri)
