"""Independent tasks on Ray (``adaloss[ray]``): a running cluster, or a local Ray started here."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from adaloss._optional import import_optional
from adaloss.executors.base import Executor, ExecutorError, Resources, TaskFailed, call

__all__ = ["RayExecutor"]

R = TypeVar("R")


def _import_ray() -> Any:
    return import_optional("ray", needed_for="executor='ray'", extra="ray", error=ExecutorError)


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """A TCP connection to the cluster's ``host:port`` within ``timeout_s``, or a named error (Ray
    itself retries for minutes before giving up on an address nobody answers at)."""
    hostport = address.removeprefix("ray://")
    if address in ("auto", "local") or ":" not in hostport:
        return
    host, _, port = hostport.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s):
            pass
    except (OSError, ValueError) as e:
        raise ExecutorError(f"Cannot reach the Ray cluster at address={address!r} ({e}); start it "
                            "(`ray start --head`) or give another address (--ray-address / RAY_ADDRESS).") from None


class RayExecutor(Executor):
    """One Ray task per item, with the resources each declares (``num_cpus``, ``num_gpus``); a task
    whose worker process dies is retried by Ray up to ``max_retries`` times (an exception raised by
    the task itself is not retried: it comes back as a :class:`TaskFailed`).

    Args:
        address: the cluster (``host:port`` or ``ray://host:port``); ``None``: ``RAY_ADDRESS`` if
            set, else a local Ray started here (stopped by :meth:`close`).
        num_cpus: CPUs of a local Ray (``None``: all of this machine's).
        max_retries: retries of a task whose worker died.
    """

    name = "ray"

    def __init__(self, *, address: str | None = None, num_cpus: int | None = None, max_retries: int = 2) -> None:
        super().__init__(max_retries=max_retries)
        self.ray = _import_ray()
        address = address or os.environ.get("RAY_ADDRESS") or None
        if address is not None:
            _check_reachable(address)
        self._started = not self.ray.is_initialized()
        if self._started:
            kwargs: dict[str, Any] = {"address": address, "include_dashboard": False, "log_to_driver": True,
                                      "logging_level": "ERROR"}
            if address is None and num_cpus is not None:
                kwargs["num_cpus"] = int(num_cpus)
            try:
                self.ray.init(**kwargs)
            except ConnectionError as e:
                raise ExecutorError(f"Cannot connect to the Ray cluster at address={address!r}: {e}") from None
        self.address = address

    def map(self, fn: Callable[..., R], items: Sequence[Any], *, shared: Any = None, resources: Resources = Resources(),
            on_done: Callable[[int, R | TaskFailed], None] | None = None) -> list[R | TaskFailed]:
        ray = self.ray
        remote = ray.remote(num_cpus=resources.cpus, num_gpus=resources.gpus, max_retries=self.max_retries,
                            retry_exceptions=False)(call)
        shared_ref = ray.put(shared) if shared is not None else None  # sent once; Ray resolves it in each task
        refs = [remote.remote(fn, shared_ref, item) for item in items]
        index = {ref: i for i, ref in enumerate(refs)}
        out: list[R | TaskFailed | None] = [None] * len(refs)
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            i = index[done[0]]
            try:
                result = ray.get(done[0])
            except ray.exceptions.RayTaskError as e:  # the task raised
                result = TaskFailed(f"{type(e.cause).__name__}: {e.cause}", attempts=1)
            except ray.exceptions.RayError as e:  # its worker died past its retries
                result = TaskFailed(f"{type(e).__name__}: {e}", attempts=self.max_retries + 1)
            out[i] = result
            if on_done is not None:
                on_done(i, result)
        return out  # type: ignore[return-value]

    def close(self) -> None:
        if self._started and self.ray.is_initialized():
            self.ray.shutdown()
