"""Fixtures shared by the package's tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def store(tmp_path):
    """A SQLite results store under ``tmp_path`` holding the registry and runs of ``ui/ui_rows.py`` (the UI
    pages and the approval read them); a module with a ``store`` fixture of its own keeps its own."""
    from tests.music_recsys.ui.ui_rows import build_store

    store = build_store(f"sqlite:///{tmp_path / 'results.sqlite'}", tmp_path)
    yield store
    store.close()
