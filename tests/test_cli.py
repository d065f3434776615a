from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from adaloss.cli import main


def test_train_and_bad_values(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "steps=5", "model_args.hidden=[8]", f"run_dir={tmp_path}"]) == 0
    assert "test_error" in capsys.readouterr().out
    # overrides may also come after options
    assert main(["train", "--data-dir", str(tmp_path / "d"), "steps=3", "model_args.hidden=[8]",
                 f"run_dir={tmp_path / 'after'}"]) == 0
    assert json.loads((tmp_path / "after" / "summary.json").read_text())["step"] == 3
    assert main(["train", "--data-dir", str(tmp_path), "notakeyvalue"]) == 2
    assert "Expected an override of the form key=value, but got 'notakeyvalue'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "steps=3", "--data-dir", str(tmp_path), "--bogus"])
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err
    assert main(["train", "optimizer=rmsprop"]) == 2
    err = capsys.readouterr().err
    assert "Expected `optimizer` to be one of ['sgd', 'adam', 'adamw'], but got 'rmsprop'" in err
    assert main(["train", "model=lenet7", f"run_dir={tmp_path / 'x'}"]) == 2
    assert "Expected `model` to be one of" in capsys.readouterr().err
    assert main(["train", "dataset=mnist", f"run_dir={tmp_path / 'y'}", "--data-dir", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "empty") in err


def test_compare_table_csv_and_reuse(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["compare", "--methods", "ce,focal", "--seeds", "0,1", "--out", str(tmp_path),
            "steps=30", "batch_size=32", "model_args.hidden=[16]", "progress=off"]
    assert main(args) == 0
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert lines[0].startswith("| method | seeds | valid_error (%) | test_error (%) | wall time (s) |")
    assert lines[2].startswith("| ce | 2 |") and lines[3].startswith("| focal | 2 |")
    assert (tmp_path / "learning_curves.png").stat().st_size > 0
    rows = list(csv.DictReader((tmp_path / "runs.csv").read_text().splitlines()))
    assert [(r["method"], r["seed"]) for r in rows] == [("ce", "0"), ("ce", "1"), ("focal", "0"), ("focal", "1")]
    assert main(args) == 0
    assert captured.err.count("reused") == 0 and capsys.readouterr().err.count("reused") == 4
    assert main(["compare", "--methods", "mse", "--seeds", "0", "--out", str(tmp_path / "z"), "steps=2"]) == 2
    assert "Method 'mse' applies to ['regression']" in capsys.readouterr().err


def test_compare_takes_per_method_args(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["compare", "--methods", "ce,focal", "--seeds", "0", "--out", str(tmp_path), "steps=5",
            "model_args.hidden=[8]", "method_args.focal.gamma=0.5"]
    assert main(args) == 0
    import yaml

    cfg = yaml.safe_load((tmp_path / "focal" / "seed0" / "config.yaml").read_text())
    assert cfg["method_args"] == {"gamma": 0.5}
    assert yaml.safe_load((tmp_path / "ce" / "seed0" / "config.yaml").read_text())["method_args"] == {}
    capsys.readouterr()
    assert main([*args[:-1], "method_args.gamma=0.5"]) == 2
    assert "keyed by method" in capsys.readouterr().err


def test_compare_records_a_diverged_run_and_goes_on(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["compare", "--methods", "ce", "--seeds", "0,1", "--out", str(tmp_path), "steps=20", "log_every=5",
            "lr=1e30", "model_args.hidden=[8]", "progress=off", "divergence_factor=null"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert captured.err.count("diverged: Training loss became") == 2
    assert "| ce | 0 (+2 diverged) |" in captured.out
    record = json.loads((tmp_path / "ce" / "seed1" / "diverged.json").read_text())
    assert record["final"] == {} and "by step 5" in record["diverged"]
    rows = list(csv.DictReader((tmp_path / "runs.csv").read_text().splitlines()))
    assert all(r["diverged"].startswith("Training loss became") for r in rows)
    assert main(args) == 0  # reused, not retrained
    assert capsys.readouterr().err.count("reused") == 2


def test_compare_without_methods_takes_the_configured_task(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from adaloss.learners import methods_for

    args = ["compare", "--seeds", "0", "--out", str(tmp_path), "task=embedding", "steps=4", "batch_size=20",
            "samples_per_class=4", "model_args.hidden=[8]", "eval_every=0", "progress=off"]
    assert main(args) == 0
    out = capsys.readouterr().out
    expected = methods_for("embedding", runnable_on_defaults=True)
    assert {"contrastive", "ala"} <= set(expected) and "ce" not in expected
    assert [line.split("|")[1].strip() for line in out.splitlines()[2:]] == expected


def test_train_on_an_imbalanced_variant(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "steps=3", "model_args.hidden=[8]", "minority_classes=[1,2]", "minority_fraction=0.2",
                 "metrics=[error,aucpr]", f"run_dir={tmp_path}"]) == 0
    assert "test_aucpr" in capsys.readouterr().out
    assert main(["train", "steps=3", "minority_fraction=0.2", f"run_dir={tmp_path / 'a'}"]) == 2
    assert "`minority_fraction` applies with `minority_classes` only" in capsys.readouterr().err
    assert main(["train", "steps=3", "minority_classes=[11]", f"run_dir={tmp_path / 'b'}"]) == 2
    assert "Invalid config key `minority_classes` for dataset 'digits'" in capsys.readouterr().err


def test_builtin_compare_job_runs_the_documented_methods_on_digits(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    from adaloss.cli import BUILTIN_METHODS
    from adaloss.learners import methods_for

    seen: dict[str, object] = {}

    class Stop(Exception):
        pass

    def fake_compare(cfg, *, methods, seeds, out_dir, on_result=None, overwrite=False,  # type: ignore[no-untyped-def]
                     on_plan=None, executor=None):
        seen.update(cfg=cfg, methods=list(methods), seeds=list(seeds), out=out_dir)
        raise Stop

    # the package re-exports the function under the module's name, so fetch the module itself
    monkeypatch.setattr(importlib.import_module("adaloss.training.compare"), "compare", fake_compare)
    with pytest.raises(Stop):
        main(["compare"])
    assert seen["methods"] == ["ce", "label_smoothing", "focal", "adalfl", "ml3", "ala"] == list(BUILTIN_METHODS)
    assert set(BUILTIN_METHODS) < set(methods_for("classification", runnable_on_defaults=True))
    cfg = seen["cfg"]
    assert (cfg.dataset, cfg.model, cfg.steps, seen["seeds"]) == ("digits", "mlp", 1000, [0, 1, 2])  # type: ignore[attr-defined]
    with pytest.raises(Stop):  # an explicit list still wins
        main(["compare", "--methods", "ce,taylorglo"])
    assert seen["methods"] == ["ce", "taylorglo"]


def test_list_keys_reads_method_defaults_from_the_method_classes(capsys: pytest.CaptureFixture[str]) -> None:
    from adaloss.methods import INIT_STEPS
    from adaloss.methods.search import POPSIZE

    assert main(["list", "keys"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert f"method_args.init_steps={INIT_STEPS}\t# adalfl" in out and "method_args.init_steps=250\t# ml3" in out
    assert f"method_args.popsize={POPSIZE}\t# taylorglo" in out and "method_args.gamma=2.0\t# focal" in out
    assert not any(line.startswith(("method_args.loss=", "method_args.collective=")) for line in out)
