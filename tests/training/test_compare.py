from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
from scipy import stats

from adaloss.training.compare import RunResult, format_markdown, summarise, welch_p_value


def _hand_welch(a: list[float], b: list[float]) -> float:
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    va = sum((x - ma) ** 2 for x in a) / (len(a) - 1)
    vb = sum((x - mb) ** 2 for x in b) / (len(b) - 1)
    se2 = va / len(a) + vb / len(b)
    t = (ma - mb) / math.sqrt(se2)
    df = se2**2 / ((va / len(a)) ** 2 / (len(a) - 1) + (vb / len(b)) ** 2 / (len(b) - 1))
    return 2.0 * stats.t.sf(abs(t), df)


def test_welch_p_value_matches_hand_formula() -> None:
    a, b = [0.021, 0.023, 0.022, 0.025, 0.020], [0.024, 0.026, 0.025, 0.024, 0.029, 0.027]
    assert welch_p_value(a, b) == pytest.approx(_hand_welch(a, b), rel=1e-10)
    assert welch_p_value([1.0], b) is None
    assert welch_p_value([1.0, 1.0], [1.0, 1.0]) is None
    assert welch_p_value([1.0, 1.0], [2.0, 2.0]) == 0.0


def _result(method: str, seed: int, err: float) -> RunResult:
    return RunResult(method=method, seed=seed, final={"valid_error": err, "test_error": err}, wall_time_s=1.0,
                     run_dir=Path("."), reused=False)


def test_summary_rows_carry_p_value_against_the_handcrafted_baseline() -> None:
    errs = {"adalfl": [0.02, 0.021, 0.019], "ce": [0.03, 0.028, 0.033]}
    results = [_result(m, s, e) for m, es in errs.items() for s, e in enumerate(es)]
    rows = summarise(results)
    assert [r["baseline"] for r in rows] == ["ce", "ce"]
    assert rows[0]["p_value"] == pytest.approx(_hand_welch(errs["adalfl"], errs["ce"]), rel=1e-10)
    assert rows[1]["p_value"] is None
    table = format_markdown(rows)
    assert "p vs ce (Welch)" in table.splitlines()[0] and table.splitlines()[3].endswith("| — |")
    with pytest.raises(ValueError, match=r"Expected `baseline` to be one of \['adalfl', 'ce'\], but got 'mse'"):
        summarise(results, baseline="mse")
    # the p-values of another metric than the first test_* key, named in the table
    other = [dataclasses.replace(r, final={**r.final, "test_balanced_error": r.final["test_error"] + 0.01 * r.seed})
             for r in results]
    rows = summarise(other, test_key="test_balanced_error")
    shifted = {m: [e + 0.01 * s for s, e in enumerate(es)] for m, es in errs.items()}
    assert rows[0]["p_value"] == pytest.approx(_hand_welch(shifted["adalfl"], shifted["ce"]), rel=1e-10)
    assert "p vs ce (Welch, test_balanced_error)" in format_markdown(rows).splitlines()[0]
    with pytest.raises(ValueError, match=r"Expected `test_key` to be one of .*'test_error'.*but got 'test_nmi'"):
        summarise(results, test_key="test_nmi")


def test_diverged_runs_are_counted_and_left_out_of_the_means() -> None:
    results = [_result("ce", 0, 0.03), _result("ce", 1, 0.05), _result("adalfl", 0, 0.02), _result("adalfl", 1, 0.04),
               RunResult("adalfl", 2, {}, 7.0, Path("."), False, diverged="learned loss became nan at step 9")]
    rows = summarise(results)
    ada = rows[1]
    assert (ada["seeds"], ada["diverged"]) == (2, 1)
    assert ada["test_error_mean"] == pytest.approx(0.03)
    assert ada["wall_time_s_mean"] == pytest.approx(3.0)  # the diverged run's compute counts
    assert "| adalfl | 2 (+1 diverged) |" in format_markdown(rows)
