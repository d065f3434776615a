"""A resumable, process-parallel CMA-ES search (pycma), the optimiser of TaylorGLO.

TaylorGLO (Gonzalez & Miikkulainen, GECCO 2021) evolves its 8 loss parameters with CMA-ES; this
module holds the search itself, independent of losses and models.
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing
import os
import pickle
import random
import sys
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
from adaloss.checkpoint import atomic_write
from adaloss.executors import Executor, LocalExecutor, TaskFailed

__all__ = ["Fitness", "SearchResult", "SearchStateError", "candidate_seed", "cma_search"]

logger = logging.getLogger("adaloss")

#: ``fitness(x, seed) -> float`` to minimise; ``seed`` is the candidate's own fixed seed (the global
#: Python, NumPy and torch generators are also seeded with it before the call).
Fitness = Callable[[np.ndarray, int], float]
#: ``progress(generation, best_fitness_so_far, seconds_left_estimate)``
Progress = Callable[[int, float, float], None]

STATE_FORMAT = "adaloss-cma-search"
STATE_VERSION = 2  # 1: a pickle (never read any more); 2: JSON, resumed by replay


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
    _WORKER_FITNESS = pickle.loads(payload)  # noqa: S301 - bytes the parent process pickled, never a file


def _task_evaluate(fitness: Fitness, item: tuple[np.ndarray, int]) -> tuple[float | None, str | None]:
    """One candidate as an executor's task: one torch thread, as in the process pool."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _evaluate(fitness, *item)
    finally:
        torch.set_num_threads(threads)


def _worker_evaluate(x: np.ndarray, seed: int) -> tuple[float | None, str | None]:
    assert _WORKER_FITNESS is not None, "worker not initialised"
    return _evaluate(_WORKER_FITNESS, x, seed)


#: the CMA-ES settings of TaylorGLO's paper (Gonzalez & Miikkulainen, GECCO 2021): population
#: λ, generations, initial step size — the defaults of :func:`cma_search` and of TaylorGLO
POPSIZE, GENERATIONS, SIGMA = 25, 50, 1.2


def check_picklable(obj: object, *, what: str, workers: int) -> bytes:
    """``obj`` pickled, for ``workers`` > 1 processes; a ``TypeError`` naming ``what`` and the fix if
    it cannot be (a lambda or a local function)."""
    try:
        return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, TypeError, AttributeError) as e:
        raise TypeError(
            f"`workers`={workers} runs {what} in other processes, which needs it picklable (module-level "
            f"functions, objects of module-level classes or functools.partial; not lambdas), but pickling it "
            f"failed: {e}"
        ) from e


class _Evaluator:
    """Evaluates one generation, in this process or in a pool of spawned processes.

    The fitness is pickled once, with plain pickle (tensors travel in the pipe, not through shared
    memory), and handed to each worker when it starts; a generation only sends candidates and seeds.
    """

    def __init__(self, fitness: Fitness, workers: int, executor: Executor | None = None) -> None:
        self.fitness = fitness
        self.workers = workers
        self.executor = executor
        self.pool: ProcessPoolExecutor | None = None
        self.payload: bytes | None = None
        self.started = False  # whether a worker has returned a result yet
        if workers > 1 or (executor is not None and not isinstance(executor, LocalExecutor)):
            self.payload = check_picklable(fitness, what="the fitness", workers=max(workers, 2))

    def __call__(self, xs: Sequence[np.ndarray], seeds: Sequence[int]) -> list[tuple[float | None, str | None]]:
        if self.executor is not None and not isinstance(self.executor, LocalExecutor):
            done = self.executor.map(_task_evaluate, list(zip(xs, seeds)), shared=self.fitness)
            return [(None, f"task failed: {r.error}") if isinstance(r, TaskFailed) else r for r in done]
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
class SearchStateError(ValueError):
    """A search state file that cannot be resumed: not a JSON search state of adaloss, written
    with other settings, malformed, or one whose generations do not replay."""


#: a generation as recorded in the state file: its candidates and their fitnesses (``None``: failed)
_Record = tuple[np.ndarray, list[float | None]]


def _told_values(fitnesses: Sequence[float | None]) -> list[float]:
    """The values told to pycma: a failed candidate (``None``) gets a value worse than every
    successful candidate of its generation (pycma ranks, so only the order matters)."""
    ok = [v for v in fitnesses if v is not None]
    if ok:
        worst = max(ok)
        penalty = worst + 1.0 + abs(worst)
        penalty = penalty if math.isfinite(penalty) else float(np.finfo(np.float64).max)
    else:
        penalty = 1.0  # every candidate failed: a flat generation
    return [penalty if v is None else v for v in fitnesses]


def _account(summary: dict[str, Any], xs: Sequence[np.ndarray], fitnesses: Sequence[float | None]) -> None:
    """Add one completed generation to the running best, history and counts."""
    ok = [v for v in fitnesses if v is not None]
    gen_best = min(ok) if ok else math.inf
    if ok and gen_best < summary["best_f"]:
        summary["best_f"] = gen_best
        summary["best_x"] = np.array(xs[list(fitnesses).index(gen_best)], dtype=np.float64)
    summary["history"].append(gen_best)
    summary["evaluations"] += len(xs)
    summary["failures"] += len(fitnesses) - len(ok)


def _document(identity: dict[str, Any], records: Sequence[_Record]) -> dict[str, Any]:
    """The state file's content: plain JSON (numbers, strings, lists, objects), nothing executable."""
    import cma

    return {
        "format": STATE_FORMAT, "version": STATE_VERSION, "cma": str(cma.__version__),
        "identity": identity, "generation": len(records),
        "records": [{"x": np.asarray(xs, dtype=np.float64).tolist(), "f": list(fs)} for xs, fs in records],
    }


def _write_state(path: Path, state: dict[str, Any]) -> None:
    """Write the state document (see :func:`_document`) to ``path`` as JSON, atomically."""
    data = json.dumps(state, allow_nan=False, separators=(",", ":")).encode("utf-8")
    atomic_write(path, lambda f: f.write(data))


def _reject_constant(name: str) -> float:
    raise ValueError(f"non-finite number {name}")


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _read_state(path: Path, identity: dict[str, Any]) -> tuple[str, list[_Record]]:
    """The pycma version that wrote ``path`` and its recorded generations, after checking that the
    file is a JSON search state of this format, of these settings (``identity``), and well formed.

    The file is parsed as JSON only; it is never unpickled.
    """
    def bad(why: str) -> SearchStateError:
        return SearchStateError(
            f"{str(path)!r} is not a readable CMA-ES search state of adaloss ({why}). "
            "Remove the file to start the search afresh."
        )

    raw = path.read_bytes()
    if raw[:1] == b"\x80":  # the PROTO opcode that opens every pickle of protocol >= 2
        raise bad("it looks like a pickle, the format of older adaloss versions; pickles are never loaded, "
                  "as loading one can run arbitrary code")
    try:
        state = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise bad(f"not valid JSON: {e}") from e
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise bad(f"expected 'format' == {STATE_FORMAT!r}, got {found!r}")
    if state.get("version") != STATE_VERSION:
        raise bad(f"state version {state.get('version')!r}; this adaloss reads version {STATE_VERSION}")
    saved = state.get("identity")
    if not isinstance(saved, dict):
        raise bad("no 'identity' object")
    diff = [f"{k}: {saved.get(k)!r} -> {identity.get(k)!r}" for k in sorted(set(saved) | set(identity))
            if saved.get(k) != identity.get(k)]
    if diff:
        raise SearchStateError(
            f"Cannot resume the search in {str(path)!r}: it was started with different settings ({'; '.join(diff)}). "
            "Remove the file, or use the original settings."
        )
    dim, popsize = len(identity["x0"]), identity["popsize"]
    records = state.get("records")
    if not isinstance(records, list) or state.get("generation") != len(records):
        raise bad("'records' is not a list of as many generations as 'generation' says")
    out: list[_Record] = []
    for g, rec in enumerate(records, start=1):
        xs = rec.get("x") if isinstance(rec, dict) else None
        fs = rec.get("f") if isinstance(rec, dict) else None
        if not (isinstance(xs, list) and len(xs) == popsize and all(
                isinstance(x, list) and len(x) == dim and all(_is_number(v) for v in x) for x in xs)):
            raise bad(f"generation {g}: 'x' is not {popsize} candidates of {dim} finite numbers")
        if not (isinstance(fs, list) and len(fs) == popsize and all(v is None or _is_number(v) for v in fs)):
            raise bad(f"generation {g}: 'f' is not {popsize} finite fitnesses or nulls")
        out.append((np.array(xs, dtype=np.float64), [None if v is None else float(v) for v in fs]))
    cma_version = state.get("cma")
    return (cma_version if isinstance(cma_version, str) else "unknown"), out


def _json_identity(identity: dict[str, Any]) -> dict[str, Any]:
    """``identity`` as it reads back from the state file (tuples become lists, ...)."""
    try:
        return json.loads(json.dumps(identity, allow_nan=False))
    except (TypeError, ValueError) as e:
        raise TypeError(
            f"Expected the search settings and `identity` to be JSON values (numbers, strings, lists, dicts), "
            f"as they are stored in the state file, but got {identity!r}: {e}"
        ) from e


# ---------------------------------------------------------------------- the search
def _new_strategy(x0: np.ndarray, sigma: float, popsize: int, seed: int) -> tuple[Any, dict[str, Any]]:
    """A fresh pycma strategy and the search's own global NumPy state, both derived from ``seed``."""
    import cma

    seeds = np.random.SeedSequence(seed).generate_state(2)
    runtime: dict[str, Any] = {"rng": np.random.RandomState(int(seeds[1])).get_state()}
    # pycma's `seed` option seeds the global NumPy generator, whose `randn` its sampler keeps, so the
    # stream would depend on whoever else draws from it. A private generator, seeded here, makes the
    # candidates a function of the seed and the told fitnesses alone, which is what lets a resumed
    # search rebuild the strategy by replaying the recorded generations (nothing of pycma is stored).
    sampler_rng = np.random.RandomState(int(seeds[0]))
    options = {
        "popsize": popsize, "seed": math.nan, "randn": sampler_rng.randn,
        "verbose": -9, "verb_disp": 0, "verb_log": 0, "verb_time": False,
    }
    with _cma_context(runtime):  # any other draws of pycma come from the search's own global NumPy state
        es = cma.CMAEvolutionStrategy(x0, float(sigma), options)
    return es, runtime


def cma_search(
    fitness: Fitness,
    x0: Sequence[float] | np.ndarray,
    *,
    sigma: float = SIGMA,
    popsize: int = POPSIZE,
    generations: int = GENERATIONS,
    workers: int = 1,
    seed: int = 0,
    state_path: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
    identity: Mapping[str, Any] | None = None,
    executor: Executor | None = None,
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

    With ``state_path``, the state is written atomically as JSON after every generation: the
    settings (``x0``, ``sigma``, ``popsize``, ``seed``, ``identity``) and, per generation, the
    candidates and their fitnesses. A later call with the same path and settings rebuilds the
    strategy by replaying those generations (pycma is deterministic given the seed and the told
    fitnesses) and resumes after the last one, with the same result as an uninterrupted search.
    The file holds numbers and strings only: reading it cannot run code.

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
        identity: extra settings (JSON values) stored with the state; resuming with different ones raises.
        executor: evaluate each generation's candidates as tasks of this
            :class:`~adaloss.executors.Executor` (Ray, Slurm) instead of ``workers`` local processes;
            each task runs one torch thread, so the result equals ``workers=1``'s. A task that fails
            for good counts as a failed candidate.

    Raises:
        SearchStateError: (a ``ValueError``) the file at ``state_path`` is not a search state of
            adaloss, was started with other settings, or does not replay (edited, or another pycma).
    """
    check_positive("sigma", sigma)
    check_int("popsize", popsize, minimum=2)
    check_int("generations", generations, minimum=1)
    check_int("workers", workers, minimum=1)
    check_int("seed", seed, minimum=0)
    x0 = np.asarray(x0, dtype=np.float64).ravel()
    if x0.size < 2 or not np.all(np.isfinite(x0)):
        raise ValueError(f"Expected `x0` to be at least 2 finite numbers, but got {x0.tolist()!r}.")
    ident = _json_identity(
        {"x0": x0.tolist(), "sigma": float(sigma), "popsize": popsize, "seed": seed, **dict(identity or {})}
    )
    path = Path(state_path) if state_path is not None else None
    records: list[_Record] = []
    summary: dict[str, Any] = {"best_x": x0.copy(), "best_f": math.inf, "history": [], "evaluations": 0, "failures": 0}
    es, runtime = _new_strategy(x0, float(sigma), popsize, seed)
    if path is not None and path.exists():
        written_by, records = _read_state(path, ident)
        if len(records) > generations:
            raise SearchStateError(
                f"The search in {str(path)!r} already ran {len(records)} generations, more than "
                f"`generations`={generations}; remove the file or ask for at least {len(records)}."
            )
        for g, (stored, fs) in enumerate(records):  # replay: the same asks, told the recorded fitnesses
            with _cma_context(runtime):
                asked = np.array(es.ask(), dtype=np.float64)
            if asked.shape != stored.shape or not np.allclose(asked, stored, rtol=1e-12, atol=1e-12):
                import cma

                raise SearchStateError(
                    f"Cannot resume the search in {str(path)!r}: replaying generation {g + 1} does not give the "
                    f"candidates it records (the file was written with pycma {written_by}, this is pycma "
                    f"{cma.__version__}; or it was edited). Remove the file to start the search afresh."
                )
            with _cma_context(runtime):
                es.tell(list(stored), _told_values(fs))
            _account(summary, list(stored), fs)
        logger.info("CMA-ES: resuming %s after generation %d", path, len(records))
    start = len(records)
    if executor is not None and workers > 1:
        raise ValueError(f"Give either `workers` (local processes) or `executor`, but got workers={workers} and "
                         f"executor={executor.name!r}.")
    evaluate = _Evaluator(fitness, min(workers, popsize), executor)
    seconds: list[float] = []
    try:
        for g in range(start, generations):
            t0 = time.perf_counter()
            with _cma_context(runtime):
                xs = es.ask()
            results = evaluate([np.array(x, dtype=np.float64) for x in xs],
                               [candidate_seed(seed, g, i) for i in range(len(xs))])
            fs = [v for v, _ in results]
            errors = [(i, why) for i, (v, why) in enumerate(results) if v is None]
            with _cma_context(runtime):
                es.tell(xs, _told_values(fs))
            if errors:
                logger.warning("CMA-ES generation %d: %d of %d candidates failed (candidate %d: %s)",
                               g + 1, len(errors), len(xs), errors[0][0], errors[0][1])
            _account(summary, xs, fs)
            records.append((np.array(xs, dtype=np.float64), fs))
            if path is not None:
                _write_state(path, _document(ident, records))
            seconds.append(time.perf_counter() - t0)
            if progress is not None:
                progress(g + 1, summary["best_f"], sum(seconds) / len(seconds) * (generations - g - 1))
    finally:
        evaluate.close()
    return SearchResult(
        x=np.array(summary["best_x"], dtype=np.float64), fitness=float(summary["best_f"]),
        history=[float(v) for v in summary["history"]], generations=len(records),
        evaluations=summary["evaluations"], failures=summary["failures"], resumed_from=start,
    )
