"""The learned loss network's integer option ``hidden``: a float is an error, not a truncation,
constructed directly and through a run's config (``method_args.hidden=[0.5]``)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from adaloss.cli import main
from adaloss.learners import create_learner
from adaloss.losses import LossNetwork
from adaloss.training import load_config, parse_overrides

FLOATS = "Floats are not accepted, not even whole ones such as 2.0."


def test_hidden_widths_build_the_layers() -> None:
    net = LossNetwork(hidden=(8, 4))
    assert net.hidden == [8, 4] and net.config()["hidden"] == [8, 4]
    assert [tuple(layer.weight.shape) for layer in net.layers] == [(8, 2), (4, 8), (1, 4)]
    assert LossNetwork(hidden=[]).hidden == []  # a single linear layer


@pytest.mark.parametrize("hidden", [[0.5], [2.0], [40, 40.0]])
def test_a_float_width_is_an_error_not_a_truncation(hidden: list[float]) -> None:
    expected = f"Expected `hidden` to be a list of positive integers, but got {hidden!r}. {FLOATS}"
    with pytest.raises(TypeError, match=f"^{re.escape(expected)}$"):
        LossNetwork(hidden=hidden)


@pytest.mark.parametrize("hidden,error", [([0], ValueError), ([-4], ValueError), (40, TypeError), ([True], TypeError)])
def test_other_bad_widths_name_the_argument(hidden: object, error: type) -> None:
    expected = f"Expected `hidden` to be a list of positive integers, but got {hidden!r}."
    with pytest.raises(error, match=f"^{re.escape(expected)}$"):
        LossNetwork(hidden=hidden)  # type: ignore[arg-type]


@pytest.mark.parametrize("method", ["adalfl", "ml3"])
def test_the_config_override_path_reaches_the_check(method: str) -> None:
    assert parse_overrides(["method_args.hidden=[0.5]"]) == {"method_args": {"hidden": [0.5]}}
    cfg = load_config(overrides=[f"method={method}", "method_args.hidden=[0.5]"])
    with pytest.raises(TypeError, match=r"Expected `hidden` to be a list of positive integers, but got \[0\.5\]"):
        create_learner(cfg.method, task="classification", **cfg.method_args)
    ok = load_config(overrides=[f"method={method}", "method_args.hidden=[3]"])
    create_learner(ok.method, task="classification", **ok.method_args)  # an int width is fine


def test_the_cli_reports_a_float_width_and_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["train", "method=adalfl", "method_args.hidden=[0.5]", "steps=2", "progress=off",
                 f"run_dir={tmp_path}"])
    err = capsys.readouterr().err
    assert code == 2
    assert "adaloss: error: Expected `hidden` to be a list of positive integers, but got [0.5]." in err
    assert FLOATS in err
