import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """Tests use tiny tensors: on a shared 2-core machine extra intra-op threads only contend (a 32-wide matmul
    went from 9 ms to 600 ms under load)."""
    torch.set_num_threads(1)
