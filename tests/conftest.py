import pyro
import pytest
import torch


@pytest.fixture
def float64():
    """Double precision for tests that check closed forms to 1e-6 or tighter."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


@pytest.fixture
def fresh_pyro(float64):
    """Double precision, an empty param store and a fixed seed."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    yield
    pyro.clear_param_store()
