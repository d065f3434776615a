"""ALA policy pretraining: a chain of short runs, each starting from the policy the last one ended
with; the file it writes starts later runs, and a second call reuses the finished runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from adaloss.cli import main
from adaloss.methods.ala import load_policy
from adaloss.training import ConfigError, TrainConfig, build_trainer
from adaloss.training.pretrain import pretrain_policy

ALA = {"every": 10, "val_batches": 2, "smoothing_window": 2}


def _cfg() -> TrainConfig:
    return TrainConfig(method="ala", steps=40, eval_every=20, log_every=20, threads=1, progress="off",
                       model_args={"hidden": [16]}, method_args=dict(ALA))


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_the_chain_passes_its_policy_on_and_the_file_starts_a_later_run(tmp_path: Path) -> None:
    seen: list[int] = []
    out = pretrain_policy(_cfg(), runs=3, out=tmp_path / "policy.pt", work_dir=tmp_path / "work",
                          on_run=lambda k, summary: seen.append(k))
    assert seen == [0, 1, 2]
    configs = [yaml.safe_load((tmp_path / "work" / f"run{k}" / "config.yaml").read_text()) for k in range(3)]
    assert [c["seed"] for c in configs] == [100, 101, 102]
    assert "policy" not in configs[0]["method_args"]
    assert [c["method_args"]["policy"] for c in configs[1:]] == [str(tmp_path / "work" / f"run{k}" / "policy.pt")
                                                                  for k in (0, 1)]
    final = load_policy(out)
    assert _same(final, load_policy(tmp_path / "work" / "run2" / "policy.pt"))
    assert not _same(final, load_policy(tmp_path / "work" / "run0" / "policy.pt"))  # it kept learning
    later = build_trainer(_cfg().replace(method_args={**ALA, "policy": str(out)}, run_dir=str(tmp_path / "later")))
    assert _same(later.learner.core.controller.policy, final)  # type: ignore[attr-defined]


def test_a_second_call_reuses_the_finished_runs(tmp_path: Path) -> None:
    pretrain_policy(_cfg(), runs=2, out=tmp_path / "a.pt", work_dir=tmp_path / "work")
    stamps = [(tmp_path / "work" / f"run{k}" / "summary.json").stat().st_mtime_ns for k in (0, 1)]
    pretrain_policy(_cfg(), runs=2, out=tmp_path / "b.pt", work_dir=tmp_path / "work")
    assert stamps == [(tmp_path / "work" / f"run{k}" / "summary.json").stat().st_mtime_ns for k in (0, 1)]
    assert _same(load_policy(tmp_path / "a.pt"), load_policy(tmp_path / "b.pt"))


def test_datasets_in_turn_and_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="`method` must be 'ala'"):
        pretrain_policy(_cfg().replace(method="ce", method_args={}), runs=1, out=tmp_path / "p.pt")
    with pytest.raises(ConfigError, match="train_policy=false"):
        pretrain_policy(_cfg().replace(method_args={**ALA, "train_policy": False}), runs=1, out=tmp_path / "p.pt")
    with pytest.raises(ConfigError, match=r"Expected 2 distinct `seeds`"):
        pretrain_policy(_cfg(), runs=2, seeds=[5, 5], out=tmp_path / "p.pt")
    with pytest.raises(ValueError, match="`runs`"):
        pretrain_policy(_cfg(), runs=0, out=tmp_path / "p.pt")


def test_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "policy.pt"
    argv = ["ala-pretrain", "--runs", "2", "--seeds", "7,8", "--out", str(out), "--work-dir", str(tmp_path / "w"),
            "method=ala", "steps=30", "eval_every=30", "threads=1", "model_args.hidden=[16]",
            *(f"method_args.{k}={v}" for k, v in ALA.items())]
    assert main(argv) == 0
    assert f"method_args.policy={out}" in capsys.readouterr().out
    assert yaml.safe_load((tmp_path / "w" / "run1" / "config.yaml").read_text())["seed"] == 8
    load_policy(out)
    assert main(["ala-pretrain", "--runs", "1", "--out", str(tmp_path / "x.pt"), "method=ce"]) == 2
