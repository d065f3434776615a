"""AdaLFL on a DistributedDataParallel model under torchrun: synchronised by default, never silently apart."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).with_name("ddp_adalfl_worker.py")


@pytest.mark.slow
def test_ddp_model_with_the_default_construction_follows_one_process_on_the_whole_batches(
    tmp_path: Path, launch_env: dict[str, str]
) -> None:
    """2 gloo ranks, each seeded with its rank before building the model and the loss: after 10 steps
    θ, φ and ρ are bit-identical across ranks and equal (to rounding) to one process on both ranks'
    batches with rank 0's initialisation."""
    steps = "10"
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(WORKER), str(tmp_path), steps], capture_output=True, text=True, timeout=240,
                          env=launch_env)
    assert done.returncode == 0, done.stderr[-3000:]
    subprocess.run([sys.executable, str(WORKER), str(tmp_path), steps, "--plain"], check=True, capture_output=True,
                   text=True, timeout=240, env=launch_env)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    plain = torch.load(tmp_path / "plain.pt")
    assert ranks[0]["collective"] == "ProcessGroupCollective" and plain["collective"] == "LocalCollective"
    for key in ("theta", "phi"):
        for a, b, c in zip(ranks[0][key], ranks[1][key], plain[key]):
            assert torch.equal(a, b), f"{key} differs across ranks"
            torch.testing.assert_close(a, c, rtol=1e-6, atol=1e-9)
    assert torch.equal(ranks[0]["rho"], ranks[1]["rho"])
    torch.testing.assert_close(ranks[0]["rho"], plain["rho"], rtol=1e-6, atol=1e-9)
    assert not torch.equal(ranks[0]["rho"], torch.zeros_like(plain["rho"]))


@pytest.mark.slow
def test_lightning_ddp_with_the_mixin_needs_no_extra_code(tmp_path: Path, launch_env: dict[str, str]) -> None:
    """AdaLFLMixin under strategy="ddp" on 2 CPU processes, each seeded with its rank: the AdaLFL
    synchronises itself (θ and φ bit-identical across ranks) and follows one process stepping on
    both ranks' batches (the shards Lightning's distributed sampler gave them, concatenated)."""
    worker = Path(__file__).with_name("lightning_ddp_worker.py")
    done = subprocess.run([sys.executable, str(worker), str(tmp_path)], capture_output=True, text=True, timeout=240,
                          env=launch_env)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    assert ranks[0]["collective"] == "ProcessGroupCollective" and ranks[0]["steps"] == ranks[1]["steps"] == 10

    sys.path.insert(0, str(worker.parent))
    try:
        import lightning_ddp_worker as w
    finally:
        sys.path.remove(str(worker.parent))
    import adaloss
    from adaloss.data.batches import ResumableCycle

    torch.manual_seed(0)
    module = w.Module()
    adalfl = adaloss.AdaLFL(module.net, torch.optim.SGD(module.net.parameters(), lr=0.1, momentum=0.9),
                            loss=module.loss_network[0], initialized=True)
    meta = ResumableCycle(torch.utils.data.DataLoader(w.data(32, 1), batch_size=8))
    for (x0, y0), (x1, y1) in zip(ranks[0]["batches"], ranks[1]["batches"]):
        adalfl.step((torch.cat([x0, x1]), torch.cat([y0, y1])), next(meta))
    for key, reference in (("theta", module.net.parameters()), ("phi", module.loss_network[0].parameters())):
        for a, b, c in zip(ranks[0][key], ranks[1][key], reference):
            assert torch.equal(a, b), f"{key} differs across ranks"
            torch.testing.assert_close(a, c.detach(), rtol=1e-6, atol=1e-7)
