"""Per-step time and peak memory of AdaLFL's online step against a plain cross-entropy step.

Also times the exact step computed by reverse-over-reverse (``meta_gradient="double_backward"``)
and the fast mode (``meta_gradient="forward_difference"``) and measures the latter's fidelity to the
exact meta-gradient along a real trajectory (cosine similarity, relative error), a stable per-step
memory figure (bytes saved for backward, bytes allocated; ``step_memory``), a naive create_graph
implementation of the same step (SGD), for reference, and the
drop-in object ``adaloss.AdaLFL`` stepped from a plain loop against the trainer's learner
(``core_vs_learner_ratio_median``: the object's step over the learner's, per round).

Cost of the amortised method and of a whole run: the mean step cost of ``meta_every=k`` over whole
windows (``amortized_time_ratio_median_by_k``, and ``amortized_time_ratio_median`` for the
recommended k), and ``cost_model``, the three step kinds of a run in CE steps (an exact meta step,
a plain step with the learned loss, one unroll of the offline initialisation from a freshly
initialised model) from which ``experiments/adalfl_variants.py`` prices runs end to end.

Peers in the same run: the same one-step meta-gradient written with ``higher`` and with
``torchopt``'s ``MetaSGD`` (``pip install -e ".[bench]"``; a peer that does not import is reported
as skipped, with the reason); ``exact_over_peer_median`` < 1 means adaloss's exact step is faster.
Batch 128 of MNIST-shaped random inputs (1×28×28, 10 classes), SGD lr 0.01, meta batch from a
separate stream, Adam 1e-3 on φ. Times are measured interleaved in one process (rounds alternate
which goes first; median over rounds). Peak memory is measured in a fresh subprocess per
configuration: the peak RSS of the process over the measured steps (VmHWM, reset after set-up
and one step), and the step's working memory = that peak minus the RSS before the steps (CPU);
on a GPU ``torch.cuda.max_memory_allocated`` and its growth over the allocated memory.

    python benchmarks/step_cost.py [--models logistic mlp lenet5] [--rounds 11] [--steps 20] [--device cpu]

prints one JSON object.
"""

from __future__ import annotations

import argparse
import functools
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


class InitLoop:
    """One unroll of Algorithm 1 per ``step``: a freshly initialised model (its initialisation timed
    too), one base step with the learned loss, φ updated along the exact meta-gradient."""

    def __init__(self, adalfl: AdaLFL, factory: Callable[[], torch.nn.Module],
                 meta: Iterator[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.adalfl, self.factory, self.meta = adalfl, factory, meta

    def step(self, batch):  # type: ignore[no-untyped-def]
        return self.adalfl.initialize(self.factory, [batch], [next(self.meta)], steps=self.adalfl.init_done + 1)


class HigherLoop:
    """The same one-step meta-gradient written with ``higher`` (Grefenstette et al. 2019): a
    differentiable SGD step inside ``innerloop_ctx``, the task loss at θ' backpropagated to φ
    through the unrolled step (create_graph), θ' written back."""

    def __init__(self, model: torch.nn.Module, opt: torch.optim.Optimizer,
                 meta: Iterator[tuple[torch.Tensor, torch.Tensor]]) -> None:
        import higher

        self.higher, self.model, self.opt, self.meta = higher, model, opt, meta
        self.loss = LossNetwork().to(next(model.parameters()).device)
        self.meta_opt = torch.optim.Adam(self.loss.parameters(), lr=1e-3)

    def step(self, batch):  # type: ignore[no-untyped-def]
        x, y = batch
        xm, ym = next(self.meta)
        with self.higher.innerloop_ctx(self.model, self.opt, copy_initial_weights=False) as (fmodel, diffopt):
            m = self.loss(fmodel(x), y)
            diffopt.step(m)
            task = F.cross_entropy(fmodel(xm), ym)
            grads = torch.autograd.grad(task, list(self.loss.parameters()))
            with torch.no_grad():
                for p, q in zip(self.model.parameters(), fmodel.parameters()):
                    p.copy_(q)
        for p, g in zip(self.loss.parameters(), grads):
            p.grad = g
        self.meta_opt.step()
        return {"loss": m.detach()}


class TorchoptLoop:
    """The same one-step meta-gradient written with ``torchopt``'s ``MetaSGD`` (Ren et al., JMLR
    2023): a differentiable in-place SGD step on the module, the task loss at θ' backpropagated to
    φ, then ``stop_gradient`` on the module and the optimiser (the documented pattern)."""

    def __init__(self, model: torch.nn.Module, lr: float, meta: Iterator[tuple[torch.Tensor, torch.Tensor]]) -> None:
        import torchopt

        self.torchopt, self.model, self.meta = torchopt, model, meta
        self.inner = torchopt.MetaSGD(model, lr=lr)
        self.loss = LossNetwork().to(next(model.parameters()).device)
        self.meta_opt = torch.optim.Adam(self.loss.parameters(), lr=1e-3)

    def step(self, batch):  # type: ignore[no-untyped-def]
        x, y = batch
        xm, ym = next(self.meta)
        m = self.loss(self.model(x), y)
        self.inner.step(m)
        task = F.cross_entropy(self.model(xm), ym)
        grads = torch.autograd.grad(task, list(self.loss.parameters()))
        self.torchopt.stop_gradient(self.model)
        self.torchopt.stop_gradient(self.inner)
        for p, g in zip(self.loss.parameters(), grads):
            p.grad = g
        self.meta_opt.step()
        return {"loss": m.detach()}


#: the peers timed beside the exact step, and the packages they need (``pip install -e ".[bench]"``)
PEERS = {"higher": "higher", "torchopt": "torchopt"}
#: ``meta_every`` values whose mean step cost over whole windows is timed
AMORTISED_K = (2, 4, 8, 16)


def make(kind: str, model_name: str, device: torch.device):  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    model = create_model(model_name, (1, 28, 28), 10).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    train, meta = stream(device, 1), stream(device, 2)
    if kind == "core":
        return CoreLoop(AdaLFL(model, opt, initialized=True), meta), train
    if kind == "init":
        factory = functools.partial(create_model, model_name, (1, 28, 28), 10)
        return InitLoop(AdaLFL(model, opt), lambda: factory().to(device), meta), train
    if kind == "higher":
        return HigherLoop(model, opt, meta), train
    if kind == "torchopt":
        return TorchoptLoop(model, 0.01, meta), train
    learners = {
        "ce": lambda: FixedLossLearner(torch.nn.CrossEntropyLoss()),
        "adalfl": lambda: AdaLFLLearner(init_steps=0),
        "fast": lambda: AdaLFLLearner(init_steps=0, meta_gradient="forward_difference"),
        "double_backward": lambda: AdaLFLLearner(init_steps=0, meta_gradient="double_backward"),
        # every step after the first (taken in the warm-up) a plain step with the learned loss
        "plain": lambda: AdaLFLLearner(init_steps=0, meta_every=10**9),
        **{f"k{k}": functools.partial(AdaLFLLearner, init_steps=0, meta_every=k) for k in AMORTISED_K},
        "naive": NaiveAdaLFL,
    }
    learner = learners[kind]()
    learner.bind(TrainContext(model=model, optimizer=opt, scheduler=None, task="classification",
                              meta_batches=meta, train_batches=train, device=device))
    return learner, train


def phases(model_name: str, device: torch.device) -> dict[str, Callable[[], object]]:
    """Each part of an exact AdaLFL step as a callable run on its own (plus the plain ``forward``)."""
    from adaloss.functional.meta import FactoredLinear, LinearRecord, model_jvp

    torch.manual_seed(0)
    model = create_model(model_name, (1, 28, 28), 10).to(device)
    loss = LossNetwork().to(device)
    x, y = next(stream(device, 3))
    params = dict(model.named_parameters())

    def meta() -> object:  # forward + backward of the task loss at θ' (cloned buffers, functional_call); wide
        # linear layers keep their weight gradient as factors δᵀa, as the exact step does
        theta = {k: p.detach().requires_grad_(True) for k, p in params.items()}
        with FactoredLinear(theta) as factored:
            out = functional_call(model, (theta, {k: b.clone() for k, b in model.named_buffers()}), (x,))
        kept = [o for _, _, o in factored.calls]
        grads = torch.autograd.grad(F.cross_entropy(out, y), [*theta.values(), *kept], allow_unused=bool(kept))
        return factored.gradients(dict(zip(theta, grads)), grads[len(theta):])

    dense, factors = meta()  # type: ignore[misc]
    tangent = {k: torch.randn_like(g) for k, g in dense.items()}
    record = LinearRecord()
    with record:
        z = model(x).detach()
    u = torch.randn_like(z)
    _, _, cache = loss.value_and_grad(z, y)

    def base() -> object:  # recorded forward, the loss network's closed-form gradient, one backward
        with LinearRecord():
            out = model(x)
        _, s, _ = loss.value_and_grad(out, y)
        return torch.autograd.grad(out, list(params.values()), grad_outputs=s)

    def jvp() -> object:  # the tangent pass only: the primal outputs come from the base forward's record
        return model_jvp(model, params, tangent, x, record=record, factored=factors)

    def mixed() -> object:
        return loss.mixed_grad(cache, u)

    def forward() -> object:
        with torch.no_grad():
            return model(x)

    return {"base_fwd_bwd": base, "meta_fwd_bwd": meta, "model_jvp": jvp, "loss_mixed_grad": mixed,
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
        new_params, new_state, scalars, g = adalfl._meta_step(adalfl.model, adalfl.diffopt, [batch], meta_batch,
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
    p.add_argument("--models", nargs="+", default=["logistic", "mlp", "lenet5"])
    p.add_argument("--recommended-k", type=int, default=8, choices=AMORTISED_K,
                   help="the meta_every reported as amortized_time_ratio_median")
    p.add_argument("--rounds", type=int, default=11)
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
    window = 16 * -(-args.steps // 16)  # whole windows of every k in AMORTISED_K
    for model_name in args.models:
        kinds = ["ce", "adalfl", "naive", "core", "fast", "double_backward", "plain", "init",
                 *(f"k{k}" for k in AMORTISED_K)]
        peers: dict[str, object] = {}
        for peer, package in PEERS.items():
            try:
                __import__(package)
            except ImportError as e:  # a column left empty, with the reason
                peers[peer] = {"skipped": f"{package} not importable ({e}); pip install -e '.[bench]'"}
            else:
                kinds.append(peer)
        runs = {kind: make(kind, model_name, device) for kind in kinds}
        for learner, batches in runs.values():
            timed(learner, batches, 3, device)  # warm-up
        times: dict[str, list[float]] = {kind: [] for kind in kinds}
        for r in range(args.rounds):
            order = kinds if r % 2 == 0 else kinds[::-1]
            for kind in order:
                steps = window if kind.startswith("k") else args.steps
                times[kind].append(timed(*runs[kind], steps, device))

        def ratios(kind: str, over: str = "ce") -> list[float]:
            return [a / b for a, b in zip(times[kind], times[over])]

        def median_ms(kind: str) -> float:
            return 1000 * statistics.median(times[kind])

        mem = {}
        for kind in ("ce", "adalfl"):
            cmd = [sys.executable, __file__, "--device", args.device, "--memory-child", kind, model_name, "10"]
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            mem[kind] = json.loads(out.strip().splitlines()[-1])
        amortised = {k: statistics.median(ratios(f"k{k}")) for k in AMORTISED_K}
        for peer in PEERS:
            if peer in times:
                peers[peer] = {"step_ms_median": median_ms(peer), "time_ratio_median": statistics.median(ratios(peer)),
                               "time_ratios": [round(v, 3) for v in ratios(peer)],
                               "exact_over_peer_median": statistics.median(ratios("adalfl", peer))}
        results[model_name] = {
            "ce_step_ms_median": median_ms("ce"),
            "adalfl_step_ms_median": median_ms("adalfl"),
            "time_ratio_median": statistics.median(ratios("adalfl")),
            "time_ratios": [round(v, 3) for v in ratios("adalfl")],
            "amortized_meta_every": args.recommended_k,
            "amortized_time_ratio_median": amortised[args.recommended_k],
            "amortized_time_ratio_median_by_k": {str(k): v for k, v in amortised.items()},
            "cost_model": {"meta_step": statistics.median(ratios("adalfl")),
                           "plain_step": statistics.median(ratios("plain")),
                           "init_unroll": statistics.median(ratios("init"))},
            "peers": peers,
            "adalfl_phase_ms_median": phase_times(model_name, device, args.steps),
            "naive_create_graph_step_ms_median": median_ms("naive"),
            "fast_step_ms_median": median_ms("fast"),
            "fast_time_ratio_median": statistics.median(ratios("fast")),
            "fast_time_ratios": [round(v, 3) for v in ratios("fast")],
            "fast_fidelity": fidelity(model_name, device, args.fidelity_steps),
            "double_backward_step_ms_median": median_ms("double_backward"),
            "double_backward_time_ratio_median": statistics.median(ratios("double_backward")),
            "double_backward_time_ratios": [round(v, 3) for v in ratios("double_backward")],
            "step_memory": {kind: step_memory(kind, model_name, device)
                            for kind in ("ce", "adalfl", "fast", "double_backward")},
            "core_object_step_ms_median": median_ms("core"),
            "core_vs_learner_ratio_median": statistics.median(ratios("core", "adalfl")),
            "core_vs_learner_ratios": [round(v, 3) for v in ratios("core", "adalfl")],
            "naive_time_ratio_median": statistics.median(ratios("naive")),
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
