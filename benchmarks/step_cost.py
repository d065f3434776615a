"""Per-step time and peak memory of AdaLFL's online step against a plain cross-entropy step.

Also times the exact step computed by reverse-over-reverse (``meta_gradient="double_backward"``)
and the fast mode (``meta_gradient="forward_difference"``) and measures the latter's fidelity to the
exact meta-gradient along a real trajectory (cosine similarity, relative error), a stable per-step
memory figure (bytes saved for backward, bytes allocated; ``step_memory``), a naive create_graph
implementation of the same step (SGD), for reference, and the
drop-in object ``adaloss.AdaLFL`` stepped from a plain loop against the trainer's learner
(``core_vs_learner_ratio_median``: the object's step over the learner's, per round).
Batch 128 of MNIST-shaped random inputs (1×28×28, 10 classes), SGD lr 0.01, meta batch from a
separate stream, Adam 1e-3 on φ. Times are measured interleaved in one process (rounds alternate
which goes first; median over rounds). Peak memory is measured in a fresh subprocess per
configuration: the peak RSS of the process over the measured steps (VmHWM, reset after set-up
and one step), and the step's working memory = that peak minus the RSS before the steps (CPU);
on a GPU ``torch.cuda.max_memory_allocated`` and its growth over the allocated memory.

    python benchmarks/step_cost.py [--models mlp lenet5] [--rounds 7] [--steps 20] [--device cpu]

prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import weakref
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch.func import functional_call

from adaloss import AdaLFL
from adaloss.learners import FixedLossLearner, TrainContext
from adaloss.learners.adalfl import AdaLFLLearner
from adaloss.losses import LossNetwork
from adaloss.models import create_model


def stream(device: torch.device, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1024, 1, 28, 28, generator=g).to(device)
    y = torch.randint(0, 10, (1024,), generator=g).to(device)
    i = 0
    while True:
        idx = torch.arange(i, i + 128) % 1024
        i += 128
        yield x[idx], y[idx]


class NaiveAdaLFL(FixedLossLearner):
    """The textbook one-step unroll: create_graph backward through the model (SGD only)."""

    def __init__(self) -> None:
        super().__init__(LossNetwork())
        self.meta_opt = torch.optim.Adam(self.loss.parameters(), lr=1e-3)

    def step(self, batch):  # type: ignore[no-untyped-def]
        model, opt = self.context.model, self.context.optimizer
        lr = opt.param_groups[0]["lr"]
        params = dict(model.named_parameters())
        x, y = batch
        m = self.loss(model(x), y)
        grads = torch.autograd.grad(m, list(params.values()), create_graph=True)
        theta1 = {n: p - lr * g for (n, p), g in zip(params.items(), grads)}
        xm, ym = next(self.context.meta_batches)
        task = F.cross_entropy(functional_call(model, theta1, (xm,)), ym)
        self.meta_opt.zero_grad(set_to_none=True)
        task.backward()
        self.meta_opt.step()
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(theta1[n])
                p.grad = None
        return {"loss": m.detach()}


class CoreLoop:
    """A user's loop over the drop-in object: ``adalfl.step(batch, next(meta))``, no trainer, no learner."""

    def __init__(self, adalfl: AdaLFL, meta: Iterator[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.adalfl, self.meta = adalfl, meta

    def step(self, batch):  # type: ignore[no-untyped-def]
        return self.adalfl.step(batch, next(self.meta))


def make(kind: str, model_name: str, device: torch.device):  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    model = create_model(model_name, (1, 28, 28), 10).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    if kind == "core":
        train, meta = stream(device, 1), stream(device, 2)
        return CoreLoop(AdaLFL(model, opt, initialized=True), meta), train
    learners = {
        "ce": lambda: FixedLossLearner(torch.nn.CrossEntropyLoss()),
        "adalfl": lambda: AdaLFLLearner(init_steps=0),
        "fast": lambda: AdaLFLLearner(init_steps=0, meta_gradient="forward_difference"),
        "double_backward": lambda: AdaLFLLearner(init_steps=0, meta_gradient="double_backward"),
        "naive": NaiveAdaLFL,
    }
    learner = learners[kind]()
    train, meta = stream(device, 1), stream(device, 2)
    learner.bind(TrainContext(model=model, optimizer=opt, scheduler=None, task="classification",
                              meta_batches=meta, train_batches=train, device=device))
    return learner, train


def phases(model_name: str, device: torch.device) -> dict[str, Callable[[], object]]:
    """Each part of an AdaLFL step as a callable run on its own (plus the plain ``forward``)."""
    from adaloss.functional.meta import loss_meta_gradient, model_jvp

    torch.manual_seed(0)
    model = create_model(model_name, (1, 28, 28), 10).to(device)
    loss = LossNetwork().to(device)
    x, y = next(stream(device, 3))
    params = dict(model.named_parameters())
    tangent = {k: torch.randn_like(p) for k, p in params.items()}
    z = model(x).detach()
    u = torch.randn_like(z)

    def base() -> object:  # forward + backward with the learned loss (what a CE step costs, plus the loss net)
        return torch.autograd.grad(loss(model(x), y), list(params.values()))

    def meta() -> object:  # forward + backward of the task loss at θ' (cloned buffers, functional_call)
        theta = {k: p.detach().requires_grad_(True) for k, p in params.items()}
        out = functional_call(model, (theta, {k: b.clone() for k, b in model.named_buffers()}), (x,))
        return torch.autograd.grad(F.cross_entropy(out, y), list(theta.values()))

    def jvp() -> object:
        return model_jvp(model, params, tangent, x)

    def double_backward() -> object:
        return loss_meta_gradient(loss, z, y, u, list(loss.parameters()))

    def forward() -> object:
        with torch.no_grad():
            return model(x)

    return {"base_fwd_bwd": base, "meta_fwd_bwd": meta, "model_jvp": jvp, "loss_double_bwd": double_backward,
            "forward": forward}


def phase_times(model_name: str, device: torch.device, steps: int) -> dict[str, float]:
    """Median ms of each part of an AdaLFL step, run on its own: where the time goes."""
    out = {}
    for name, fn in phases(model_name, device).items():
        if name == "forward":
            continue
        fn()
        ts = []
        for _ in range(5):
            sync(device)
            t = time.perf_counter()
            for _ in range(steps):
                fn()
            sync(device)
            ts.append((time.perf_counter() - t) / steps)
        out[name] = 1000 * statistics.median(ts)
    return out


def fast_vs_exact_step(adalfl: AdaLFL, batch, meta_batch) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """One online step of ``adalfl`` that also computes the fast mode's meta-gradient from the same
    state and batches: applies the exact one (the step taken is the exact method's) and returns the
    cosine similarity and relative error ‖fast − exact‖ / ‖exact‖ of the two."""
    grads = {}
    for mode in ("forward_difference", "exact"):  # the exact one last: it is the one applied
        adalfl.meta_gradient = mode
        new_params, new_state, scalars, g = adalfl._meta_step(adalfl.model, adalfl.diffopt, batch, meta_batch,
                                                               ratio=False)
        grads[mode] = torch.cat([t.flatten().double() for t in g])
    a, b = grads["forward_difference"], grads["exact"]
    adalfl._apply_meta_gradient(g, scalars)
    adalfl.diffopt.commit(new_params, new_state)
    adalfl.steps += 1
    return (float(torch.dot(a, b) / (a.norm() * b.norm()).clamp_min(1e-300)),
            float((a - b).norm() / b.norm().clamp_min(1e-300)))


def fidelity(model_name: str, device: torch.device, steps: int) -> dict[str, float]:
    """The fast mode's meta-gradient against the exact one along a trajectory of the exact method
    (:func:`fast_vs_exact_step` at each of ``steps`` steps; no dropout/BatchNorm in these models,
    so the two calls see the same forward)."""
    torch.manual_seed(0)
    model = create_model(model_name, (1, 28, 28), 10).to(device)
    adalfl = AdaLFL(model, torch.optim.SGD(model.parameters(), lr=0.01), initialized=True)
    train, meta = stream(device, 4), stream(device, 5)
    cos, rel = zip(*(fast_vs_exact_step(adalfl, next(train), next(meta)) for _ in range(steps)))
    return {"cosine_median": statistics.median(cos), "cosine_min": min(cos),
            "relative_error_median": statistics.median(rel), "relative_error_max": max(rel), "steps": steps}


def step_memory(kind: str, model_name: str, device: torch.device) -> dict[str, float]:
    """A stable per-step memory figure: bytes of the tensors autograd saves for backward during
    one step (``saved_tensors_hooks``; storages counted once): in all, and at the peak of those
    alive at once (a graph's tensors are released with it); and the bytes the step allocates in
    all (the profiler's memory events; on a GPU also ``max_memory_allocated`` over the step)."""
    from torch.profiler import ProfilerActivity, profile

    learner, batches = make(kind, model_name, device)
    learner.step(next(batches))  # optimiser / meta-optimiser state exists from here on
    batch = next(batches)
    live: dict[int, int] = {}  # storage address -> bytes, for saved tensors still referenced
    total, peak = [0], [0]

    def release(ptr: int) -> None:
        live.pop(ptr, None)

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in live:
            live[ptr] = storage.nbytes()
            total[0] += storage.nbytes()
            peak[0] = max(peak[0], sum(live.values()))
            weakref.finalize(t, release, ptr)  # freed with the graph that saved it (or later, if held elsewhere)
        return t

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), \
            profile(activities=activities, profile_memory=True) as prof:
        learner.step(batch)
    allocated = sum(max(e.self_cpu_memory_usage, 0) for e in prof.key_averages())
    out = {"saved_for_backward_mib": total[0] / 2**20, "saved_for_backward_peak_mib": peak[0] / 2**20,
           "allocated_mib": allocated / 2**20}
    if device.type == "cuda":
        out["cuda_step_peak_mib"] = (torch.cuda.max_memory_allocated() - before) / 2**20
    return out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(learner, batches, steps: int, device: torch.device) -> float:  # type: ignore[no-untyped-def]
    sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        learner.step(next(batches))
    sync(device)
    return (time.perf_counter() - t) / steps


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def memory_child(kind: str, model_name: str, device_name: str, steps: int) -> None:
    device = torch.device(device_name)
    learner, batches = make(kind, model_name, device)
    learner.step(next(batches))  # first step allocates optimiser state
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        with open("/proc/self/clear_refs", "w") as f:  # resets the peak RSS (VmHWM) to the current RSS
            f.write("5")
        base = _status_kib("VmRSS") * 1024
    for _ in range(steps):
        learner.step(next(batches))
    sync(device)
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else _status_kib("VmHWM") * 1024
    print(json.dumps({"peak_bytes": peak, "step_working_bytes": peak - base}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["mlp", "lenet5"])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--fidelity-steps", type=int, default=50)
    p.add_argument("--memory-child", nargs=3, metavar=("KIND", "MODEL", "STEPS"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        kind, model_name, steps = args.memory_child
        memory_child(kind, model_name, args.device, int(steps))
        return
    device = torch.device(args.device)
    results = {}
    for model_name in args.models:
        ce, ce_batches = make("ce", model_name, device)
        ada, ada_batches = make("adalfl", model_name, device)
        naive, naive_batches = make("naive", model_name, device)
        core, core_batches = make("core", model_name, device)
        fast, fast_batches = make("fast", model_name, device)
        rev, rev_batches = make("double_backward", model_name, device)
        runs = [(ce, ce_batches), (ada, ada_batches), (naive, naive_batches), (core, core_batches),
                (fast, fast_batches), (rev, rev_batches)]
        for learner, batches in runs:
            timed(learner, batches, 3, device)  # warm-up
        t_ce, t_ada, t_naive, t_core, ratios, naive_ratios, core_ratios = [], [], [], [], [], [], []
        t_fast, fast_ratios, t_rev, rev_ratios = [], [], [], []
        for r in range(args.rounds):
            order = runs if r % 2 == 0 else runs[::-1]
            times = {id(l): timed(l, b, args.steps, device) for l, b in order}
            a, b, c, d = times[id(ce)], times[id(ada)], times[id(naive)], times[id(core)]
            t_core.append(d)
            core_ratios.append(d / b)
            t_fast.append(times[id(fast)])
            fast_ratios.append(times[id(fast)] / a)
            t_rev.append(times[id(rev)])
            rev_ratios.append(times[id(rev)] / a)
            t_ce.append(a)
            t_ada.append(b)
            t_naive.append(c)
            ratios.append(b / a)
            naive_ratios.append(c / a)
        mem = {}
        for kind in ("ce", "adalfl"):
            cmd = [sys.executable, __file__, "--device", args.device, "--memory-child", kind, model_name, "10"]
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            mem[kind] = json.loads(out.strip().splitlines()[-1])
        results[model_name] = {
            "ce_step_ms_median": 1000 * statistics.median(t_ce),
            "adalfl_step_ms_median": 1000 * statistics.median(t_ada),
            "time_ratio_median": statistics.median(ratios),
            "time_ratios": [round(v, 3) for v in ratios],
            "adalfl_phase_ms_median": phase_times(model_name, device, args.steps),
            "naive_create_graph_step_ms_median": 1000 * statistics.median(t_naive),
            "fast_step_ms_median": 1000 * statistics.median(t_fast),
            "fast_time_ratio_median": statistics.median(fast_ratios),
            "fast_time_ratios": [round(v, 3) for v in fast_ratios],
            "fast_fidelity": fidelity(model_name, device, args.fidelity_steps),
            "double_backward_step_ms_median": 1000 * statistics.median(t_rev),
            "double_backward_time_ratio_median": statistics.median(rev_ratios),
            "double_backward_time_ratios": [round(v, 3) for v in rev_ratios],
            "step_memory": {kind: step_memory(kind, model_name, device)
                            for kind in ("ce", "adalfl", "fast", "double_backward")},
            "core_object_step_ms_median": 1000 * statistics.median(t_core),
            "core_vs_learner_ratio_median": statistics.median(core_ratios),
            "core_vs_learner_ratios": [round(v, 3) for v in core_ratios],
            "naive_time_ratio_median": statistics.median(naive_ratios),
            "ce_peak_mem_mib": mem["ce"]["peak_bytes"] / 2**20,
            "adalfl_peak_mem_mib": mem["adalfl"]["peak_bytes"] / 2**20,
            "peak_memory_ratio": mem["adalfl"]["peak_bytes"] / mem["ce"]["peak_bytes"],
            "ce_step_working_mib": mem["ce"]["step_working_bytes"] / 2**20,
            "adalfl_step_working_mib": mem["adalfl"]["step_working_bytes"] / 2**20,
            "step_working_memory_ratio": mem["adalfl"]["step_working_bytes"] / max(mem["ce"]["step_working_bytes"], 1),
        }
    print(json.dumps({
        "benchmark": "step_cost", "device": str(device), "threads": torch.get_num_threads(),
        "torch": torch.__version__, "batch_size": 128, "rounds": args.rounds, "steps_per_round": args.steps,
        "results": results,
    }, indent=2))


if __name__ == "__main__":
    main()
