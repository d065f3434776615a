"""The AdaLFL step-cost section of RESULTS.md, from the recorded benchmark JSONs.

Reads ``benchmarks/results/step_cost_cpu.json`` (``python benchmarks/step_cost.py``: times,
fast-mode fidelity, memory), ``benchmarks/results/step_flops.json``
(``python benchmarks/step_flops.py``: matmul FLOPs, aten ops, elementwise bytes) and ``benchmarks/results/fast_fidelity_*.json``
(``python benchmarks/fast_fidelity.py``: the fast mode over a real MNIST run) and writes
``experiments/results/adalfl_step_cost.md``; no number in it is typed by hand.

    python benchmarks/step_report.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "experiments"))

from make_results import write_section  # noqa: E402

#: the targets of the exact step and of the recommended amortised setting, in CE steps
EXACT_TARGET, AMORTISED_TARGET = 3.0, 1.5


def _targets(cost: dict) -> str:
    """Whether the targets hold, per model, from the measured medians."""
    parts = []
    for model, r in cost["results"].items():
        exact, amortised = r["time_ratio_median"], r.get("amortized_time_ratio_median")
        text = f"{model}: exact {exact:.2f}× ({'meets' if exact <= EXACT_TARGET else 'misses'} ≤ {EXACT_TARGET}×)"
        if amortised is not None:
            text += (f", amortised k = {r['amortized_meta_every']} {amortised:.2f}× "
                     f"({'meets' if amortised <= AMORTISED_TARGET else 'misses'} ≤ {AMORTISED_TARGET}×)")
        parts.append(text)
    return "Targets, measured on this machine: " + "; ".join(parts) + "."


def _peer_cell(r: dict, peer: str) -> str:
    entry = r.get("peers", {}).get(peer)
    if entry is None:
        return "—"
    if "skipped" in entry:
        return f"skipped ({entry['skipped'].split(' (')[0]})"
    return f"{entry['time_ratio_median']:.2f}"


def _fast_traffic(m: dict) -> str:
    """The MLP fast mode's elementwise bytes against the exact step's, in words."""
    fast, exact = m["elementwise_mib"]["fast"], m["elementwise_mib"]["adalfl"]
    if fast <= exact:
        return ""
    return (f" The fast mode saves FLOPs but, on the MLP, moves more elementwise bytes than the exact step "
            f"({fast:.0f} vs {exact:.0f} MiB: the norms of θ and v and the shifted copy θ + h·v), which is why "
            "its time barely differs there.")


def main() -> None:
    cost = json.loads((HERE / "results" / "step_cost_cpu.json").read_text())
    flops = json.loads((HERE / "results" / "step_flops.json").read_text())
    baseline_path = HERE / "results" / "step_flops_baseline.json"
    baseline = json.loads(baseline_path.read_text()) if baseline_path.exists() else None
    lines = [
        "## AdaLFL step cost: time, FLOPs, memory, peers, amortised meta-updates (`benchmarks/`)",
        "",
        f"One online AdaLFL step against one cross-entropy step, batch {cost['batch_size']} of MNIST-shaped "
        f"inputs, SGD. Time: `python benchmarks/step_cost.py` ({cost['device']}, {cost['threads']} threads, "
        f"torch {cost['torch']}, {cost['rounds']} interleaved rounds × {cost['steps_per_round']} steps (whole "
        "`meta_every` windows for the amortised rows), median of the per-round ratios). FLOPs: "
        "`python benchmarks/step_flops.py` (matmuls and convolutions, forward and backward; deterministic). "
        "Peers: the same one-step meta-gradient (SGD, the same loss network, a meta batch, Adam on φ) written "
        "with `higher` 0.2.1 and with `torchopt` 0.7.3's `MetaSGD`, timed in the same rounds.",
        "",
        "| model | CE step ms | exact: time × CE | FLOPs × CE | FLOP floor × CE | double backward: time × CE | "
        "fast: time × CE | naive create_graph × CE | higher × CE | torchopt × CE |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for model, r in cost["results"].items():
        f = flops["results"].get(model)
        lines.append(
            f"| {model} | {r['ce_step_ms_median']:.2f} | {r['time_ratio_median']:.2f} | "
            f"{f['flop_ratio']['adalfl']:.2f} | {f['minimum_exact_ratio']:.2f} | "
            f"{r['double_backward_time_ratio_median']:.2f} | {r['fast_time_ratio_median']:.2f} | "
            f"{r['naive_time_ratio_median']:.2f} | {_peer_cell(r, 'higher')} | {_peer_cell(r, 'torchopt')} |"
            if f else f"| {model} | {r['ce_step_ms_median']:.2f} | {r['time_ratio_median']:.2f} | — | — | — | — | — | "
            f"{_peer_cell(r, 'higher')} | {_peer_cell(r, 'torchopt')} |")
    ks = sorted({k for r in cost["results"].values() for k in r.get("amortized_time_ratio_median_by_k", {})}, key=int)
    if ks:
        lines += ["", "Amortised meta-updates (`meta_every=k`: the exact meta step on every k-th step, plain steps "
                  "with the current learned loss between): the mean step cost over whole windows, and the three "
                  "kinds of step a run is made of, in CE steps (`cost_model`, from which "
                  "`experiments/adalfl_variants.py` prices whole runs):", "",
                  "| model | " + " | ".join(f"k = {k}" for k in ks) + " | meta step | plain step | init unroll |",
                  "|---|" + "---|" * (len(ks) + 3)]
        for model, r in cost["results"].items():
            by_k, cm = r.get("amortized_time_ratio_median_by_k", {}), r.get("cost_model", {})
            lines.append(f"| {model} | " + " | ".join(f"{by_k[k]:.2f}" if k in by_k else "—" for k in ks) + " | "
                         + " | ".join(f"{cm[key]:.2f}" if key in cm else "—"
                                      for key in ("meta_step", "plain_step", "init_unroll")) + " |")
    lines += ["", "Memory per step as multiples of the CE step's (saved for backward: the peak of those alive at "
              "once, and in all; allocated: every allocation of the step):", "",
              "| model | variant | saved-for-backward peak × CE | saved in all × CE | allocated × CE |",
              "|---|---|---|---|---|"]
    for model, r in cost["results"].items():
        mem = r["step_memory"]
        for kind in [k for k in ("adalfl", "double_backward", "fast") if k in mem]:
            lines.append(
                f"| {model} | {kind} | "
                f"{mem[kind]['saved_for_backward_peak_mib'] / mem['ce']['saved_for_backward_peak_mib']:.2f} | "
                f"{mem[kind]['saved_for_backward_mib'] / mem['ce']['saved_for_backward_mib']:.2f} | "
                f"{mem[kind]['allocated_mib'] / mem['ce']['allocated_mib']:.2f} |")
    lines += ["", "What the FLOPs leave out (`step_flops.py`, deterministic): aten ops dispatched per step (each "
              "costs a fixed few microseconds on a CPU, whatever its size) and MiB read and written by the "
              "ops other than matmuls and convolutions (views free), as multiples of the CE step's"
              + (f"; *before*: `{baseline_path.relative_to(HERE.parent)}`, measured at commit "
                 f"{baseline['measured_at_commit']} ({baseline['note']})" if baseline else "") + ":", "",
              "| model | CE: ops | CE: elementwise MiB | variant | ops × CE | before | elementwise MiB × CE | before |",
              "|---|---|---|---|---|---|---|---|"]
    for model in cost["results"]:
        if model not in flops["results"]:
            continue
        f = flops["results"][model]
        b = baseline["results"].get(model) if baseline else None
        ops, mib = f["ops_per_step"], f["elementwise_mib"]
        for i, kind in enumerate(k for k in ("adalfl", "double_backward", "fast", "naive") if k in ops):
            head = f"| {model} | {ops['ce']} | {mib['ce']:.1f} |" if i == 0 else "| | | |"
            before_ops = f"{b['ops_per_step'][kind] / b['ops_per_step']['ce']:.1f}" if b else "—"
            before_mib = f"{b['elementwise_mib'][kind] / b['elementwise_mib']['ce']:.1f}" if b else "—"
            lines.append(f"{head} {kind} | {ops[kind] / ops['ce']:.1f} | {before_ops} | {mib[kind] / mib['ce']:.1f} | "
                         f"{before_mib} |")
    lines += ["", "Where the exact step goes (each part run on its own; time in ms, FLOPs as multiples of a CE "
              "step, aten ops and elementwise MiB as counted above):", "",
              "| model | CE step ms | exact step ms | part | ms | FLOPs × CE | ops | elementwise MiB |",
              "|---|---|---|---|---|---|---|---|"]
    for model, r in cost["results"].items():
        f = flops["results"].get(model)
        if f is None:
            continue
        for i, (part, ms) in enumerate(r["adalfl_phase_ms_median"].items()):
            head = (f"| {model} | {r['ce_step_ms_median']:.1f} | {r['adalfl_step_ms_median']:.1f} |" if i == 0
                    else "| | | |")
            lines.append(f"{head} {part} | {ms:.1f} | {f['phase_ratio_to_ce'][part]:.2f} | {f['phase_ops'][part]} | "
                         f"{f['phase_elementwise_mib'][part]:.1f} |")
    for path in sorted((HERE / "results").glob("fast_fidelity_*.json")):
        fid = json.loads(path.read_text())
        lines += ["", f"Fast mode over a real run (`python benchmarks/fast_fidelity.py --data-dir ../shared/datasets "
                  f"--model {fid['model']}`, `{path.relative_to(HERE.parent)}`): {fid['dataset']} {fid['model']}, "
                  f"{fid['steps']} steps after {fid['init_steps']} offline unrolls, both meta-gradients every "
                  f"{fid['every']} steps from the same state: cosine median {fid['cosine']['median']:.6f} (min "
                  f"{fid['cosine']['min']:.4f}), relative error median {fid['relative_error']['median']:.2g} "
                  f"(max {fid['relative_error']['max']:.2g}; first half {fid['relative_error_first_half_median']:.2g}, "
                  f"second half {fid['relative_error_second_half_median']:.2g})."]
    m = flops["results"]["mlp"]
    flops_before_mlp = baseline["results"]["mlp"]["flop_ratio"]["adalfl"] if baseline else float("nan")
    lines += [
        "",
        "Reading: the exact step's matmuls and convolutions are at the floor of the exact one-step "
        f"meta-gradient ({m['flop_ratio']['adalfl']:.2f}× CE on the MLP): the base forward records the outputs "
        "of its linear layers, convolutions, pools and activations, and the Jacobian-vector product reuses them "
        "(a tangent pass only, with the tangents of linear layers and convolutions taken by plain calls of the "
        "op: no product with an all-zero input tangent, no slow forward-mode convolution); the loss network's "
        "value, gradient and mixed second derivative are closed-form matrix products "
        f"({m['phase_ops']['loss_mixed_grad']} ops for the mixed gradient); with SGD the update's Jacobian is one "
        "scalar, applied to J∇θ'L rather than to a parameter-sized v, and then wide linear layers keep ∇θ'L as "
        "factors δᵀa: the weight gradient at θ' is never formed and its product with the base inputs is "
        f"(x aᵀ)δ (the MLP's step FLOPs {flops_before_mlp:.2f}× → {m['flop_ratio']['adalfl']:.2f}× CE, "
        "`step_flops_baseline.json` before). What remains above the FLOP ratio is "
        f"dispatch ({m['ops_per_step']['adalfl'] / m['ops_per_step']['ce']:.1f}× a CE step's aten ops) and "
        f"elementwise traffic ({m['elementwise_mib']['adalfl'] / m['elementwise_mib']['ce']:.1f}× its MiB: the "
        "out-of-place θ' and its write-back, the meta batch's own forward and backward). On logistic "
        "regression a CE step is well under a millisecond, so the loss network's fixed per-step work dominates "
        "every AdaLFL step there, the plain steps included." + _fast_traffic(m),
        "",
        _targets(cost),
        "",
        "Generated by:", "", "```",
        "python benchmarks/step_cost.py > benchmarks/results/step_cost_cpu.json",
        "python benchmarks/step_flops.py > benchmarks/results/step_flops.json",
        "python benchmarks/fast_fidelity.py --data-dir ../shared/datasets --model mlp > "
        "benchmarks/results/fast_fidelity_mnist_mlp.json",
        "python benchmarks/step_report.py", "```", "",
    ]
    write_section("adalfl_step_cost", "\n".join(lines))


if __name__ == "__main__":
    main()
