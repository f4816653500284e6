"""Shared test fixtures."""

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models are op-overhead bound: on 2 shared cores extra intra-op threads only spin."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
