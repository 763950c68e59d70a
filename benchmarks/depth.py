"""Firing rate and membrane spread per layer at initialization, by depth, for every init method.

    python benchmarks/depth.py                      # the full grid (about 20-40 minutes on 2 CPU cores)
    python benchmarks/depth.py --quick              # a small grid, a few minutes

Grid: frameworks (snnTorch ``Leaky``, SpikingJelly ``LIFNode``/``IFNode``), neurons (LIF β = 0.5 and 0.9,
IF), T ∈ {1, 4, 16}, depth up to 100, one width (256 by default), every method of ``snn_initplug.apply.METHODS`` but ``auto``
(``calibrated`` starts from spike-aware and targets 1 − Φ(1)), and the relay structure (``spike_aware:relay``,
``calibrated:relay``, ``relay=0.9``). The input is Bernoulli spikes at that rate,
fresh at every step. For each configuration it measures, with ``snn_initplug.diagnose``, the rate and
sd(u/θ) of every layer, writes ``depth.json`` and ``depth.png`` (rate against depth, one curve per method,
one panel per configuration) to ``--out``, and prints a table.

It also times ``calibrate`` on a 100-layer, width-512 stack with T = 16 and a batch of 64 against one
forward pass of the whole model (both frameworks) and prints that ratio (target: < 10).
"""
import argparse
import json
import os
import sys
import time
import warnings

import torch
import torch.nn as nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))

import common  # noqa: E402  (examples/common.py)
import snn_initplug as sip  # noqa: E402
from arguments import split_method  # noqa: E402  (examples/arguments.py)
from snn_initplug.calibration import DEFAULT_TARGET_RATE  # noqa: E402

TARGET = DEFAULT_TARGET_RATE


def make_stack(framework, neuron, depth, width, steps):
    """(model, example_input, forward) for a stack of Linear -> neuron layers."""
    beta = {"lif0.5": 0.5, "lif0.9": 0.9, "if": 1.0}[neuron]
    if framework == "snntorch":
        import snntorch as snn

        model = nn.Sequential(*[m for _ in range(depth) for m in (nn.Linear(width, width), snn.Leaky(beta=beta, init_hidden=True))])
        return model, "per-step"
    from spikingjelly.activation_based import neuron as sj

    def make():
        if beta == 1.0:
            return sj.IFNode(step_mode="m")
        return sj.LIFNode(tau=1.0 / (1.0 - beta), decay_input=False, step_mode="m")  # same β, input unscaled

    model = nn.Sequential(*[m for _ in range(depth) for m in (nn.Linear(width, width), make())])
    return model, "multi-step"


def inputs(style, steps, batch, width, generator):
    spikes = (torch.rand(steps, batch, width, generator=generator) < TARGET).float()
    return list(spikes) if style == "per-step" else spikes


def run_forward(model, style, x):
    if style == "per-step":
        for m in model:
            if hasattr(m, "reset_mem"):
                m.reset_mem()
        return [model(step) for step in x]
    from spikingjelly.activation_based import functional

    functional.reset_net(model)
    return model(x)


def measure(framework, neuron, depth, width, steps, batch, name, seed, relay=0.9):
    method, structure = split_method(name, relay)
    torch.manual_seed(seed)
    model, style = make_stack(framework, neuron, depth, width, steps)
    x = inputs(style, steps, batch, width, torch.Generator().manual_seed(seed))
    first = x[0] if style == "per-step" else x
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if method == "calibrated":
            sip.initialize(model, "calibrated", x if style == "per-step" else first,
                           generator=torch.Generator().manual_seed(seed), target_rate=TARGET, **structure)
        else:
            # IF neurons never leak: the fluctuation rule needs the horizon of its kernel sums
            options = {"steps": steps} if method == "fluctuation" and neuron == "if" else {}
            sip.initialize(model, method, first, generator=torch.Generator().manual_seed(seed), **options, **structure)
        record = sip.diagnose(model, x, forward=lambda m, inp: run_forward(m, style, inp))
    return [layer.rate for layer in record.layers], [layer.membrane_std for layer in record.layers]


def calibration_cost(framework, repeats=1):
    """calibrate() time / one forward pass, for the 100-layer, width-512, T = 16, batch-64 stack."""
    torch.manual_seed(0)
    model, style = make_stack(framework, "lif0.9", 100, 512, 16)
    x = inputs(style, 16, 64, 512, torch.Generator().manual_seed(0))
    first = x[0] if style == "per-step" else x
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sip.initialize(model, "spike_aware", first)
        with torch.no_grad():
            start = time.perf_counter()
            run_forward(model, style, x)
            forward = time.perf_counter() - start
        start = time.perf_counter()
        report = sip.calibrate(model, x if style == "per-step" else first, TARGET)
        calibration = time.perf_counter() - start
    rates = [layer.rate for layer in report.layers]
    return calibration, forward, report.mode, min(rates), max(rates)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frameworks", nargs="+", default=["snntorch", "spikingjelly"])
    parser.add_argument("--neurons", nargs="+", default=["lif0.5", "lif0.9", "if"])
    parser.add_argument("--steps", nargs="+", type=int, default=[1, 4, 16])
    parser.add_argument("--depth", type=int, default=100)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--methods", nargs="+", default=[m for m in sip.apply.METHODS if m != "auto"] + ["spike_aware:relay", "calibrated:relay"],
                        help="initialize methods; ':relay' adds the relay structure (relay=--relay)")
    parser.add_argument("--relay", type=float, default=0.9)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="results/depth")
    parser.add_argument("--quick", action="store_true", help="depth 30, T in {1, 4}, LIF 0.5 and IF, 5 methods")
    parser.add_argument("--no-cost", action="store_true", help="skip the calibration-cost measurement")
    parser.add_argument("--cost-only", action="store_true", help="only the calibration-cost measurement")
    args = parser.parse_args()
    if args.quick:
        args.depth, args.steps, args.neurons = 30, [1, 4], ["lif0.5", "if"]
        args.methods = ["default", "kaiming_normal", "ikun", "spike_aware", "calibrated"]
    os.makedirs(args.out, exist_ok=True)
    results = {}
    print(f"target rate {TARGET:.4f}; width {args.width}, depth {args.depth}, batch {args.batch}")
    print(f"{'config':<28}{'method':<18}{'L1':>7}{'L10':>7}{'L50':>7}{'last':>7}{'worst dev':>11}")
    for framework in [] if args.cost_only else args.frameworks:
        for neuron in args.neurons:
            for steps in args.steps:
                config = f"{framework}/{neuron}/T={steps}"
                results[config] = {}
                for method in args.methods:
                    try:
                        rates, membrane = measure(framework, neuron, args.depth, args.width, steps, args.batch, method,
                                                  args.seed, args.relay)
                    except (sip.InitError, sip.PlanError, ImportError) as exc:
                        results[config][method] = {"error": str(exc)}
                        print(f"{config:<28}{method:<18}  error: {str(exc)[:80]}")
                        continue
                    results[config][method] = {"rate": rates, "membrane_std": membrane}
                    pick = lambda i: f"{rates[i]:7.3f}" if i < len(rates) else f"{'-':>7}"  # noqa: E731
                    worst = max(abs(r / TARGET - 1) for r in rates)
                    print(f"{config:<28}{method:<18}{pick(0)}{pick(9)}{pick(49)}{pick(len(rates) - 1)}{worst:10.0%}")
    save(args, results, {})
    costs = {}
    if not args.no_cost:
        for framework in args.frameworks:
            calibration, forward, mode, low, high = calibration_cost(framework)
            costs[framework] = {"calibrate_s": calibration, "forward_s": forward, "ratio": calibration / forward,
                                "mode": mode, "min_rate": low, "max_rate": high}
            print(f"calibrate 100x512, T=16, batch 64 ({framework}, {mode} mode): {calibration:.2f} s = "
                  f"{calibration / forward:.2f}x one forward pass ({forward:.2f} s); rates {low:.4f}..{high:.4f}")
    save(args, results, costs)


def save(args, results, costs):
    with open(os.path.join(args.out, "depth.json"), "w") as f:
        json.dump({"target": TARGET, "args": vars(args), "results": results, "calibration_cost": costs}, f, indent=1)
    if results:
        plot(results, os.path.join(args.out, "depth.png"))
    print(f"wrote {args.out}/depth.json" + (" and depth.png" if results else ""))


def plot(results, path):
    plt = common.pyplot()
    if plt is None:
        return
    configs = list(results)
    cols = min(3, len(configs))
    rows = (len(configs) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    for ax, config in zip(axes.flat, configs):
        for method, data in results[config].items():
            if "rate" in data:
                ax.plot(range(1, len(data["rate"]) + 1), data["rate"], label=method, lw=1.2)
        ax.axhline(TARGET, color="k", ls=":", lw=0.8)
        ax.set_title(config, fontsize=9)
        ax.set_xlabel("layer")
        ax.set_ylabel("firing rate")
        ax.set_ylim(-0.02, 0.6)
    for ax in list(axes.flat)[len(configs):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
