import os

import pytest

# Tests run in the quick profile on whatever device is there, unless told otherwise.
os.environ.setdefault("DIFFNB_PROFILE", "quick")


@pytest.fixture
def tmp_checkpoints(tmp_path, monkeypatch):
    """Checkpoints of a test go to a temporary folder, never to the project's checkpoints/."""
    monkeypatch.setenv("DIFFNB_CHECKPOINTS", str(tmp_path / "checkpoints"))
    return tmp_path / "checkpoints"
