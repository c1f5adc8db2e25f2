"""CPU test setup: Triton kernels run under its interpreter (set before anything imports triton)."""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

SHARED_SCENES = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "scenes")


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


@pytest.fixture
def shared_scenes():
    """Path of ../shared/scenes; tests that need real scenes skip cleanly when it is absent."""
    if not os.path.isdir(SHARED_SCENES):
        pytest.skip("../shared/scenes is not present")
    return os.path.abspath(SHARED_SCENES)
