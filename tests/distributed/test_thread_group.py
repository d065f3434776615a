"""Workers as threads of one process: collectives, and failure without a hang."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from adaloss.distributed import DistributedError, ThreadGroup


def _run(group: ThreadGroup, fn) -> list:  # type: ignore[no-untyped-def]
    out: list = [None] * group.size

    def work(r: int) -> None:
        try:
            out[r] = fn(r, group.members[r])
        except Exception as e:  # noqa: BLE001
            out[r] = e
            group.abort()

    threads = [threading.Thread(target=work, args=(r,)) for r in range(group.size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_collectives_agree_with_a_hand_reduction() -> None:
    group = ThreadGroup(3)
    values = [torch.tensor([1.0, 2.0 + r, 10.0 * r]) for r in range(3)]

    def fn(r: int, c) -> tuple:  # type: ignore[no-untyped-def]
        t, b = values[r].clone(), torch.full((2,), float(r))
        c.mean_([t])
        c.broadcast_([b], src=2)
        return t, b, c.min_int(5 - r)

    for t, b, m in _run(group, fn):
        assert torch.equal(t, (values[0] + values[1] + values[2]) / 3)
        assert torch.equal(b, torch.full((2,), 2.0)) and m == 3


def test_a_failed_worker_ends_the_others_collectives_at_once() -> None:
    group = ThreadGroup(2, timeout_s=60)

    def fn(r: int, c) -> None:  # type: ignore[no-untyped-def]
        if r == 1:
            raise RuntimeError("worker 1 broke")
        c.mean_([torch.ones(2)])

    start = time.monotonic()
    out = _run(group, fn)
    assert time.monotonic() - start < 10
    assert isinstance(out[1], RuntimeError)
    assert isinstance(out[0], DistributedError) and "another worker failed" in str(out[0])
    with pytest.raises(ValueError, match="Expected `workers` to be a positive integer, but got 0"):
        ThreadGroup(0)


def test_a_worker_that_never_arrives_times_out() -> None:
    out = _run(ThreadGroup(2, timeout_s=0.5), lambda r, c: c.barrier() if r == 0 else time.sleep(2))
    assert isinstance(out[0], DistributedError) and "0.5 s" in str(out[0])


def test_an_abort_right_after_a_completed_collective_does_not_fail_it() -> None:
    """A worker that fails just after a collective completed must not break that collective for
    the workers not yet woken from it (threading.Barrier does: 300 of 300 here); later ones fail."""
    for _ in range(50):
        group = ThreadGroup(2, timeout_s=10)
        results: list = []

        def other() -> None:
            try:
                group.wait(1)
                results.append("completed")
                group.wait(1)  # the next collective: the group is aborted by then
            except DistributedError:
                results.append("aborted")

        t = threading.Thread(target=other)
        t.start()
        while group._arrived < 1:  # the other worker is waiting
            time.sleep(0)
        group.wait(0)  # completes the collective
        group.abort()  # and fails at once, before the other worker has woken
        t.join()
        assert results == ["completed", "aborted"]
