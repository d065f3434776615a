"""ALA workers as ranks (2 CPU ranks, gloo): own child models, one shared policy."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from adaloss.methods.ala import ALAPolicy

Run = Callable[..., "subprocess.CompletedProcess[str]"]  # the torchrun and train_in_subprocess fixtures

ARGS = ["dataset=digits", "model=mlp", "model_args.hidden=[32]", "batch_size=64", "threads=1", "progress=off",
        "log_every=5", "method=ala", "method_args.every=5", "method_args.smoothing_window=2", "method_args.val_batches=2",
        "method_args.reward=difference", "steps=30", "checkpoint_every=5", "keep_checkpoints=true"]


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def _policy(cfg: dict, state: dict) -> ALAPolicy:
    policy = ALAPolicy(cfg["in_features"], cfg["hidden"])
    policy.load_state_dict(state)
    return policy


@pytest.mark.slow
def test_workers_share_one_policy_bit_for_bit_and_pool_their_episodes(
    tmp_path: Path, torchrun: Run, train_in_subprocess: Run
) -> None:
    run = torchrun([*ARGS, f"run_dir={tmp_path}"])
    assert run.returncode == 0, run.stderr
    ranks = [sorted((tmp_path / "checkpoints" / f"rank{r}").glob("step*.pt")) for r in (0, 1)]
    assert [p.name for p in ranks[0]] == [p.name for p in ranks[1]] == [f"step{s:08d}.pt" for s in range(5, 31, 5)]
    states = [[_load(p) for p in paths] for paths in ranks]
    for a, b in zip(*states):
        ca, cb = a["learner"]["controller"], b["learner"]["controller"]
        for k in ca["policy"]:
            assert torch.equal(ca["policy"][k], cb["policy"][k]), (a["step"], k)
        assert ca["baseline"] == cb["baseline"]
        assert ca["episodes"] == cb["episodes"] == a["step"] // 5  # the first action is taken before step 0
    # the workers diverge: own initialisation and data order, so own models, rewards and actions
    last0, last1 = states[0][-1], states[1][-1]
    assert any(not torch.equal(last0["model"][k], last1["model"][k]) for k in last0["model"])
    assert last0["learner"]["controller"]["rewards"] != last1["learner"]["controller"]["rewards"]

    # one pooled update, recomputed independently: Adam on the mean of the ranks' REINFORCE gradients,
    # and the baseline moved by the ranks' mean reward
    before = [states[r][1]["learner"]["controller"] for r in (0, 1)]  # step 10: an episode pending
    after = [states[r][2]["learner"]["controller"] for r in (0, 1)]  # step 15: it was rewarded
    policy = _policy(before[0]["policy_config"], before[0]["policy"])
    grads = []
    for r in (0, 1):
        ep, reward = before[r]["pending"], after[r]["rewards"][-1]
        logp = F.log_softmax(policy(ep["features"]), -1).gather(1, ep["actions"][:, None]).squeeze(1)
        loss = -(reward - before[0]["baseline"]) * logp.mean()
        grads.append(torch.autograd.grad(loss, list(policy.parameters())))
    opt = torch.optim.Adam(policy.parameters(), lr=1e-3)
    opt.load_state_dict(before[0]["optimizer"])
    for p, g0, g1 in zip(policy.parameters(), *grads):
        p.grad = (g0 + g1) / 2
    opt.step()
    expected = policy.state_dict()
    for k, v in after[0]["policy"].items():
        torch.testing.assert_close(v, expected[k], rtol=1e-6, atol=1e-8)
    mean_reward = (after[0]["rewards"][-1] + after[1]["rewards"][-1]) / 2
    assert abs(after[0]["baseline"] - (0.9 * before[0]["baseline"] + 0.1 * mean_reward)) < 1e-12

    # the same two workers as threads of one process (workers=2): the same bits as the two ranks
    threads = tmp_path / "threads"
    one = train_in_subprocess([*ARGS, "workers=2", f"run_dir={threads}"])
    assert one.returncode == 0, one.stderr
    assert one.stdout.count("run_dir:") == 1
    for r in (0, 1):
        for path in ranks[r]:
            a, b = _load(path), _load(threads / "checkpoints" / f"rank{r}" / path.name)
            for k in a["model"]:
                assert torch.equal(a["model"][k], b["model"][k]), (r, path.name, k)
            for k in a["learner"]["controller"]["policy"]:
                assert torch.equal(a["learner"]["controller"]["policy"][k], b["learner"]["controller"]["policy"][k])
            assert a["learner"]["controller"]["rewards"] == b["learner"]["controller"]["rewards"]


@pytest.mark.slow
def test_worker_checkpoints_resume_every_rank_from_a_step_all_of_them_have(tmp_path: Path, torchrun: Run) -> None:
    full = tmp_path / "full"
    assert torchrun([*ARGS, f"run_dir={full}"]).returncode == 0
    # a job killed while the ranks were writing step 30: rank 1 is one checkpoint behind rank 0
    cut = tmp_path / "cut"
    shutil.copytree(full, cut)
    (cut / "summary.json").unlink()
    r1 = cut / "checkpoints" / "rank1"
    (r1 / "last.pt").unlink()
    (r1 / "prev.pt").rename(r1 / "last.pt")
    for r in (0, 1):
        for p in (cut / "checkpoints" / f"rank{r}").glob("step*.pt"):
            p.unlink()
    done = torchrun([*ARGS, f"run_dir={cut}", "--resume"])
    assert done.returncode == 0, done.stderr
    for r in (0, 1):
        a = _load(full / "checkpoints" / f"rank{r}" / "last.pt")
        b = _load(cut / "checkpoints" / f"rank{r}" / "last.pt")
        assert a["step"] == b["step"] == 30
        for k in a["model"]:
            assert torch.equal(a["model"][k], b["model"][k]), (r, k)
        for k in a["learner"]["controller"]["policy"]:
            assert torch.equal(a["learner"]["controller"]["policy"][k], b["learner"]["controller"]["policy"][k])


@pytest.mark.slow
def test_workers_in_one_process_refuse_a_method_that_does_not_pool_them(
    tmp_path: Path, train_in_subprocess: Run
) -> None:
    run = train_in_subprocess(["model_args.hidden=[8]", "steps=3", "method=ce", "workers=2", f"run_dir={tmp_path}"])
    assert run.returncode == 2
    assert "`workers` applies to methods whose workers share what they learn (ala); method 'ce'" in run.stderr


@pytest.mark.slow
def test_eight_workers_as_threads_are_eight_ranks_bit_for_bit(tmp_path: Path, torchrun: Run,
                                                                train_in_subprocess: Run) -> None:
    tiny = [a for a in ARGS if not a.startswith(("steps=", "model_args.hidden=", "checkpoint_every="))]
    tiny += ["steps=10", "model_args.hidden=[8]", "checkpoint_every=10"]
    ranks = torchrun([*tiny, f"run_dir={tmp_path / 'ranks'}"], nproc=8, timeout=600)
    assert ranks.returncode == 0, ranks.stderr
    threads = train_in_subprocess([*tiny, "workers=8", f"run_dir={tmp_path / 'threads'}"], timeout=600)
    assert threads.returncode == 0, threads.stderr
    for r in range(8):
        a = _load(tmp_path / "ranks" / "checkpoints" / f"rank{r}" / "last.pt")
        b = _load(tmp_path / "threads" / "checkpoints" / f"rank{r}" / "last.pt")
        assert a["step"] == b["step"] == 10
        for k in a["model"]:
            assert torch.equal(a["model"][k], b["model"][k]), (r, k)
        for k in a["learner"]["controller"]["policy"]:
            assert torch.equal(a["learner"]["controller"]["policy"][k], b["learner"]["controller"]["policy"][k])
        assert a["learner"]["controller"]["rewards"] == b["learner"]["controller"]["rewards"]
    policies = [_load(tmp_path / "ranks" / "checkpoints" / f"rank{r}" / "last.pt")["learner"]["controller"]["policy"]
                for r in range(8)]
    assert all(torch.equal(p[k], policies[0][k]) for p in policies for k in p)  # one policy, shared
