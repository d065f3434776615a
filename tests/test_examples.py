"""The scripts in examples/ run end to end (``main(["--steps", "20"])``) and report sensible numbers."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from types import ModuleType

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _load(name: str) -> ModuleType:
    path = EXAMPLES / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"adaloss_example_{name}", path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _is_accuracy(value: float) -> bool:
    return isinstance(value, float) and 0.0 <= value <= 1.0


def test_examples_are_the_ones_tested() -> None:
    assert sorted(p.stem for p in EXAMPLES.glob("*.py")) == ["adalfl_plain_loop", "ala_plain_loop",
                                                              "lightning_adalfl_ala", "taylorglo_plain_loop"]


def test_adalfl_plain_loop(capsys: pytest.CaptureFixture[str]) -> None:
    results = _load("adalfl_plain_loop").main(["--steps", "20"])
    assert set(results) == {"adalfl", "ce"}
    assert _is_accuracy(results["adalfl"]["test_accuracy"]) and _is_accuracy(results["ce"]["test_accuracy"])
    assert results["ce"]["test_accuracy"] > 0.2  # 20 SGD steps on digits are well above chance (0.1)
    assert math.isfinite(results["adalfl"]["meta_loss"]) and math.isfinite(results["adalfl"]["init_meta_loss"])
    out = capsys.readouterr().out
    assert "AdaLFL (6 init steps): test accuracy" in out and "cross-entropy:" in out


def test_taylorglo_plain_loop(capsys: pytest.CaptureFixture[str]) -> None:
    results = _load("taylorglo_plain_loop").main(["--steps", "20", "--popsize", "4", "--generations", "2",
                                                   "--partial-steps", "10"])
    t = results["taylorglo"]
    assert isinstance(t, dict) and t["evaluations"] == 8 and t["generations"] == 2
    assert _is_accuracy(t["test_accuracy"]) and _is_accuracy(results["ce"]["test_accuracy"])  # type: ignore[index]
    assert 0.0 <= t["best_fitness"] <= 1.0 and any(v != 0 for v in t["theta"])  # a validation error; θ moved from 0
    assert "TaylorGLO loss, 20 steps: test accuracy" in capsys.readouterr().out


def test_ala_plain_loop(capsys: pytest.CaptureFixture[str]) -> None:
    result = _load("ala_plain_loop").main(["--steps", "20"])
    assert _is_accuracy(result["test_accuracy"])
    assert result["controller_steps"] == 10  # K = 2
    assert len(result["rewards"]) == 10 and all(r in (-1.0, 0.0, 1.0) for r in result["rewards"])
    assert result["phi_stats"]["diag_mean"] == 1.0  # the diagonal is not adapted by default
    assert result["phi_stats"]["offdiag_mean_abs"] > 0  # 11 actions on 45 pairs moved Φ off the identity
    assert "ala_metric" in result["last"]  # step 20 closes an episode
    out = capsys.readouterr().out
    assert "controller steps 10" in out and "Φ (45 parameters): diag_mean +1.000" in out


@pytest.mark.filterwarnings("ignore:The '(train|val)_dataloader' does not have many workers")
@pytest.mark.filterwarnings("ignore:`isinstance\\(treespec, LeafSpec\\)` is deprecated:FutureWarning")
def test_lightning_adalfl_ala(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("lightning")
    results = _load("lightning_adalfl_ala").main(["--steps", "20", "--log-dir", str(tmp_path)])
    assert set(results) == {"adalfl", "ala"}
    for method, r in results.items():
        assert r["global_step"] == 20, method
        assert _is_accuracy(r["test_accuracy"]), method
    assert {"loss", "meta_loss", "meta_skipped"} <= set(results["adalfl"]["logged"])
    assert {"ala/ala_metric", "ala/reward", "ala/phi_offdiag_mean"} <= set(results["ala"]["logged"])
    assert (tmp_path / "adalfl").is_dir() and (tmp_path / "ala").is_dir()  # the CSV logs
    assert "adalfl: test accuracy" in capsys.readouterr().out
