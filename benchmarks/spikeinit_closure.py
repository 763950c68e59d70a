"""SpikeInit's laws against simulations (docs/initializers.md, "SpikeInit"): prints, in one run,

1. the Gaussian closure's accuracy: the stationary rate of the neuron (hard reset to 0) simulated at the closure's
   σ*, relative to the target, for several (κ, θ, p);
2. a deep stack at SpikeInit's scale, fed by Bernoulli(p) spikes: the stationary rate at layers 1, 2, 5, 10, 20,
   50 of a SpikingJelly LIF stack (hard reset, τ = 2; the closed form, and ``simulate=True``) and an snnTorch
   Leaky stack (β = 0.9, subtractive reset, the simulated variant), weights drawn by
   ``initialize(..., "spikeinit")``.

    python benchmarks/spikeinit_closure.py            # about a minute on one CPU core
"""
from __future__ import annotations

import argparse
import math

import numpy as np
import torch
import torch.nn as nn

import snn_initplug as sip
from snn_initplug.stationary import spike_input_std

POINTS = [(0.3, 2.0, 0.2), (0.5, 1.0, 0.1), (0.5, 0.5, 0.05), (0.7, 1.0, 0.1), (0.8, 1.0, 0.1), (0.8, 0.5, 0.05),
          (0.9, 1.0, 0.1)]
DEPTHS = (1, 2, 5, 10, 20, 50)


def closure_accuracy(neurons: int, seed: int) -> list[tuple[float, float, float, float]]:
    rows = []
    for kappa, theta, p in POINTS:
        s = spike_input_std(p, kappa, theta)
        g = torch.Generator().manual_seed(seed)
        y = torch.zeros(neurons, dtype=torch.float64)
        burn = 20 + int(10 / (1 - kappa))
        fired = 0.0
        for t in range(2 * burn):
            y = kappa * y + s * torch.randn(neurons, generator=g, dtype=torch.float64)
            spikes = y >= theta
            if t >= burn:
                fired += spikes.double().mean().item() / burn
            y = torch.where(spikes, torch.zeros_like(y), y)
        rows.append((kappa, theta, p, fired))
    return rows


def stack_rates(framework: str, width: int, batch: int, steps: int, seed: int, simulate: bool) -> list[float]:
    p, layers = 0.1, max(DEPTHS)
    torch.manual_seed(seed)
    if framework == "snntorch":
        import snntorch as snn
        neurons = [snn.Leaky(beta=0.9, init_hidden=True) for _ in range(layers)]
    else:
        from spikingjelly.activation_based import neuron
        neurons = [neuron.LIFNode(tau=2.0, v_reset=0.0) for _ in range(layers)]
    net = nn.Sequential(*[m for n in neurons for m in (nn.Linear(width, width, bias=False), n)])
    x = (torch.rand(batch, width) < p).float()
    sip.initialize(net, "spikeinit", x, target_rate=p, surrogate=False, simulate=simulate,
                   generator=torch.Generator().manual_seed(seed))
    if framework == "snntorch":
        from snntorch import utils
        utils.reset(net)
    else:
        from spikingjelly.activation_based import functional
        functional.reset_net(net)
    burn, rates = steps // 2, np.zeros(layers)
    with torch.no_grad():
        for t in range(steps):
            h = (torch.rand(batch, width) < p).float()
            for i in range(layers):
                h = net[2 * i + 1](net[2 * i](h))
                if t >= burn:
                    rates[i] += h.mean().item() / (steps - burn)
    return [float(rates[d - 1]) for d in DEPTHS]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--neurons", type=int, default=200_000)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print("1. Gaussian closure: stationary rate of the neuron simulated at the closure's σ*")
    print("   κ     θ     p      σ*·λ    simulated  error")
    for kappa, theta, p, fired in closure_accuracy(args.neurons, args.seed):
        sigma = spike_input_std(p, kappa, theta) / math.sqrt(p)  # σ*·λ (λ cancels)
        print(f"   {kappa:<5} {theta:<5} {p:<6} {sigma:<7.4f} {fired:<10.4f} {fired / p - 1:+.1%}")
    print(f"2. stationary rate by depth, Bernoulli(0.1) input, width {args.width}, {args.steps} steps "
          f"(second half counted), layers {DEPTHS}")
    for framework, simulate in (("spikingjelly", False), ("spikingjelly", True), ("snntorch", False)):
        try:
            rates = stack_rates(framework, args.width, args.batch, args.steps, args.seed, simulate)
        except ImportError:
            print(f"   {framework}: not installed")
            continue
        how = "simulated" if simulate or framework == "snntorch" else "closed form"
        print(f"   {framework:<13} {how:<12}" + "  ".join(f"{r:.3f}" for r in rates))


if __name__ == "__main__":
    main()
