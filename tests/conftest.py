import pytest

from ebr.settings import Settings, load_settings


@pytest.fixture
def settings(tmp_path, monkeypatch) -> Settings:
    """Settings whose whole state (landing, warehouse, models, Milvus Lite, reports) is in tmp_path."""
    monkeypatch.setenv("EBR_HOME", str(tmp_path / "ebr"))
    monkeypatch.delenv("EBR_MILVUS_URI", raising=False)
    s = load_settings()
    s.home.mkdir(parents=True)
    return s
