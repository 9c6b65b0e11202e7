"""The CPU benchmark suites run on 2 threads, the CI machine's cores (BENCHMARKING.md)."""
import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def _threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)
