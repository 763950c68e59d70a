"""The rules of ``initialize``: each method's rule gathers one planned layer's numbers (its fans, its neuron's
threshold and kernel sums, its input statistics, the typed options) and calls the method's law function in
:mod:`snn_initplug.laws`, the same function the tensor-level initializers of :mod:`snn_initplug.init` call.
:func:`compute_laws` applies them to a plan; the rules only read."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch

from . import theory
from .adapters import surrogate_lever
from .copycheck import copy_geometry, copy_refused
from .errors import InitError, NeuronSpecError, SurrogateError
from .init import calculate_ikun_gain
from .laws import (
    Law,
    RelayDynamics,
    baseline_law,
    fluctuation_law,
    ikun_law,
    membrane_target,
    spike_aware_law,
    spikeinit_law,
)
from .options import (
    ANALYTIC_METHODS,
    FluctuationOptions,
    IkunOptions,
    SpikeAwareOptions,
    SpikeInitOptions,
    horizon_steps,
    method_options,
)
from .planning import LayerPlan, Plan
from .reports import LayerReport
from .running import mean_value
from .selection import Skip, check_overrides, is_skipped, layer_overrides
from .spikeinit import SpikeInitScale, calculate_spikeinit
from .tables import surrogate_label

__all__ = ["compute_laws", "immediate_input"]

# ----------------------------------------------------------------------------------------------------------
# A layer's numbers
# ----------------------------------------------------------------------------------------------------------
@dataclass
class _Context:
    plan: Plan
    feeds: dict[str, list[LayerPlan]]  # neuron name -> layers feeding it (input role)
    recurrent: dict[str, list[LayerPlan]]

    @classmethod
    def of(cls, p: Plan) -> _Context:
        ctx = cls(p, {}, {})
        for layer in p.layers:
            bucket = ctx.recurrent if layer.role == "recurrent" else ctx.feeds
            bucket.setdefault(layer.neuron_name, []).append(layer)
        return ctx


def _sigma_u(spec, opts, mu_u: float = 0.0) -> tuple[float, float]:
    """(θ, σ_U) of a neuron at the options' membrane target (:func:`snn_initplug.laws.membrane_target`)."""
    theta = mean_value(spec.threshold)
    return theta, membrane_target(theta, sigma_u=opts.sigma_u, target_rate=opts.target_rate, mu_u=mu_u)


def _upstream_rate(layer: LayerPlan, opts, ctx: _Context, mu_u: float = 0.0) -> tuple[float, str]:
    """Spike probability of the neurons feeding this layer: the target rate when one is given, else the
    self-consistent 1 − Φ((θ − μ_u)/σ_u) of the upstream neurons at their own target."""
    if opts.target_rate is not None:
        return opts.target_rate, "target rate"
    specs = {name: spec for name, _, spec in ctx.plan.neurons}
    upstream = [specs[n] for n in layer.upstream if n in specs] or [layer.spec]
    rates = [theory.firing_probability(*_sigma_u(spec, opts, mu_u), mu_u) for spec in upstream]
    return sum(rates) / len(rates), "self-consistent 1-Φ((θ-μ)/σ_u) of " + (", ".join(layer.upstream) or "this layer")


def _data_moments(layer: LayerPlan, opts, method: str) -> tuple[float, float, str]:
    """(mean, second moment, where from) of a layer's input: given in the options, or measured."""
    if opts.input_second_moment is not None:
        q = opts.input_second_moment
        return (q if opts.input_mean is None else opts.input_mean), q, "given"
    stats = layer.input_stats
    if stats is None:
        raise InitError(f"{method}: {layer.name} reads the model input, whose statistics are unknown; pass "
                        "example_input= (or input_second_moment= in overrides for this layer)")
    return stats.mean, stats.second_moment, "measured"


def _kernel_sums(layer: LayerPlan, horizon: Any, method: str) -> tuple[float, float]:
    """(ΣK, ΣK²) of the layer's neuron over the horizon; a one-step horizon on a neuron whose input reaches the
    membrane only after a step (K[0] = 0: snnTorch's Alpha) takes the infinite horizon (:func:`_delay_notes`)."""
    try:
        steps = horizon_steps(method, horizon)
        sums = layer.spec.kernel_sums(None if steps == 1 and not immediate_input(layer.spec) else steps)
    except NeuronSpecError as exc:
        raise InitError(f"{method}: {layer.name}: {exc}") from exc
    return mean_value(sums[0]), mean_value(sums[1])


def _delay_notes(layer: LayerPlan, horizon: Any, method: str) -> list[str]:
    """The note of :func:`_kernel_sums`'s fallback, when it applies."""
    if horizon_steps(method, horizon) != 1 or immediate_input(layer.spec):
        return []
    return [f"steps='single': the input reaches the membrane of {layer.neuron_name} only after the first step "
            "(K[0] = 0); the stationary kernel sums are used (give steps=T for a T-step horizon)"]


def _share(layer: LayerPlan, ctx: _Context, alpha: Optional[float]) -> float:
    """Fraction of the membrane variance this weight provides: split evenly between the layers summed into
    one neuron; with recurrent weights, a fraction α goes to the feed-forward input (Rossbroich et al.)."""
    feeds, recurrent = ctx.feeds.get(layer.neuron_name, []), ctx.recurrent.get(layer.neuron_name, [])
    if not recurrent or alpha is None:
        return 1.0 / max(1, len(feeds) + len(recurrent))
    if layer.role == "recurrent":
        return (1 - alpha) / len(recurrent)
    return alpha / max(1, len(feeds))


# ----------------------------------------------------------------------------------------------------------
# Rules: (layer, options, context) -> (law, assumed, notes); each calls its law function
# ----------------------------------------------------------------------------------------------------------
Rule = Callable[[LayerPlan, Any, _Context], tuple[Law, dict[str, Any], list[str]]]


def _ikun_rule(layer: LayerPlan, opts: IkunOptions, ctx: _Context):
    kappa = calculate_ikun_gain(layer.spec.surrogate, variant=opts.variant, distribution=opts.distribution,
                                moment=opts.moment)
    law = ikun_law(layer.fan_in, layer.fan_out, kappa, fan_mode=opts.fan)
    fan = theory.fan_for_mode(layer.fan_in, layer.fan_out, opts.fan)
    assumed = {"kappa": kappa, "fan": f"{opts.fan}={fan:g}", "variant": opts.variant}
    return law, assumed, []


def _relays(layer: LayerPlan, ctx: _Context, share: float) -> bool:
    """One relay per neuron: only for a feed-forward weight of spikes that is its neuron's whole input (no
    other layer, no recurrent weight, no identity residual spikes summed in as in ``lif(fc(s) + s)``) and
    reaches its membrane in the step it arrives (K[0] > 0; snnTorch's Alpha passes it a step late, so no
    one-step jump can hand a spike on)."""
    return layer.input_source == "neurons" and layer.role == "input" and share == 1.0 \
        and not ctx.recurrent.get(layer.neuron_name) and not layer.residual \
        and immediate_input(layer.spec)


def immediate_input(spec: Any) -> bool:
    """Whether an input reaches the neuron's membrane in the step it arrives (the impulse response's K[0] ≠ 0,
    from the one-step ΣK²): the one rule behind the one-step horizon's fallback, the relay and the recipe."""
    try:
        return mean_value(spec.kernel_sums(1)[1]) > 0
    except NeuronSpecError:
        return False


def _identity_sources(layer: LayerPlan) -> list[str]:
    """The neurons whose spikes reach this layer's neuron without a weight (identity residual paths)."""
    return [source[len("spikes of "):] for source in layer.residual if source.startswith("spikes of ")]


def _spike_aware_rule(layer: LayerPlan, opts: SpikeAwareOptions, ctx: _Context):
    identity = _identity_sources(layer)
    mu_id = var_id = 0.0
    if identity:
        # identity spikes of rate q (weight 1) add a mean q·ΣK and a variance q(1-q)·ΣK² to the membrane; the
        # weight provides what is left of the target (Gaussian membrane, independent inputs)
        q_id, _ = _upstream_rate(dataclasses.replace(layer, upstream=tuple(identity)), opts, ctx)
        k1_id, k2_id = _kernel_sums(layer, opts.steps, "spike_aware")
        mu_id, var_id = len(identity) * q_id * k1_id, len(identity) * q_id * (1 - q_id) * k2_id
    theta, sigma_u = _sigma_u(layer.spec, opts, mu_id)
    if identity:
        if sigma_u**2 <= var_id:
            raise InitError(f"spike_aware: {layer.name}: the identity spikes of {', '.join(identity)} alone exceed "
                            f"the membrane target (σ_u = {sigma_u:.4g}); lower their rate or raise sigma_u")
        sigma_u = math.sqrt(sigma_u**2 - var_id)
    assumed: dict[str, Any] = {"sigma_u": sigma_u}
    if identity:
        assumed["identity"] = f"{', '.join(identity)}: mean {mu_id:.4g}, variance {var_id:.4g}"
    if layer.input_source == "neurons" and opts.input_second_moment is None:
        q, how = _upstream_rate(layer, opts, ctx)
        assumed["q_in"] = f"{q:.4g} ({how})"
    else:
        _, q, how = _data_moments(layer, opts, "spike_aware")
        assumed["q_in"] = f"{q:.4g} ({how} E[x^2])"
    _, k2 = _kernel_sums(layer, opts.steps, "spike_aware")
    share = _share(layer, ctx, opts.recurrent_fraction)
    assumed["sum_K2"] = k2
    if share != 1.0:
        assumed["variance_share"] = share
    relay, input_scale, notes, dynamics = 0.0, 1.0, _delay_notes(layer, opts.steps, "spike_aware"), None
    if opts.relay and _relays(layer, ctx, share) and not (opts.relay == 1.0 and layer.norm is not None):
        problem, left_out = copy_geometry(layer) if opts.relay == 1.0 else (None, None)
        if problem is not None:
            raise copy_refused("initialize", layer.name, f"cannot copy its input: {problem}")
        if left_out is not None:
            notes.append(f"relay=1: {left_out}")
        relay, input_scale = opts.relay, _kernel_sums(layer, "single", "spike_aware")[0]  # one step: K[0] = c
        dynamics = _relay_dynamics(layer, opts.steps, copy=relay == 1.0)
    elif opts.relay:
        notes.append("relay: not applied (the input is not spikes from upstream neurons, reaches the membrane a "
                     "step late, or the neuron has several inputs: other layers, a recurrent weight or identity "
                     "residual spikes"
                     + (", or a normalization between" if opts.relay == 1.0 else "") + ")")
    law = spike_aware_law(layer.fan_in, theta, sigma_u, q, k2, share=share, relay=relay, input_scale=input_scale,
                          relay_dynamics=dynamics)
    if relay:
        assumed.update(relay=relay, relay_weight=law.relay)
        if dynamics is not None:
            assumed["relay_steps"] = "any" if dynamics.steps is None else dynamics.steps
    if relay == 1.0:
        notes.append("relay=1: a copy of the relayed spikes (no dense part); the bias is set to 0")
    return law, assumed, notes


def _relay_dynamics(layer: LayerPlan, horizon: Any, copy: bool = False) -> Optional[RelayDynamics]:
    """``steps=T`` (T > 1): the relay weight holds the rate over T steps of the neuron's own leak and reset;
    ``"single"`` and ``"stationary"``: the one-step closed form (None). The copy relay (``copy``) always needs
    the neuron's dynamics: over T steps, or any number for ``"single"`` and ``"stationary"``."""
    steps = horizon_steps("spike_aware", horizon)
    if copy:
        steps = steps if steps != 1 else None
    elif steps is None or steps == 1:
        return None
    spec = layer.spec
    betas = torch.as_tensor(spec.beta, dtype=torch.float64)
    smallest, largest = float(betas.min()), float(betas.max())
    # per-neuron decays: their mean; the copy needs a jump that copies for all of them
    return RelayDynamics(beta=float(betas.mean()), steps=steps, reset=spec.reset, reset_value=float(spec.reset_value),
                         beta_range=(smallest, largest) if copy and smallest != largest else None,
                         reset_timing=spec.reset_timing)


def _fluctuation_rule(layer: LayerPlan, opts: FluctuationOptions, ctx: _Context):
    _, sigma_u = _sigma_u(layer.spec, opts, opts.mu_u)
    assumed: dict[str, Any] = {"mu_u": opts.mu_u, "sigma_u": sigma_u}
    if opts.input_rate is not None:
        m = q = opts.input_rate
        assumed["p_in"] = f"{m:.4g} (given)"
    elif layer.input_source == "neurons":
        m, how = _upstream_rate(layer, opts, ctx, opts.mu_u)
        q = m
        assumed["p_in"] = f"{m:.4g} ({how})"
    else:
        m, q, how = _data_moments(layer, opts, "fluctuation")
        assumed["input"] = f"mean {m:.4g}, E[x^2] {q:.4g} ({how})"
    k1, k2 = _kernel_sums(layer, opts.steps, "fluctuation")
    share = _share(layer, ctx, opts.recurrent_fraction)
    # μ_w is shared over the total drive of every population that feeds the neuron
    sources = ctx.feeds.get(layer.neuron_name, []) + ctx.recurrent.get(layer.neuron_name, [])
    drive = sum(source.fan_in for source in sources or [layer]) * m
    law = fluctuation_law(layer.fan_in, m, q, k1, k2, mu_u=opts.mu_u, sigma_u=sigma_u, share=share, total_drive=drive)
    assumed.update(sum_K=k1, sum_K2=k2)
    if share != 1.0:
        assumed["variance_share"] = share
    return law, assumed, _delay_notes(layer, opts.steps, "fluctuation")


def _spikeinit_rule(layer: LayerPlan, opts: SpikeInitOptions, ctx: _Context):
    """SpikeInit's weight scale for the layer's neuron (:func:`snn_initplug.calculate_spikeinit`) and, with
    ``surrogate=True``, the shape α* of the neuron's own surrogate (written by
    :func:`snn_initplug.shaping.surrogate_writes`)."""
    spec = layer.spec
    if spec.synaptic_decay is not None or spec.impulse_response is not None:
        raise InitError(f"spikeinit: {layer.name}: its neuron {spec.name or type(layer.neuron).__name__} has a "
                        "synaptic current stage; SpikeInit's laws describe a single membrane (LIF or IF)")
    if layer.input_source == "neurons":
        source, q, mean = "spikes", opts.target_rate, None
        assumed: dict[str, Any] = {"q_in": f"{q:.4g} (upstream neurons at the target rate)"}
    else:
        stats = layer.input_stats
        if stats is None:
            raise InitError(f"spikeinit: {layer.name} reads the model input, whose statistics are unknown; pass "
                            "example_input=")
        q, source, mean = stats.second_moment, "spikes" if stats.binary else "static", stats.mean
        assumed = {"q_in": f"{q:.4g} (measured E[x^2] of {'spikes' if stats.binary else 'a static analog input'})"}
    scale = calculate_spikeinit(target_rate=opts.target_rate, decay=spec.beta, input_scale=spec.input_scale,
                                threshold=spec.threshold, reset=spec.reset, reset_value=spec.reset_value,
                                reset_timing=spec.reset_timing, input=source, input_second_moment=q,
                                input_mean=mean if source == "spikes" else None, steps=opts.steps,
                                simulate=opts.simulate, samples=opts.samples, seed=opts.seed)
    share = _share(layer, ctx, None)
    law = spikeinit_law(layer.fan_in, scale.weight_scale, share=share)
    assumed.update(sigma_star=scale.weight_scale, how=scale.how, rate=scale.rate,
                   membrane=f"N({scale.membrane_mean:.4g}, {scale.membrane_std:.4g}^2)",
                   gradient_target=scale.gradient_target)
    if share != 1.0:
        assumed["variance_share"] = share
    return law, assumed, _surrogate_shape(layer, opts, scale, assumed)


def _surrogate_shape(layer: LayerPlan, opts: SpikeInitOptions, scale: SpikeInitScale,
                     assumed: dict[str, Any]) -> list[str]:
    """α* of the neuron's surrogate family, recorded in ``assumed`` (``surrogate_shape``); the notes say why
    the surrogate is left as is otherwise."""
    if not opts.surrogate:
        return ["surrogate untouched (surrogate=False)"]
    lever = surrogate_lever(layer.neuron)
    if lever is None:
        return [f"surrogate left as is: the shape of {surrogate_label(layer.spec.surrogate_description)} cannot "
                "be set (a user callable or a family of several parameters); scale_membrane(model, c, batch) "
                "widens any surrogate relative to θ instead"]
    alpha = scale.surrogate_shape(lever.at, lever.value)
    assumed.update(surrogate=f"{lever.parameter} {lever.value:.4g} -> {alpha:.4g}", surrogate_shape=alpha)
    return []


def _baseline_rule(name: str) -> Rule:
    def rule(layer: LayerPlan, opts, ctx: _Context):
        spec = layer.spec
        return baseline_law(name, layer.fan_in, layer.fan_out, threshold=mean_value(spec.threshold),
                            input_scale=mean_value(spec.input_scale)), {}, []
    return rule


_RULES: dict[str, Rule] = {"ikun": _ikun_rule, "spike_aware": _spike_aware_rule, "fluctuation": _fluctuation_rule,
                           "spikeinit": _spikeinit_rule}
_RULES.update({name: _baseline_rule(name) for name in ANALYTIC_METHODS if name not in _RULES})


def _layer_law(layer: LayerPlan, method: str, opts: dict[str, Any], ctx: _Context):
    """The rule of one layer, its errors naming the layer (in the class the rule raised)."""
    try:
        law, assumed, notes = _RULES[method](layer, method_options(method, opts, f" (layer {layer.name})"), ctx)
    except (SurrogateError, NeuronSpecError) as exc:
        raise InitError(f"{method}: {layer.name}: {exc}") from exc
    except InitError as exc:
        message = str(exc)
        raise type(exc)(message if layer.name in message else f"{message} (layer {layer.name})") from exc
    if not (math.isfinite(law.std) and (law.std > 0 or law.is_copy) and math.isfinite(law.mean)):
        raise InitError(f"{method}: {layer.name}: the computed law (mean {law.mean}, std {law.std}) is not finite "
                        "and positive")
    if layer.norm and layer.role == "input":
        notes = [*notes, f"BatchNorm {layer.norm} follows: in training mode it normalises this layer's output, so "
                         "the weight's scale does not change the rate ('calibrated' scales the BatchNorm γ instead)"]
    return law, assumed, notes


def compute_laws(p: Plan, method: str, options: dict[str, Any], overrides=None, skip: Skip = None,
                 label: Callable[[str], str] = str):
    """The law of every planned layer (nothing is written). Returns ``([(layer, law, LayerReport)], skipped)``;
    ``label`` names the method in each row (``calibrated`` labels the rows of its start)."""
    method_options(method, options)  # an unknown method or option fails before any layer
    overrides = check_overrides(p, overrides)
    ctx = _Context.of(p)
    results, skipped = [], []
    for layer in p.layers:
        if is_skipped(layer, skip):
            skipped.append(layer.name)
            continue
        layer_method, opts = layer_overrides(layer, method, options, overrides)
        try:
            law, assumed, notes = _layer_law(layer, layer_method, opts, ctx)
        except (OverflowError, ZeroDivisionError) as exc:  # e.g. sigma_u=1e200: its square overflows
            raise InitError(f"{layer_method}: the law of {layer.name} cannot be computed with these options "
                            f"({type(exc).__name__}: {exc}); are the numbers in range?") from exc
        report = LayerReport(layer.name, label(layer_method), f"{layer.neuron_name} ({type(layer.neuron).__name__})",
                             surrogate_label(layer.spec.surrogate_description), layer.fan_in, layer.fan_out,
                             layer.fan_in * (law.std**2 + law.mean**2) + law.relay**2, law.std, law.mean, law.kind,
                             assumed, notes, relay=law.relay)
        results.append((layer, law, report))
    return results, skipped
