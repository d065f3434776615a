"""The resumable, parallel CMA-ES search behind TaylorGLO, on toy problems."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest

from adaloss.methods.search import candidate_seed, cma_search

OPTIMUM = np.arange(1, 9) / 4  # a shifted sphere in 8 dimensions


def sphere(x: np.ndarray, seed: int) -> float:
    return float(np.sum((x - OPTIMUM) ** 2))


def noisy_sphere(x: np.ndarray, seed: int) -> float:
    # reads the global NumPy generator, which the search seeds per candidate in every process
    return sphere(x, seed) + 1e-3 * float(np.random.rand())


def flaky_sphere(x: np.ndarray, seed: int) -> float:
    if seed % 5 == 0:
        raise RuntimeError("candidate blew up")
    if seed % 5 == 1:
        return math.nan
    return sphere(x, seed)


def always_fails(x: np.ndarray, seed: int) -> float:
    raise ValueError("no")


@pytest.fixture
def importable_tests(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let spawned worker processes import this module's fitness functions by name."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2]))


def test_reaches_the_optimum_of_a_shifted_sphere() -> None:
    result = cma_search(sphere, np.zeros(8), sigma=1.0, popsize=10, generations=60, seed=1)
    assert result.fitness < 1e-3
    np.testing.assert_allclose(result.x, OPTIMUM, atol=0.03)
    assert result.generations == 60 and result.evaluations == 600 and result.failures == 0
    assert len(result.history) == 60 and min(result.history) == result.fitness


def test_failed_candidates_get_the_worst_fitness_and_are_counted(caplog: pytest.LogCaptureFixture) -> None:
    generations, popsize = 15, 8
    expected = sum(candidate_seed(3, g, i) % 5 in (0, 1) for g in range(generations) for i in range(popsize))
    assert expected > 0
    with caplog.at_level(logging.WARNING, logger="adaloss"):
        result = cma_search(flaky_sphere, np.zeros(8), sigma=1.0, popsize=popsize, generations=generations, seed=3)
    assert result.failures == expected and result.evaluations == generations * popsize
    assert math.isfinite(result.fitness) and result.fitness < sphere(np.zeros(8), 0)
    assert "candidates failed" in caplog.text and "RuntimeError: candidate blew up" in caplog.text


def test_a_search_where_everything_fails_ends_at_x0() -> None:
    x0 = np.full(8, 0.5)
    result = cma_search(always_fails, x0, popsize=4, generations=3)
    assert result.failures == 12 and result.fitness == math.inf
    np.testing.assert_array_equal(result.x, x0)
    assert result.history == [math.inf] * 3


@pytest.mark.slow  # a pool of spawned worker processes
@pytest.mark.usefixtures("importable_tests")
def test_two_workers_give_the_same_result_as_one() -> None:
    kw = {"sigma": 1.0, "popsize": 6, "generations": 4, "seed": 7}
    one = cma_search(noisy_sphere, np.zeros(8), workers=1, **kw)
    two = cma_search(noisy_sphere, np.zeros(8), workers=2, **kw)
    assert two.fitness == one.fitness and two.history == one.history
    np.testing.assert_array_equal(two.x, one.x)


def test_resume_after_k_generations_equals_an_uninterrupted_search(tmp_path: Path) -> None:
    kw = {"sigma": 1.0, "popsize": 6, "generations": 8, "seed": 2}
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    full = cma_search(noisy_sphere, np.zeros(8), state_path=tmp_path / "full.json", **kw)
    assert np.array_equal(np.random.get_state()[1], before)  # the caller's generator is left alone

    seen: list[int] = []

    def die_after_three(generation: int, best: float, seconds_left: float) -> None:
        seen.append(generation)
        assert best <= min(full.history[:generation]) + 1e-12 and seconds_left >= 0
        if generation == 3:
            raise KeyboardInterrupt

    path = tmp_path / "part.json"
    with pytest.raises(KeyboardInterrupt):
        cma_search(noisy_sphere, np.zeros(8), state_path=path, progress=die_after_three, **kw)
    np.random.seed(999)  # whatever the caller's generator does in between does not matter
    resumed = cma_search(noisy_sphere, np.zeros(8), state_path=path, progress=die_after_three, **{**kw})
    assert seen == [1, 2, 3, 4, 5, 6, 7, 8]
    assert resumed.resumed_from == 3 and resumed.generations == 8 and resumed.evaluations == 48
    assert resumed.fitness == full.fitness and resumed.history == full.history
    np.testing.assert_array_equal(resumed.x, full.x)
    # a finished search returns its result without evaluating again
    again = cma_search(always_fails, np.zeros(8), state_path=path, **kw)
    assert again.fitness == full.fitness and again.failures == 0
    with pytest.raises(ValueError, match=r"different settings \(sigma: 1.0 -> 2.0\)"):
        cma_search(sphere, np.zeros(8), state_path=path, **{**kw, "sigma": 2.0})
    with pytest.raises(ValueError, match="already ran 8 generations"):
        cma_search(sphere, np.zeros(8), state_path=path, **{**kw, "generations": 5})


def test_bad_arguments_name_themselves() -> None:
    with pytest.raises(ValueError, match=r"Expected `popsize` to be >= 2, but got 1"):
        cma_search(sphere, np.zeros(8), popsize=1)
    with pytest.raises(TypeError, match=r"Expected `generations` to be an integer, but got 2.5"):
        cma_search(sphere, np.zeros(8), generations=2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"Expected `sigma` to be > 0"):
        cma_search(sphere, np.zeros(8), sigma=0.0)
    with pytest.raises(ValueError, match=r"Expected `x0` to be at least 2 finite numbers"):
        cma_search(sphere, [1.0])
    with pytest.raises(TypeError, match="runs the fitness in other processes, which needs it picklable"):
        cma_search(lambda x, s: 0.0, np.zeros(8), workers=2, generations=1)


def test_state_file_is_json_and_identity_must_be_json(tmp_path: Path) -> None:
    import json

    path = tmp_path / "state.json"
    kw = {"sigma": 1.0, "popsize": 4, "generations": 2, "seed": 5}
    first = cma_search(sphere, np.zeros(8), state_path=path, identity={"shape": (3, 4)}, **kw)
    state = json.loads(path.read_text())  # numbers, strings and lists only
    assert state["identity"]["shape"] == [3, 4] and state["generation"] == 2
    # a tuple in `identity` reads back as a list: still the same settings
    again = cma_search(always_fails, np.zeros(8), state_path=path, identity={"shape": (3, 4)}, **kw)
    assert again.fitness == first.fitness and again.resumed_from == 2
    with pytest.raises(TypeError, match="JSON values"):
        cma_search(sphere, np.zeros(8), state_path=tmp_path / "other.json", identity={"f": sphere}, **kw)


def test_resume_replays_failed_candidates_exactly(tmp_path: Path) -> None:
    # the penalties given to failed candidates are recomputed on replay, so the stream continues unchanged
    kw = {"sigma": 1.0, "popsize": 8, "generations": 6, "seed": 3}
    full = cma_search(flaky_sphere, np.zeros(8), **kw)
    path = tmp_path / "state.json"
    cma_search(flaky_sphere, np.zeros(8), state_path=path, **{**kw, "generations": 2})
    resumed = cma_search(flaky_sphere, np.zeros(8), state_path=path, **kw)
    assert resumed.resumed_from == 2 and resumed.failures == full.failures > 0
    assert resumed.history == full.history and resumed.fitness == full.fitness
    np.testing.assert_array_equal(resumed.x, full.x)
