"""Matmul/convolution FLOPs of one AdaLFL step against one cross-entropy step: the hardware-free
floor under ``benchmarks/step_cost.py``'s time ratios.

Counts the FLOPs of every matrix multiply and convolution (forward and backward; the formulas of
``torch.utils.flop_counter``) dispatched during one step, after a warm-up step, for the same
learners and batches as ``step_cost.py``: cross-entropy, exact AdaLFL (forward-mode JVP, the
default, and reverse-over-reverse, ``meta_gradient="double_backward"``), the fast mode
(``meta_gradient="forward_difference"``) and the naive create_graph unroll; and per phase of the
default exact step (its JVP phase is the tangent pass alone: the exact step records the base
forward's primal outputs and reuses them). Elementwise work (activations, the optimiser update, the loss network's own layers
are matmuls and counted) is not in these figures, so a measured time ratio above the FLOP ratio
is overhead outside the matmuls. ``minimum_exact_ratio``: what the exact one-step meta-gradient
needs at least, given the passes it is made of — base forward + backward, meta forward +
backward (wide linear layers' weight gradients kept as factors δᵀa, never formed), and the
tangent pass of the Jacobian-vector product (those weights' term as (x aᵀ)δ; less any product
with an all-zero tangent, which changes nothing); the loss network's closed-form mixed gradient
is included.
``all_zero_operand_ratio_to_ce``: FLOPs spent on an operand that is all zeros (torch's forward-mode
formula for the first layer multiplies a dense zero tangent of the input).
What the FLOPs leave out, counted the same way: ``ops_per_step`` (aten ops dispatched: each costs a
fixed few microseconds on a CPU, whatever its size) and ``elementwise_mib`` (bytes read and
written by the ops that are neither matmuls nor convolutions nor views: activations, the
optimiser update and its VJP, parameter copies and in-place writes). Deterministic: the same
figures on any machine.

    python benchmarks/step_flops.py [--models logistic mlp lenet5]     # prints one JSON object
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from collections.abc import Callable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from step_cost import make, phases


class MatmulFlops(TorchDispatchMode):
    """FLOPs of the ops ``torch.utils.flop_counter`` has formulas for (mm, addmm, bmm, convolution
    and their backward), by op; and of every other op, the count and the bytes it moves. A dispatch
    mode, not ``FlopCounterMode``: the latter's module hooks refuse ``torch.autograd.grad``, which
    every AdaLFL step calls."""

    def __init__(self) -> None:
        super().__init__()
        self.by_op: Counter[str] = Counter()
        #: FLOPs of those ops with an all-zero tensor operand (work that changes nothing)
        self.on_zeros = 0
        #: every aten op dispatched
        self.ops = 0
        #: bytes read and written by the non-matmul ops that are not views (in-place ops included)
        self.elementwise_bytes = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        packet = func._overloadpacket
        self.ops += 1
        if packet not in flop_registry:
            self.elementwise_bytes += _moved_bytes(func, args, kwargs, out)
        else:
            flops = int(flop_registry[packet](*args, **kwargs, out_val=out))
            self.by_op[str(packet)] += flops
            factors = args[1:3] if str(packet) in ("aten.addmm", "aten.baddbmm") else args[:2]  # not the added bias
            if any(isinstance(a, torch.Tensor) and a.numel() > 1 and not bool(a.any()) for a in factors):
                self.on_zeros += flops
        return out

    @property
    def total(self) -> int:
        return sum(self.by_op.values())


def _tensors(tree: Any) -> list[torch.Tensor]:
    return [t for t in torch.utils._pytree.tree_leaves(tree) if isinstance(t, torch.Tensor)]


def _moved_bytes(func: Any, args: Any, kwargs: Any, out: Any) -> int:
    """Bytes of the inputs read and the outputs written by one op; 0 for a view (its schema says
    every return aliases an input without writing to it: ``t``, ``view``, ``detach``, …) and for a
    metadata query that returns no tensor (``is_same_size``)."""
    schema = func._schema
    outs = _tensors(out)
    if not schema.is_mutable and (not outs or all(
            r.alias_info is not None and not r.alias_info.is_write for r in schema.returns)):
        return 0
    return sum(t.numel() * t.element_size() for t in [*_tensors((args, kwargs)), *outs])


def count(fn: Callable[[], object]) -> MatmulFlops:
    fn()  # warm-up: lazily created state (optimiser buffers) is not counted as step work
    with MatmulFlops() as counter:
        fn()
    return counter


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["logistic", "mlp", "lenet5"])
    args = p.parse_args()
    device = torch.device("cpu")
    results: dict[str, Any] = {}
    for model_name in args.models:
        steps = {}
        for kind in ("ce", "adalfl", "double_backward", "fast", "naive"):
            learner, batches = make(kind, model_name, device)
            steps[kind] = count(lambda: learner.step(next(batches)))  # noqa: B023 - called at once
        parts = {name: count(fn) for name, fn in phases(model_name, device).items()}
        ce = steps["ce"].total
        minimum = sum(parts[k].total for k in ("base_fwd_bwd", "meta_fwd_bwd", "model_jvp", "loss_mixed_grad")) \
            - parts["model_jvp"].on_zeros
        results[model_name] = {
            "step_gflop": {k: c.total / 1e9 for k, c in steps.items()},
            "step_gflop_by_op": {k: {op: v / 1e9 for op, v in sorted(c.by_op.items())} for k, c in steps.items()},
            "flop_ratio": {k: c.total / ce for k, c in steps.items() if k != "ce"},
            "phase_gflop": {k: v.total / 1e9 for k, v in parts.items()},
            "phase_ratio_to_ce": {k: v.total / ce for k, v in parts.items()},
            "all_zero_operand_ratio_to_ce": {**{k: c.on_zeros / ce for k, c in steps.items()},
                                             **{f"phase:{k}": v.on_zeros / ce for k, v in parts.items()}},
            "minimum_exact_ratio": minimum / ce,
            "ops_per_step": {k: c.ops for k, c in steps.items()},
            "phase_ops": {k: v.ops for k, v in parts.items()},
            "elementwise_mib": {k: c.elementwise_bytes / 2**20 for k, c in steps.items()},
            "phase_elementwise_mib": {k: v.elementwise_bytes / 2**20 for k, v in parts.items()},
        }
    print(json.dumps({"benchmark": "step_flops", "torch": torch.__version__, "batch_size": 128,
                      "results": results}, indent=2))


if __name__ == "__main__":
    main()
