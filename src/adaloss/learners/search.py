"""A resumable, process-parallel CMA-ES search (pycma), the optimiser of TaylorGLO.

TaylorGLO (Gonzalez & Miikkulainen, GECCO 2021) evolves its 8 loss parameters with CMA-ES; this
module holds the search itself, independent of losses and models.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import pickle
import random
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adaloss._validation import check_int, check_positive

__all__ = ["Fitness", "SearchResult", "candidate_seed", "cma_search"]

logger = logging.getLogger("adaloss")

#: ``fitness(x, seed) -> float`` to minimise; ``seed`` is the candidate's own fixed seed (the global
#: Python, NumPy and torch generators are also seeded with it before the call).
Fitness = Callable[[np.ndarray, int], float]
#: ``progress(generation, best_fitness_so_far, seconds_left_estimate)``
Progress = Callable[[int, float, float], None]

STATE_FORMAT = "adaloss-cma-search"
STATE_VERSION = 1


@dataclass(frozen=True)
class SearchResult:
    """The outcome of :func:`cma_search`.

    Attributes:
        x: the best candidate evaluated (``x0`` if every evaluation failed).
        fitness: its fitness (``inf`` if every evaluation failed).
        history: the best fitness of each generation (``inf`` for a generation where all failed).
        generations: generations completed.
        evaluations: fitness evaluations made, failed ones included.
        failures: evaluations that raised or returned a non-finite value.
        resumed_from: the generation the last call started from (0: not resumed).
    """

    x: np.ndarray
    fitness: float
    history: list[float] = field(default_factory=list)
    generations: int = 0
    evaluations: int = 0
    failures: int = 0
    resumed_from: int = 0


def candidate_seed(seed: int, generation: int, index: int) -> int:
    """The fixed seed of candidate ``index`` of ``generation`` (independent of who evaluates it)."""
    return int(np.random.SeedSequence([seed, generation, index]).generate_state(1)[0])


# ---------------------------------------------------------------------- RNG isolation
@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed Python, NumPy and torch with ``seed`` for the block; restore the caller's states after."""
    py, npy, cpu = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(npy)
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


@contextmanager
def _cma_context(state: dict[str, Any]) -> Iterator[None]:
    """Run pycma with the search's own global NumPy state (for any draw outside its sampler) and
    with its warnings logged instead of printed; the caller's NumPy state is restored after."""
    outer = np.random.get_state()
    np.random.set_state(state["rng"])
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
        for w in caught:
            logger.debug("cma: %s", w.message)
    finally:
        state["rng"] = np.random.get_state()
        np.random.set_state(outer)


# ---------------------------------------------------------------------- evaluation
def _evaluate(fitness: Fitness, x: np.ndarray, seed: int) -> tuple[float | None, str | None]:
    """``(value, None)``, or ``(None, why)`` when the fitness raised or was not finite."""
    try:
        with _seeded(seed):
            value = float(fitness(x, seed))
    except Exception as e:  # noqa: BLE001 - any failure of one candidate is that candidate's, not the search's
        return None, f"{type(e).__name__}: {e}"
    if not math.isfinite(value):
        return None, f"non-finite fitness {value}"
    return value, None


_WORKER_FITNESS: Fitness | None = None


def _init_worker(payload: bytes, sys_path: list[str]) -> None:
    global _WORKER_FITNESS
    torch.set_num_threads(1)
    sys.path[:] = list(dict.fromkeys([*sys_path, *sys.path]))  # the parent's import path, as it is now
    _WORKER_FITNESS = pickle.loads(payload)


def _worker_evaluate(x: np.ndarray, seed: int) -> tuple[float | None, str | None]:
    assert _WORKER_FITNESS is not None, "worker not initialised"
    return _evaluate(_WORKER_FITNESS, x, seed)


class _Evaluator:
    """Evaluates one generation, in this process or in a pool of spawned processes.

    The fitness is pickled once, with plain pickle (tensors travel in the pipe, not through shared
    memory), and handed to each worker when it starts; a generation only sends candidates and seeds.
    """

    def __init__(self, fitness: Fitness, workers: int) -> None:
        self.fitness = fitness
        self.workers = workers
        self.pool: ProcessPoolExecutor | None = None
        self.payload: bytes | None = None
        self.started = False  # whether a worker has returned a result yet
        if workers > 1:
            try:
                self.payload = pickle.dumps(fitness, protocol=pickle.HIGHEST_PROTOCOL)
            except (pickle.PicklingError, TypeError, AttributeError) as e:
                raise TypeError(
                    f"`workers`={workers} evaluates candidates in other processes, so the fitness must be picklable "
                    f"(a module-level function or an object of module-level classes), but pickling failed: {e}"
                ) from e

    def __call__(self, xs: Sequence[np.ndarray], seeds: Sequence[int]) -> list[tuple[float | None, str | None]]:
        if self.payload is None:
            return [_evaluate(self.fitness, x, s) for x, s in zip(xs, seeds)]
        if self.pool is None:
            # spawn, not fork: safe with CUDA and with torch's thread pools in the parent
            self.pool = ProcessPoolExecutor(
                max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker, initargs=(self.payload, list(sys.path)),
            )
        futures = [self.pool.submit(_worker_evaluate, x, s) for x, s in zip(xs, seeds)]
        out: list[tuple[float | None, str | None]] = []
        broken: BrokenProcessPool | None = None
        for f in futures:
            try:
                out.append(f.result())
                self.started = True
            except BrokenProcessPool as e:
                broken = e
                out.append((None, f"worker process died: {e}"))
        if broken is not None:
            self.close()  # a fresh pool for the next generation
            if not self.started:  # no worker ever returned: the pool cannot run, no candidate is to blame
                raise RuntimeError(
                    f"The {self.workers} worker processes of the search failed before returning any result "
                    f"({broken}); see their error output above, or run with workers=1."
                ) from broken
        return out

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None


# ---------------------------------------------------------------------- state file
def _write_state(path: Path, state: dict[str, Any]) -> None:
    """Pickle ``state`` to ``path`` atomically (temporary file, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            pickle.dump(state, f, protocol=pickle.HIGHEST_PROTOCOL)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_state(path: Path, identity: dict[str, Any]) -> dict[str, Any]:
    with path.open("rb") as f:
        state = pickle.load(f)  # noqa: S301 - a file this function's caller wrote into its own run directory
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT or state.get("version") != STATE_VERSION:
        raise ValueError(f"{str(path)!r} is not a CMA-ES search state written by this version of adaloss.")
    saved = state["identity"]
    diff = [f"{k}: {saved.get(k)!r} -> {identity.get(k)!r}" for k in sorted(set(saved) | set(identity))
            if saved.get(k) != identity.get(k)]
    if diff:
        raise ValueError(
            f"Cannot resume the search in {str(path)!r}: it was started with different settings ({'; '.join(diff)}). "
            "Remove the file, or use the original settings."
        )
    return state


# ---------------------------------------------------------------------- the search
def cma_search(
    fitness: Fitness,
    x0: Sequence[float] | np.ndarray,
    *,
    sigma: float = 1.2,
    popsize: int = 25,
    generations: int = 50,
    workers: int = 1,
    seed: int = 0,
    state_path: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
    identity: Mapping[str, Any] | None = None,
) -> SearchResult:
    """Minimise ``fitness`` with CMA-ES (``cma.CMAEvolutionStrategy``) for ``generations`` generations.

    Exactly ``generations`` generations run (pycma's own stopping criteria are not consulted).
    Candidate ``i`` of generation ``g`` is evaluated with the fixed seed
    :func:`candidate_seed` ``(seed, g, i)``, in this process (``workers=1``) or in a pool of
    ``workers`` spawned processes (each with one torch thread), so the result does not depend on
    ``workers`` (given a fitness that is deterministic for its seed and one thread in this process).
    The caller's random generators are left as they were.

    A candidate whose fitness raises or is not finite counts as a failure: it is logged and gets a
    value worse than every successful candidate of its generation (pycma ranks, so only the order
    matters); the search goes on.

    With ``state_path``, the state (the pickled pycma object, its random state, the best so far
    and the history) is written atomically after every generation, and a later call with the same
    path and settings resumes after the last completed generation, with the same result as an
    uninterrupted search. The file is a pickle: read only files you wrote.

    Args:
        fitness: ``fitness(x, seed) -> float``; picklable when ``workers > 1``.
        x0: the initial mean (at least 2 dimensions).
        sigma: the initial step size.
        popsize: candidates per generation (λ).
        generations: generations to run in total (a resumed search counts those already done).
        workers: processes evaluating candidates in parallel (1: this process).
        seed: seeds pycma and, with generation and index, every candidate.
        state_path: where to keep the resumable state (``None``: nowhere).
        progress: called as ``progress(generation, best_fitness, seconds_left)`` after each generation.
        identity: extra settings stored with the state; resuming with different ones raises.
    """
    import cma

    check_positive("sigma", sigma)
    check_int("popsize", popsize, minimum=2)
    check_int("generations", generations, minimum=1)
    check_int("workers", workers, minimum=1)
    check_int("seed", seed, minimum=0)
    x0 = np.asarray(x0, dtype=np.float64).ravel()
    if x0.size < 2 or not np.all(np.isfinite(x0)):
        raise ValueError(f"Expected `x0` to be at least 2 finite numbers, but got {x0.tolist()!r}.")
    ident: dict[str, Any] = {
        "x0": x0.tolist(), "sigma": float(sigma), "popsize": popsize, "seed": seed, **dict(identity or {})
    }
    path = Path(state_path) if state_path is not None else None
    if path is not None and path.exists():
        state = _read_state(path, ident)
        if state["generation"] > generations:
            raise ValueError(
                f"The search in {str(path)!r} already ran {state['generation']} generations, more than "
                f"`generations`={generations}; remove the file or ask for at least {state['generation']}."
            )
        logger.info("CMA-ES: resuming %s after generation %d", path, state["generation"])
    else:
        seeds = np.random.SeedSequence(seed).generate_state(2)
        state = {
            "format": STATE_FORMAT, "version": STATE_VERSION, "identity": ident, "generation": 0,
            "rng": np.random.RandomState(int(seeds[1])).get_state(),
            "best_x": x0.copy(), "best_f": math.inf, "history": [], "evaluations": 0, "failures": 0,
        }
        # pycma's `seed` option seeds the global NumPy generator, whose `randn` its sampler keeps; pickling
        # the sampler then stores a detached copy of that generator, so a resumed search would sample
        # from another stream. A private generator, seeded here and pickled with the sampler, is exact.
        sampler_rng = np.random.RandomState(int(seeds[0]))
        options = {
            "popsize": popsize, "seed": math.nan, "randn": sampler_rng.randn,
            "verbose": -9, "verb_disp": 0, "verb_log": 0, "verb_time": False,
        }
        with _cma_context(state):  # any other draws of pycma come from the search's own global NumPy state
            state["es"] = cma.CMAEvolutionStrategy(x0, float(sigma), options)
    es = state["es"]
    start = state["generation"]
    evaluate = _Evaluator(fitness, min(workers, popsize))
    seconds: list[float] = []
    try:
        for g in range(start, generations):
            t0 = time.perf_counter()
            with _cma_context(state):
                xs = es.ask()
            results = evaluate([np.array(x, dtype=np.float64) for x in xs],
                               [candidate_seed(seed, g, i) for i in range(len(xs))])
            ok = [v for v, _ in results if v is not None]
            errors = [(i, why) for i, (v, why) in enumerate(results) if v is None]
            if ok:
                worst = max(ok)
                penalty = worst + 1.0 + abs(worst)
                penalty = penalty if math.isfinite(penalty) else float(np.finfo(np.float64).max)
            else:
                penalty = 1.0  # every candidate failed: a flat generation
            values = [penalty if v is None else v for v, _ in results]
            with _cma_context(state):
                es.tell(xs, values)
            if errors:
                logger.warning("CMA-ES generation %d: %d of %d candidates failed (candidate %d: %s)",
                               g + 1, len(errors), len(xs), errors[0][0], errors[0][1])
            gen_best = min(ok) if ok else math.inf
            if ok and gen_best < state["best_f"]:
                state["best_f"] = gen_best
                state["best_x"] = np.array(xs[values.index(gen_best)], dtype=np.float64)
            state["history"].append(gen_best)
            state["evaluations"] += len(xs)
            state["failures"] += len(errors)
            state["generation"] = g + 1
            if path is not None:
                _write_state(path, state)
            seconds.append(time.perf_counter() - t0)
            if progress is not None:
                progress(g + 1, state["best_f"], sum(seconds) / len(seconds) * (generations - g - 1))
    finally:
        evaluate.close()
    return SearchResult(
        x=np.array(state["best_x"], dtype=np.float64), fitness=float(state["best_f"]),
        history=[float(v) for v in state["history"]], generations=state["generation"],
        evaluations=state["evaluations"], failures=state["failures"], resumed_from=start,
    )
