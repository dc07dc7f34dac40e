import matplotlib
import pytest
import torch

matplotlib.use("Agg")


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Tests use tiny tensors: a second intra-op thread only adds synchronisation, which on a loaded
    2-core machine costs more than the work (a 6-step rknet forward/backward: 14 ms on one thread,
    1.9 s on two)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
