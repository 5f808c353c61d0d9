"""Fixtures of the parity suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(scope="module")
def torch_single_thread() -> Iterator[None]:
    """Run torch on one thread for the module: its parallel kernels on a busy two-core machine were
    ten times slower than one thread next to XLA's own thread pool. The elementwise quantizers' results
    do not depend on the thread count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
