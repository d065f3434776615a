"""The counters under ``benchmarks/step_flops.py`` against hand-computed values: a benchmark's
figures are only as good as what it counts."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def step_flops():  # type: ignore[no-untyped-def]
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import step_flops

        yield step_flops
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_counts_matmul_flops_ops_and_elementwise_bytes(step_flops) -> None:  # type: ignore[no-untyped-def]
    a, b = torch.randn(8, 5), torch.randn(5, 3)
    c, d = torch.randn(100), torch.randn(100)
    zeros = torch.zeros(8, 5)
    with step_flops.MatmulFlops() as counter:
        a @ b  # 2·8·5·3 FLOPs
        zeros @ b  # the same FLOPs, on an all-zero operand
        c.t()  # a view: no bytes
        torch.ops.aten.is_same_size(c, d)  # a metadata query: no bytes
        e = c + d  # reads 2 × 400 bytes, writes 400
        e.add_(d)  # in place: reads 800, writes 400
    assert counter.total == 2 * (2 * 8 * 5 * 3)
    assert counter.on_zeros == 2 * 8 * 5 * 3
    assert counter.ops == 6
    assert counter.elementwise_bytes == 2 * 3 * 400
