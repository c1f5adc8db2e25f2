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
def one_thread():
    """Torch on one thread for the test: small convs and grids on a shared 2-core machine stall when oversubscribed."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def shared_scenes():
    """Path of ../shared/scenes; tests that need real scenes skip cleanly when it is absent."""
    if not os.path.isdir(SHARED_SCENES):
        pytest.skip("../shared/scenes is not present")
    return os.path.abspath(SHARED_SCENES)
