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


@pytest.mark.parametrize("peer", ["higher", "torchopt"])
def test_the_timed_peers_compute_the_same_meta_gradient_as_the_exact_step(peer: str) -> None:
    """step_cost's peer loops are the same one-step meta-gradient: their φ update equals adaloss's
    exact step's from the same state (float64; φ stepped by SGD with lr 1, so its update is the
    meta-gradient itself, not Adam's sign-like first step)."""
    pytest.importorskip(peer)
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import step_cost
    finally:
        sys.path.remove(str(BENCHMARKS))
    import adaloss

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 6, generator=g, dtype=torch.float64), torch.randint(0, 3, (16,), generator=g)
    xm, ym = torch.randn(16, 6, generator=g, dtype=torch.float64), torch.randint(0, 3, (16,), generator=g)
    updates = []
    for which in ("adaloss", peer):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).double()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        meta = iter([(xm, ym)])
        if which == "adaloss":
            torch.manual_seed(1)
            loss = adaloss.LossNetwork().double()
            adalfl = adaloss.AdaLFL(model, opt, loss=loss, initialized=True,
                                    meta_optimizer=lambda p: torch.optim.SGD(p, lr=1.0))
            before = [p.detach().clone() for p in loss.parameters()]
            adalfl.step((x, y), next(meta))
        else:
            torch.manual_seed(1)
            loop = step_cost.HigherLoop(model, opt, meta) if peer == "higher" else step_cost.TorchoptLoop(model, 0.1, meta)
            loop.loss.double()
            loop.meta_opt = torch.optim.SGD(loop.loss.parameters(), lr=1.0)
            loss = loop.loss
            before = [p.detach().clone() for p in loss.parameters()]
            loop.step((x, y))
        updates.append(([p.detach() - b for p, b in zip(loss.parameters(), before)],
                        [p.detach().clone() for p in model.parameters()]))
    (phi_a, theta_a), (phi_b, theta_b) = updates
    for a, b in zip(phi_a, phi_b):
        assert a.abs().max() > 0
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    for a, b in zip(theta_a, theta_b):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
