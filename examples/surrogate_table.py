"""Print the surrogate-gradient moments and IKUN's gain of every built-in surrogate of the installed frameworks.

    python examples/surrogate_table.py [--normal MEAN STD]

m1 = E[h(x)], m2 = E[h(x)^2] with x = u - threshold ~ Uniform(-1, 1) (IKUN's released choice) or the Normal
given; kappa = 1/m1 is the IKUN gain, Var(W) = kappa / fan_in.
"""
import argparse
import importlib.util
import warnings

import snn_initplug as sip


def builtin_surrogates():
    """(framework, callable) for each built-in surrogate, with default parameters (and the sharp ones)."""
    found = []
    if importlib.util.find_spec("snntorch"):
        from snntorch import surrogate as s

        for name in ("atan", "fast_sigmoid", "sigmoid", "spike_rate_escape", "straight_through_estimator",
                     "triangular", "heaviside", "SFS", "SSO", "LSO"):
            found.append(("snntorch", name, getattr(s, name)()))
    if importlib.util.find_spec("spikingjelly"):
        from spikingjelly.activation_based import surrogate as s

        for name in ("Sigmoid", "ATan", "PiecewiseQuadratic", "PiecewiseExp", "SoftSign", "SuperSpike", "Erf",
                     "NonzeroSignLogAbs", "QPseudoSpike", "Rect", "LogTailedReLU", "FakeNumericalGradient",
                     "PiecewiseLeakyReLU", "S2NN", "LeakyKReLU", "SquarewaveFourierSeries"):
            if hasattr(s, name):
                found.append(("spikingjelly", name, getattr(s, name)()))
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--normal", nargs=2, type=float, metavar=("MEAN", "STD"), help="use x ~ N(MEAN, STD^2)")
    args = parser.parse_args()
    dist = sip.surrogate.Normal(*args.normal) if args.normal else sip.surrogate.Uniform(-1.0, 1.0)
    rows = builtin_surrogates()
    if not rows:
        print("neither snnTorch nor SpikingJelly is installed: nothing to list")
        return
    print(f"x ~ {dist}")
    print(f"{'framework':<13}{'surrogate':<44}{'m1 = E[h]':>12}{'m2 = E[h^2]':>13}{'kappa=1/m1':>12}  method")
    for framework, name, fn in rows:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                m = sip.surrogate_moments(fn, dist, stochastic="monte-carlo")
            kappa = f"{1 / m.m1:12.4f}" if m.m1 > 0 else f"{'inf':>12}"
            label = f"{m.kind}{m.params}"
            print(f"{framework:<13}{label:<44}{m.m1:12.6f}{m.m2:13.6f}{kappa}  {m.method}")
        except sip.SurrogateError as exc:
            print(f"{framework:<13}{name:<44}  unusable: {exc}")


if __name__ == "__main__":
    main()
