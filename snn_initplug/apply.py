"""``initialize(model, method=...)``: plan the model, compute every new weight, then write them all.

Each method is a rule that turns one planned layer (its fans, its neuron's :class:`NeuronSpec`, its input
statistics) into a weight law; the rules only read, so an error in any layer leaves the model untouched.
Only after every law is known and every tensor sampled are the weights written, under ``torch.no_grad()``.
Biases, BatchNorm parameters and layers that feed no neuron (a plain readout) are left as they are.

Under ``torch.distributed`` (``process_group=``) the input statistics are those of the global batch and the
written weights are broadcast from rank 0 (:mod:`snn_initplug.distributed`). Every :class:`Report` records the
settings and the per-layer seeds, so ``Report.save`` / ``Report.load`` / :func:`reinitialize` reproduce the
weights bit for bit.
"""
from __future__ import annotations

import fnmatch
import hashlib
import json
import math
import numbers
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from . import theory
from .init import (BASELINES, Law, baseline_law, calculate_fluctuation, calculate_ikun_gain, calculate_relay,
                   calculate_spike_aware_gain, check_relay, sample)
from .distributed import all_reduce_sums, broadcast_parameters, is_distributed, world_size
from .neuron import NeuronSpec, NeuronSpecError
from .planning import InputStats, LayerPlan, Plan, PlanError, plan
from .surrogate import Normal, SurrogateError, Uniform
from .theory import InitError

__all__ = ["initialize", "reinitialize", "Report", "LayerReport", "METHODS", "compute_laws"]


@dataclass
class LayerReport:
    layer: str
    method: str
    neuron: str
    surrogate: str
    fan_in: int
    fan_out: int
    gain: float  # fan_in · Var(W)
    std: float
    mean: float
    law: str
    assumed: Dict[str, Any] = field(default_factory=dict)  # statistics assumed, with where they came from
    notes: List[str] = field(default_factory=list)
    seed: Optional[int] = None  # seed of this layer's own random stream (drawn in plan order from the generator)
    relay: float = 0.0  # weight of the one-to-one relay path added to the random law (spike_aware relay=)


@dataclass
class Report:
    method: str
    layers: List[LayerReport]
    skipped: List[str]
    plan_source: str
    notes: List[str] = field(default_factory=list)
    calibration: Optional[Any] = None  # a CalibrationReport for method="calibrated"
    # how initialize was called (method, options, overrides, skip, input fingerprint): what reinitialize replays
    settings: Dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def to_json(self, **kwargs) -> str:
        return json.dumps(self.to_dict(), default=str, **kwargs)

    def save(self, path: Union[str, "os.PathLike[str]"]) -> None:
        """Write the report as indented JSON. Floats are written by ``repr``, so they load back exactly."""
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(self.to_json(indent=2) + "\n")

    @classmethod
    def load(cls, path: Union[str, "os.PathLike[str]"]) -> "Report":
        """Read a report written by :meth:`save`; :func:`reinitialize` replays it."""
        with open(path, encoding="utf-8") as handle:
            return cls.from_dict(json.load(handle))

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "Report":
        """Inverse of :meth:`to_dict` (the calibration comes back as a ``CalibrationReport``)."""
        calibration = data.get("calibration")
        if calibration is not None:
            from .calibration import CalibrationReport, LayerCalibration

            calibration = CalibrationReport([LayerCalibration(**row) for row in calibration["layers"]],
                                            calibration["mode"], calibration["tolerance"],
                                            list(calibration.get("notes", [])))
        return cls(data["method"], [LayerReport(**row) for row in data["layers"]], list(data["skipped"]),
                   data["plan_source"], list(data.get("notes", [])), calibration, dict(data.get("settings") or {}))

    def layer(self, name: str) -> LayerReport:
        for row in self.layers:
            if row.layer == name or row.layer == f"{name}.weight":
                return row
        raise KeyError(name)

    def __str__(self) -> str:
        header = ["layer", "method", "neuron", "surrogate", "fan_in", "gain", "std", "mean", "assumed"]
        table = [header]
        for r in self.layers:
            assumed = "; ".join(f"{k}={_fmt(v)}" for k, v in r.assumed.items())
            table.append([r.layer, r.method, r.neuron, r.surrogate, str(r.fan_in), f"{r.gain:.4g}", f"{r.std:.4g}",
                          f"{r.mean:.3g}", assumed])
        widths = [max(len(row[i]) for row in table) for i in range(len(header))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in table]
        lines.insert(1, "  ".join("-" * w for w in widths))
        if self.skipped:
            lines.append(f"skipped: {', '.join(self.skipped)}")
        lines += [f"note: {n}" for n in self.notes + [f"{r.layer}: {n}" for r in self.layers for n in r.notes]]
        if self.calibration is not None:
            lines += ["", "calibration:", str(self.calibration)]
        return "\n".join(lines)


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _scalar(value: Any) -> float:
    """Per-neuron parameters enter the formulas through their mean (the report says so)."""
    return float(value.mean()) if isinstance(value, torch.Tensor) else float(value)


# ----------------------------------------------------------------------------------------------------------
# Rules: (layer, options, context) -> (law, assumed, notes)
# ----------------------------------------------------------------------------------------------------------
@dataclass
class _Context:
    plan: Plan
    feeds: Dict[str, List[LayerPlan]]  # neuron name -> layers feeding it (input role)
    recurrent: Dict[str, List[LayerPlan]]


def _distribution(value: Any):
    if value is None or isinstance(value, (Uniform, Normal)):
        return value
    raise InitError(f"distribution must be snn_initplug.Uniform or Normal, got {value!r}")


def _rule_ikun(layer: LayerPlan, opts: Dict[str, Any], ctx: _Context):
    variant = opts.get("variant", "surrogate")
    version, mode = opts.get("version"), opts.get("mode")
    if version is not None and mode is not None:
        raise InitError("ikun: give either version= or mode=, not both")
    if version is not None and version not in ("v1", "v2"):
        raise InitError(f"ikun: version must be 'v1' or 'v2', got {version!r}")
    mode = mode or ("fan_sum" if version == "v2" else "fan_in")
    fan = theory.fan_for_mode(layer.fan_in, layer.fan_out, mode)
    kappa = calculate_ikun_gain(layer.spec.surrogate, variant=variant, distribution=_distribution(opts.get("distribution")),
                                moment=opts.get("moment", 1))
    std = math.sqrt(theory.ikun_variance(fan, kappa))
    assumed = {"kappa": kappa, "fan": f"{mode}={fan:g}", "variant": variant}
    notes = []
    if layer.norm:
        notes.append(f"BatchNorm {layer.norm} follows: in training mode it undoes the weight scale in the forward pass")
    return Law("normal", 0.0, std), assumed, notes


def _membrane_target(spec: NeuronSpec, opts: Dict[str, Any], mu_u: float = 0.0) -> Tuple[float, float]:
    """(θ, σ_u) for a neuron whose membrane should have mean μ_u: σ_u given, derived from a target rate
    (P(u > θ) = rate), or θ − μ_u (the papers' σ_u = 1 at θ = 1, μ_u = 0)."""
    theta = _scalar(spec.threshold)
    distance = theta - mu_u
    if distance <= 0:
        raise InitError(f"the membrane mean mu_u = {mu_u} is not below the threshold {theta}")
    sigma_u, rate = opts.get("sigma_u"), opts.get("rate")
    if sigma_u is not None and rate is not None:
        raise InitError("give the target as sigma_u= or as rate=, not both")
    if rate is not None:
        return theta, theory.sigma_u_for_rate(distance, float(rate))
    return theta, distance if sigma_u is None else float(sigma_u)


def _upstream_rate(layer: LayerPlan, opts: Dict[str, Any], ctx: _Context, mu_u: float = 0.0) -> Tuple[float, str]:
    """Spike probability of the neurons feeding this layer: the target rate when one is given, else the
    self-consistent 1 − Φ((θ − μ_u)/σ_u) of the upstream neurons at their own target."""
    if opts.get("rate") is not None:
        return float(opts["rate"]), "target rate"
    specs = {name: spec for name, _, spec in ctx.plan.neurons}
    upstream = [specs[n] for n in layer.upstream if n in specs] or [layer.spec]
    rates = [theory.firing_probability(*_membrane_target(spec, opts, mu_u), mu_u) for spec in upstream]
    return sum(rates) / len(rates), "self-consistent 1-Φ((θ-μ)/σ_u) of " + (", ".join(layer.upstream) or "this layer")


def _data_moments(layer: LayerPlan, opts: Dict[str, Any], method: str) -> Tuple[float, float, str]:
    if opts.get("input_second_moment") is not None:
        q = float(opts["input_second_moment"])
        return float(opts.get("input_mean", q)), q, "given"
    stats = layer.input_stats
    if stats is None:
        raise InitError(f"{method}: {layer.name} reads the model input, whose statistics are unknown; pass "
                        "example_input= (or input_second_moment= in overrides for this layer)")
    return stats.mean, stats.second_moment, "measured"


def _kernel_sums(spec: NeuronSpec, horizon: Any, method: str, layer: LayerPlan) -> Tuple[float, float]:
    try:
        if horizon == "single":
            sums = spec.kernel_sums(1)
        elif horizon == "stationary":
            sums = spec.kernel_sums(None)
        elif isinstance(horizon, int) and horizon >= 1:
            sums = spec.kernel_sums(horizon)
        else:
            raise InitError(f"{method}: horizon must be 'single', 'stationary' or a number of steps, got {horizon!r}")
    except NeuronSpecError as exc:
        raise InitError(f"{method}: {layer.name}: {exc}") from exc
    return _scalar(sums[0]), _scalar(sums[1])


def _share(layer: LayerPlan, ctx: _Context, alpha: Optional[float]) -> float:
    """Fraction of the membrane variance this weight provides: split evenly between the layers summed into
    one neuron; with recurrent weights, a fraction α goes to the feed-forward input (Rossbroich et al.)."""
    feeds, recurrent = ctx.feeds.get(layer.neuron_name, []), ctx.recurrent.get(layer.neuron_name, [])
    if not recurrent or alpha is None:
        return 1.0 / max(1, len(feeds) + len(recurrent))
    if layer.role == "recurrent":
        return (1 - alpha) / len(recurrent)
    return alpha / max(1, len(feeds))


def _rule_spike_aware(layer: LayerPlan, opts: Dict[str, Any], ctx: _Context):
    theta, sigma_u = _membrane_target(layer.spec, opts)
    assumed: Dict[str, Any] = {"sigma_u": sigma_u}
    if layer.input_source == "neurons" and opts.get("input_second_moment") is None:
        q, how = _upstream_rate(layer, opts, ctx)
        assumed["q_in"] = f"{q:.4g} ({how})"
    else:
        _, q, how = _data_moments(layer, opts, "spike_aware")
        assumed["q_in"] = f"{q:.4g} ({how} E[x^2])"
    _, k2 = _kernel_sums(layer.spec, opts.get("horizon", "single"), "spike_aware", layer)
    share = _share(layer, ctx, opts.get("recurrent_fraction"))
    gain = calculate_spike_aware_gain(theta, sigma_u=sigma_u, input_second_moment=q, kernel_sq_sum=k2) * share
    assumed["sum_K2"] = k2
    if share != 1.0:
        assumed["variance_share"] = share
    std, weight, notes = math.sqrt(gain / layer.fan_in), 0.0, []
    relay = check_relay(opts.get("relay", 0.0))
    # one relay per neuron: only for a feed-forward weight of spikes that is its neuron's only input
    if relay and layer.input_source == "neurons" and layer.role == "input" and share == 1.0 \
            and not ctx.recurrent.get(layer.neuron_name):
        c, _ = _kernel_sums(layer.spec, "single", "spike_aware", layer)  # one step: K[0] = c
        std, weight = calculate_relay(relay, std, layer.fan_in, theta, q, c)
        assumed.update(relay=relay, relay_weight=weight)
    elif relay:
        notes.append("relay: not applied (the input is not spikes from upstream neurons, or the neuron has "
                     "several inputs)")
    return Law("normal", 0.0, std, weight), assumed, notes


def _rule_fluctuation(layer: LayerPlan, opts: Dict[str, Any], ctx: _Context):
    mu_u = float(opts.get("mu_u", 0.0))
    _, sigma_u = _membrane_target(layer.spec, opts, mu_u)
    assumed: Dict[str, Any] = {"mu_u": mu_u, "sigma_u": sigma_u}
    if opts.get("input_rate") is not None:
        m = q = float(opts["input_rate"])
        assumed["p_in"] = f"{m:.4g} (given)"
    elif layer.input_source == "neurons":
        m = q = _upstream_rate(layer, opts, ctx, mu_u)[0]
        assumed["p_in"] = f"{m:.4g} ({_upstream_rate(layer, opts, ctx, mu_u)[1]})"
    else:
        m, q, how = _data_moments(layer, opts, "fluctuation")
        assumed["input"] = f"mean {m:.4g}, E[x^2] {q:.4g} ({how})"
    k1, k2 = _kernel_sums(layer.spec, opts.get("steps") or "stationary", "fluctuation", layer)
    share = _share(layer, ctx, float(opts.get("recurrent_fraction", 0.9)))
    # μ_w is shared over the total drive of every population that feeds the neuron
    sources = ctx.feeds.get(layer.neuron_name, []) + ctx.recurrent.get(layer.neuron_name, [])
    drive = sum(source.fan_in for source in sources or [layer]) * m
    law = calculate_fluctuation(layer.fan_in, kernel_sums=(k1, k2), input_mean=m, input_second_moment=q, mu_u=mu_u,
                                sigma_u=sigma_u, variance_share=share, total_drive=drive)
    assumed.update(sum_K=k1, sum_K2=k2)
    if share != 1.0:
        assumed["variance_share"] = share
    return law, assumed, []


def _rule_baseline(name: str):
    def rule(layer: LayerPlan, opts: Dict[str, Any], ctx: _Context):
        return baseline_law(name, layer.fan_in, layer.fan_out), {}, []
    return rule


_RULES: Dict[str, Tuple[Callable, Tuple[str, ...]]] = {
    "ikun": (_rule_ikun, ("variant", "version", "mode", "distribution", "moment")),
    "spike_aware": (_rule_spike_aware, ("sigma_u", "rate", "horizon", "input_second_moment", "input_mean",
                                        "recurrent_fraction", "relay")),
    "fluctuation": (_rule_fluctuation, ("mu_u", "sigma_u", "rate", "input_rate", "steps", "input_second_moment",
                                        "input_mean", "recurrent_fraction")),
}
_RULES.update({name: (_rule_baseline(name), ()) for name in BASELINES})
METHODS = tuple(_RULES) + ("calibrated",)


def _check_options(method: str, opts: Dict[str, Any], where: str) -> None:
    if method not in _RULES:
        raise InitError(f"initialize: unknown method {method!r}{where}; choose from {list(METHODS)}")
    unknown = sorted(set(opts) - set(_RULES[method][1]))
    if unknown:
        raise InitError(f"initialize: unknown option(s) {unknown} for method {method!r}{where}; "
                        f"valid: {list(_RULES[method][1])}")


def _matches(layer: LayerPlan, pattern: str) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for name in (layer.name, layer.module_name, layer.neuron_name))


def is_skipped(layer: LayerPlan, skip) -> bool:
    """``skip``: a pattern, a predicate on the :class:`LayerPlan`, or a sequence of them."""
    skips: Sequence[Any] = [skip] if isinstance(skip, str) or callable(skip) else list(skip or [])
    return any(s(layer) if callable(s) else _matches(layer, s) for s in skips)


def compute_laws(p: Plan, method: str, options: Dict[str, Any], overrides=None, skip=None):
    """The law of every planned layer (nothing is written). Returns ``([(layer, law, LayerReport)], skipped)``."""
    _check_options(method, options, "")
    overrides = dict(overrides or {})
    for pattern, extra in overrides.items():
        if not isinstance(extra, dict):
            raise InitError(f"initialize: overrides[{pattern!r}] must be a dict of options, got {type(extra).__name__}")
        if not any(_matches(layer, pattern) for layer in p.layers):
            raise InitError(f"initialize: override pattern {pattern!r} matches no planned layer")
    ctx = _Context(p, {}, {})
    for layer in p.layers:
        bucket = ctx.recurrent if layer.role == "recurrent" else ctx.feeds
        bucket.setdefault(layer.neuron_name, []).append(layer)
    results, skipped = [], []
    for layer in p.layers:
        if is_skipped(layer, skip):
            skipped.append(layer.name)
            continue
        opts = dict(options)
        layer_method = method
        for pattern, extra in overrides.items():
            if _matches(layer, pattern):
                extra = dict(extra)
                if "method" in extra:
                    layer_method = extra.pop("method")
                    opts = {}  # another method's options do not carry over
                opts.update(extra)
        _check_options(layer_method, opts, f" (layer {layer.name})")
        try:
            law, assumed, notes = _RULES[layer_method][0](layer, opts, ctx)
        except (SurrogateError, NeuronSpecError) as exc:
            raise InitError(f"{layer_method}: {layer.name}: {exc}") from exc
        except InitError as exc:
            message = str(exc)
            raise InitError(message if layer.name in message else f"{message} (layer {layer.name})") from exc
        if not (math.isfinite(law.std) and law.std > 0 and math.isfinite(law.mean)):
            raise InitError(f"{layer_method}: {layer.name}: the computed law (mean {law.mean}, std {law.std}) is not finite and positive")
        kind, params = layer.spec.surrogate_description or ("?", {})
        surrogate = f"{kind}({', '.join(f'{k}={v:g}' if isinstance(v, float) else f'{k}={v}' for k, v in params.items() if not callable(v))})"
        report = LayerReport(layer.name, layer_method, f"{layer.neuron_name} ({type(layer.neuron).__name__})", surrogate,
                             layer.fan_in, layer.fan_out, layer.fan_in * (law.std**2 + law.mean**2) + law.relay**2,
                             law.std, law.mean, law.kind, assumed, notes, relay=law.relay)
        results.append((layer, law, report))
    return results, skipped


def initialize(
    model: nn.Module,
    method: str = "spike_aware",
    example_input: Any = None,
    *,
    generator: Optional[torch.Generator] = None,
    overrides: Optional[Dict[str, Dict[str, Any]]] = None,
    skip: Union[None, str, Callable[[LayerPlan], bool], Sequence[Union[str, Callable[[LayerPlan], bool]]]] = None,
    forward: Optional[Callable[[nn.Module, Any], Any]] = None,
    process_group: Any = None,
    **options,
) -> Report:
    """Initialize every weight that feeds a spiking neuron of ``model``; return a :class:`Report`.

    Args:
        model: an snnTorch / SpikingJelly model (or one with neurons registered by ``register_neuron``).
        method: ``"ikun"``, ``"spike_aware"``, ``"fluctuation"``, or a baseline (``"default"``, ``"kaiming_normal"``,
            ``"kaiming_uniform"``, ``"xavier_normal"``, ``"xavier_uniform"``, ``"lecun_normal"``, ``"spikingjelly"``).
        example_input: a batch as the model takes it; needed for models with a custom forward and for the
            statistics of layers that read the model input.
        generator: a CPU ``torch.Generator``; the same seed gives the same weights on every device and dtype.
        overrides: ``{pattern: {option: value, "method": other}}`` per layer (``fnmatch`` on the parameter,
            layer or neuron name).
        skip: layer name patterns (or predicates on the :class:`LayerPlan`) to leave untouched, e.g. the readout.
        forward: ``callable(model, example_input)`` for models that need more than ``model(example_input)``.
        process_group: under an initialized ``torch.distributed`` group (None: the world group; False: no
            synchronisation), the measured input statistics are those of the global batch (sums all-reduced
            over the ranks, each rank passing its own share as ``example_input``) and the written weights are
            broadcast from rank 0, so every rank ends with rank 0's weights bit for bit, whatever its own
            generator held. All ranks must call ``initialize`` together. A no-op outside ``torch.distributed``.
        **options: the method's options (``ikun``: variant, version, mode, distribution, moment; ``spike_aware``:
            sigma_u, rate, horizon, input_second_moment, relay; ``fluctuation``: mu_u, sigma_u, rate, input_rate, steps,
            recurrent_fraction).

    All new weights are computed and sampled before any is written, so an error leaves the model unchanged.
    The report records the settings (``report.settings``) and each layer's seed (``LayerReport.seed``):
    ``report.save(path)`` then :func:`reinitialize` reproduces the weights exactly.
    """
    return _initialize(model, method, example_input, generator, overrides, skip, forward, process_group, options)


def _initialize(model, method, example_input, generator, overrides, skip, forward, group, options,
                replay: Optional[Report] = None) -> Report:
    """``initialize``, optionally replaying the seeds (and checking the laws) of a recorded report."""
    if not isinstance(model, nn.Module):
        raise InitError(f"initialize: model must be a torch.nn.Module, got {type(model).__name__}")
    if method == "calibrated":
        report = _initialize_calibrated(model, example_input, generator, overrides, skip, forward, group, options,
                                        replay)
    else:
        report = _initialize_analytic(model, method, example_input, generator, overrides, skip, forward, group,
                                      options, replay)
    report.settings = _settings(method, options, overrides, skip, example_input, forward, group)
    return report


def _initialize_analytic(model, method, example_input, generator, overrides, skip, forward, group, options,
                         replay: Optional[Report]) -> Report:
    _check_options(method, options, "")
    if generator is not None and (not isinstance(generator, torch.Generator) or generator.device.type != "cpu"):
        raise InitError("initialize: generator must be a CPU torch.Generator")
    p = plan(model, example_input, forward=forward)
    _use_global_input_stats(p, group)
    results, skipped = compute_laws(p, method, options, overrides, skip)
    for layer, _, _ in results:
        if layer.weight.numel() == 0:
            raise InitError(f"initialize: {layer.name} has zero elements")
        if not layer.weight.is_floating_point():
            raise InitError(f"initialize: {layer.name} is not a floating-point tensor ({layer.weight.dtype})")
    # Each layer draws from its own stream, seeded in plan order from ``generator`` (or the global RNG): the
    # draws can run in parallel, and skipping or overriding one layer does not change the others' weights.
    # The seeds go into the report: replaying them needs no generator state.
    if replay is not None:
        seeds = _replayed_seeds(results, replay)
    else:
        seeds = torch.randint(0, 2**62, (len(results),), generator=generator).tolist()

    def draw(item):
        (layer, law, _), seed = item
        weight = layer.weight
        return weight, sample(law, weight.shape, dtype=weight.dtype, device=weight.device,
                              generator=torch.Generator().manual_seed(seed))

    with ThreadPoolExecutor(max_workers=min(len(results), os.cpu_count() or 1) or 1) as pool:
        new = list(pool.map(draw, zip(results, seeds)))
    with torch.no_grad():
        for weight, value in new:
            weight.copy_(value)
    # rank 0's draws win everywhere: robust to ranks whose generators (or global RNGs) differ
    broadcast_parameters([weight for weight, _ in new], src=0, group=group)
    for (_, _, row), seed in zip(results, seeds):
        row.seed = int(seed)
    notes = list(p.notes)
    if p.unfed:
        notes.append(f"neurons with no weight layer before them (left as they are): {', '.join(p.unfed)}")
    if is_distributed(group):
        notes.append(f"torch.distributed: input statistics of the global batch of {world_size(group)} ranks; "
                     "weights broadcast from rank 0 (the seeds recorded are this rank's)")
    return Report(method, [r for _, _, r in results], skipped, p.source, notes)


def _use_global_input_stats(p: Plan, group) -> None:
    """Under ``torch.distributed``, replace each layer's measured input statistics by the global batch's.

    From each rank's mean m, second moment q, non-zero fraction f and element count n, the sums n·m, n·q, n·f
    and n are all-reduced (float64) and divided again: E[x] = Σ n·m / Σ n, E[x²] = Σ n·q / Σ n, i.e. the
    statistics of the concatenated batch up to float64 rounding (~1e-16 relative). The input is binary only
    if it is binary on every rank. Every rank then computes the same laws.
    """
    if not is_distributed(group):
        return
    fields = 5
    rows: List[float] = []
    for layer in p.layers:
        s = layer.input_stats
        rows += [0.0] * fields if s is None else [s.mean * s.count, s.second_moment * s.count,
                                                  s.nonzero_fraction * s.count, float(s.count), float(not s.binary)]
    sums = all_reduce_sums(rows, group)
    for index, layer in enumerate(p.layers):
        total, squares, nonzero, count, not_binary = sums[fields * index:fields * (index + 1)]
        if count > 0:
            layer.input_stats = InputStats(total / count, squares / count, round(nonzero) / count, not_binary == 0,
                                           int(count))


_CALIBRATION_OPTIONS = ("target_rate", "tolerance", "max_evaluations", "steps", "bias", "mode", "seed")


def _initialize_calibrated(model, example_input, generator, overrides, skip, forward, group, options,
                           replay: Optional[Report] = None) -> Report:
    """``method="calibrated"``: an analytic start (``start=``, default spike-aware, with its options), then
    :func:`snn_initplug.calibration.calibrate` on the example batch. Either both happen or neither."""
    from .calibration import calibrate

    options = dict(options)
    start = options.pop("start", "spike_aware")
    calibration = {k: options.pop(k) for k in _CALIBRATION_OPTIONS if k in options}
    if start == "calibrated" or start not in _RULES:
        raise InitError(f"initialize: start must be one of {list(METHODS)}, got {start!r}")
    _check_options(start, options, " (the start of calibrated)")
    if example_input is None:
        raise InitError("initialize: method='calibrated' needs example_input= (a real batch)")
    saved = [(p, p.detach().clone()) for p in model.parameters()]
    try:
        # a list holds one input per time step (a model called once per step): the start plans on the first
        start_input = example_input[0] if isinstance(example_input, list) else example_input
        report = _initialize_analytic(model, start, start_input, generator, overrides, skip, forward, group, options,
                                      replay)
        report.calibration = calibrate(model, example_input, forward=forward, skip=skip, process_group=group,
                                       **calibration)
        if replay is not None:
            _check_replayed_scales(report.calibration, replay.calibration)
    except BaseException:
        with torch.no_grad():
            for p, value in saved:
                p.copy_(value)
        raise
    report.method = f"calibrated (from {start})"
    return report


# ----------------------------------------------------------------------------------------------------------
# Checkpoints: record the settings, replay them
# ----------------------------------------------------------------------------------------------------------
SETTINGS_FORMAT = 1
_DISTRIBUTIONS = {"Uniform": Uniform, "Normal": Normal}


def _encode(value: Any) -> Any:
    """A JSON-safe form of an option value; what JSON cannot hold (callables, tensors) is marked
    ``{"__unserializable__": repr}`` so that :func:`reinitialize` can refuse it by name."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, (Uniform, Normal)):
        return {"__distribution__": type(value).__name__, **asdict(value)}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _encode(v) for k, v in value.items()}
    return {"__unserializable__": f"{type(value).__name__} {value!r}"}


def _decode(value: Any, where: str) -> Any:
    if isinstance(value, list):
        return [_decode(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        if "__unserializable__" in value:
            raise InitError(f"reinitialize: the report cannot be replayed: {where} was {value['__unserializable__']}, "
                            "which a JSON report cannot hold (use name patterns and plain values instead of "
                            "callables to make a report replayable)")
        if "__distribution__" in value:
            fields = {k: v for k, v in value.items() if k != "__distribution__"}
            return _DISTRIBUTIONS[value["__distribution__"]](**fields)
        return {k: _decode(v, f"{where}[{k!r}]") for k, v in value.items()}
    return value


def _skip_list(skip) -> List[Any]:
    return [skip] if isinstance(skip, str) or callable(skip) else list(skip or [])


def _tensors(value: Any):
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)


def input_fingerprint(example_input: Any) -> Optional[Dict[str, Any]]:
    """SHA-256 of the example batch's tensors (dtype, shape and bytes), with their shapes: which batch a
    report was made with (provenance only: :func:`reinitialize` checks the laws themselves)."""
    tensors = [t.detach().cpu().contiguous() for t in _tensors(example_input)]
    if not tensors:
        return None
    digest = hashlib.sha256()
    for t in tensors:
        digest.update(f"{t.dtype}{tuple(t.shape)};".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return {"sha256": digest.hexdigest(), "shapes": [list(t.shape) for t in tensors],
            "dtypes": [str(t.dtype) for t in tensors]}


def _settings(method, options, overrides, skip, example_input, forward, group) -> Dict[str, Any]:
    """What :func:`reinitialize` needs besides the per-layer seeds (which live in the layer rows)."""
    from . import __version__

    return {
        "format": SETTINGS_FORMAT,
        "method": method,
        "options": _encode(dict(options)),
        "overrides": _encode(dict(overrides or {})),
        "skip": _encode(_skip_list(skip)),
        "forward": None if forward is None else f"custom ({getattr(forward, '__qualname__', repr(forward))}): "
                                                 "pass it again to reinitialize",
        "example_input": input_fingerprint(example_input),
        "world_size": world_size(group),
        "versions": {"snn_initplug": __version__, "torch": torch.__version__},
    }


def _replayed_seeds(results, replay: Report) -> List[int]:
    """The recorded seeds, after checking that the fresh plan has the recorded layers and laws: the same law
    and seed give the same weights, bit for bit (each layer's draw depends on nothing else)."""
    fresh, recorded = [row.layer for _, _, row in results], [row.layer for row in replay.layers]
    if fresh != recorded:
        raise InitError(f"reinitialize: the model's layers {fresh} are not the report's {recorded} "
                        "(a different architecture, or a different plan without the same example_input)")
    for (_, law, row), old in zip(results, replay.layers):
        if old.seed is None:
            raise InitError(f"reinitialize: the report has no seed for {old.layer} (written by an older version)")
        if (row.method, law.kind, law.mean, law.std, law.relay) != (old.method, old.law, old.mean, old.std, old.relay):
            raise InitError(f"reinitialize: {old.layer}: the law is {row.method} {law.kind}(mean {law.mean!r}, std "
                            f"{law.std!r}, relay {law.relay!r}), the report's {old.method} {old.law}(mean {old.mean!r}, "
                            f"std {old.std!r}, relay {old.relay!r}): "
                            "pass the same example_input (and model) as when the report was made")
    return [int(old.seed) for old in replay.layers]


def _check_replayed_scales(fresh, recorded) -> None:
    if recorded is None:
        raise InitError("reinitialize: the report says method='calibrated' but holds no calibration")
    got = [(c.neuron, c.scale) for c in fresh.layers]
    want = [(c.neuron, c.scale) for c in recorded.layers]
    if got != want:
        raise InitError(f"reinitialize: calibration found scales {got}, the report {want}: the rates depend on the "
                        "batch and on the parameters initialize leaves alone (biases, BatchNorm): pass the same "
                        "example_input, to a model whose other parameters equal the original's (e.g. built under "
                        "the same torch.manual_seed)")


def reinitialize(
    model: nn.Module,
    report: Union[Report, str, "os.PathLike[str]"],
    example_input: Any = None,
    *,
    forward: Optional[Callable[[nn.Module, Any], Any]] = None,
    process_group: Any = None,
) -> Report:
    """Re-run the :func:`initialize` call recorded in ``report`` (a :class:`Report` or a path to its JSON),
    reproducing its weights bit for bit on a freshly built ``model`` of the same architecture.

    The recorded method, options, overrides and skip patterns are replayed, and each layer draws from its
    recorded seed; nothing depends on the current random state. ``example_input`` (and ``forward``) must be
    given again when the original call had them: the measured input statistics, and for ``"calibrated"`` the
    searched scales, are recomputed and must match the report exactly, or an :class:`InitError` is raised and
    the model is left unchanged (laws) or restored (scales). The searched scales depend on the parameters
    ``initialize`` leaves alone (biases, BatchNorm), so replay ``"calibrated"`` on a model whose other
    parameters equal the original's (e.g. built under the same ``torch.manual_seed``). A report whose ``skip``
    or options held callables cannot be replayed (JSON cannot hold them): that too is an :class:`InitError`,
    naming the value.

    A report made under ``torch.distributed`` replays exactly under the same group with the same per-rank
    batches (save it on rank 0: its seeds are rank 0's, whose weights every rank received).
    """
    if isinstance(report, (str, os.PathLike)):
        report = Report.load(report)
    if not isinstance(report, Report):
        raise InitError(f"reinitialize: expected a Report or a path to one, got {type(report).__name__}")
    settings = report.settings
    if not settings:
        raise InitError("reinitialize: the report records no settings (written by an older version)")
    if settings.get("format") != SETTINGS_FORMAT:
        raise InitError(f"reinitialize: unknown settings format {settings.get('format')!r} "
                        f"(this version reads {SETTINGS_FORMAT})")
    options = _decode(settings["options"], "options")
    overrides = _decode(settings["overrides"], "overrides")
    skip = _decode(settings["skip"], "skip")
    if settings.get("example_input") is not None and example_input is None:
        raise InitError(f"reinitialize: the report was made with an example_input (shapes "
                        f"{settings['example_input']['shapes']}); pass the same batch")
    if settings.get("forward") is not None and forward is None:
        raise InitError("reinitialize: the report was made with a custom forward=; pass it again")
    return _initialize(model, settings["method"], example_input, None, overrides or None, skip or None, forward,
                       process_group, options, replay=report)
