"""``initialize(model, example_input, method="auto")``: plan the model, compute every new weight, then write them all.

With no method (``"auto"``), the recipe is chosen from the plan (:mod:`snn_initplug.recipes`): ``calibrated``
with the relay and the membrane scaling a plain chain of its length needs, written with the membrane scaling
in one all-or-nothing step (:class:`~snn_initplug.transaction.ModelState`).

Each method is a rule that gathers one planned layer's numbers (its fans, its neuron's threshold and kernel
sums, its input statistics, the typed options) and calls the method's law function in
:mod:`snn_initplug.laws`, the same function the tensor-level initializers of :mod:`snn_initplug.init` call.
The rules only read, so an error in any layer leaves the model untouched. Only after every law is known and
every tensor sampled are the weights written, under ``torch.no_grad()``. Biases, BatchNorm parameters and
layers that feed no neuron (a plain readout) are left as they are.

Under ``torch.distributed`` (``process_group=``) the input statistics are those of the global batch and the
written weights are broadcast from rank 0 (:mod:`snn_initplug.distributed`). Every :class:`Report` records the
settings and the per-layer seeds, so ``Report.save`` / ``Report.load`` / :func:`reinitialize` reproduce the
weights bit for bit (:mod:`snn_initplug.replay`).
"""
from __future__ import annotations

import dataclasses
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

import torch
import torch.nn as nn

from . import replay as checkpoint
from . import theory
from .adapters import threshold_lever
from .calibration import calibrate, drive
from .distributed import all_reduce_sums, broadcast_parameters, is_distributed, world_size
from .errors import ArgumentTypeError, InitError, NeuronSpecError, OptionError, PlanError, SurrogateError
from .init import calculate_ikun_gain, sample
from .laws import Law, RelayDynamics, baseline_law, fluctuation_law, ikun_law, membrane_target, spike_aware_law
from .membrane import scale_membrane
from .options import (
    ANALYTIC_METHODS,
    CALIBRATION_FIELDS,
    BaselineOptions,
    CalibrationOptions,
    FluctuationOptions,
    IkunOptions,
    MethodOptions,
    SpikeAwareOptions,
    horizon_steps,
    method_name,
    method_options,
    non_default_fields,
)
from .planning import InputStats, LayerPlan, Plan, neuron_modules, plan
from .recipes import Recipe, choose
from .reports import LayerReport, Report, calibrated_label
from .selection import Skip, check_overrides, is_skipped, layer_overrides
from .tables import surrogate_label
from .transaction import ModelState, Snapshot, agree, check_writable, exclusive, fingerprint, write_all

__all__ = ["initialize", "reinitialize", "Report", "LayerReport", "METHODS", "compute_laws"]

METHODS = ("auto",) + ANALYTIC_METHODS + ("calibrated",)


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


def _scalar(value: Any) -> float:
    """Per-neuron parameters enter the formulas through their mean (the report says so)."""
    return float(value.mean()) if isinstance(value, torch.Tensor) else float(value)


def _sigma_u(spec, opts, mu_u: float = 0.0) -> tuple[float, float]:
    """(θ, σ_U) of a neuron at the options' membrane target (:func:`snn_initplug.laws.membrane_target`)."""
    theta = _scalar(spec.threshold)
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
    """(ΣK, ΣK²) of the layer's neuron over the horizon."""
    try:
        sums = layer.spec.kernel_sums(horizon_steps(method, horizon))
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
    other layer, no recurrent weight, no identity residual spikes summed in as in ``lif(fc(s) + s)``)."""
    return layer.input_source == "neurons" and layer.role == "input" and share == 1.0 \
        and not ctx.recurrent.get(layer.neuron_name) and not layer.residual


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
    relay, input_scale, notes, dynamics = 0.0, 1.0, [], None
    if opts.relay and _relays(layer, ctx, share) and not (opts.relay == 1.0 and layer.norm is not None):
        relay, input_scale = opts.relay, _kernel_sums(layer, "single", "spike_aware")[0]  # one step: K[0] = c
        dynamics = _relay_dynamics(layer, opts.steps, copy=relay == 1.0)
    elif opts.relay:
        notes.append("relay: not applied (the input is not spikes from upstream neurons, or the neuron has "
                     "several inputs: other layers, a recurrent weight or identity residual spikes"
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
                         beta_range=(smallest, largest) if copy and smallest != largest else None)


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
    return law, assumed, []


def _baseline_rule(name: str) -> Rule:
    def rule(layer: LayerPlan, opts, ctx: _Context):
        return baseline_law(name, layer.fan_in, layer.fan_out), {}, []
    return rule


_RULES: dict[str, Rule] = {"ikun": _ikun_rule, "spike_aware": _spike_aware_rule, "fluctuation": _fluctuation_rule}
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


# ----------------------------------------------------------------------------------------------------------
# initialize
# ----------------------------------------------------------------------------------------------------------
def initialize(
    model: nn.Module,
    example_input: Any = None,
    method: Union[str, MethodOptions] = "auto",
    *,
    steps: Optional[int] = None,
    relay: Optional[float] = None,
    membrane: Optional[float] = None,
    weightless: Optional[str] = None,
    generator: Optional[torch.Generator] = None,
    overrides: Optional[dict[str, dict[str, Any]]] = None,
    skip: Skip = None,
    forward: Optional[Callable[[nn.Module, Any], Any]] = None,
    process_group: Any = None,
    **options,
) -> Report:
    r"""Initialize every weight that feeds a spiking neuron of ``model``; return a :class:`Report`.

    ``initialize(model, batch, steps=T)`` is the one call: it plans the model and picks the recipe our
    measurements found best for it (:mod:`snn_initplug.recipes`): ``calibrated`` everywhere, the relay by
    length for plain chains of spiking layers (``relay=0.9`` and the membrane ×0.5 from 10 to 20 layers, the
    copy relay ``relay=1`` beyond), weight-less neurons through their threshold. The report's first line names
    the recipe and why. Naming a method (``initialize(model, batch, "ikun")``, or the older
    ``initialize(model, "ikun", batch)``) uses that method instead.

    Args:
        model: an snnTorch / SpikingJelly model (or one with neurons registered by ``register_neuron``).
        example_input: a batch as the model takes it (for a model called once per time step, with ``steps=T``,
            or a list of T per-step tensors). Needed by ``"auto"`` and ``"calibrated"``, by models with a
            custom forward and for the statistics of layers that read the model input.
        method: ``"auto"`` (the default: the recipe above), ``"calibrated"``, ``"ikun"``, ``"spike_aware"``,
            ``"fluctuation"``, or a baseline (``"default"``, ``"kaiming_normal"``, ``"kaiming_uniform"``,
            ``"xavier_normal"``, ``"xavier_uniform"``, ``"lecun_normal"``, ``"spikingjelly"``); or an options
            record (``IkunOptions(fan_mode="fan_out")``, ...).
        steps: the number of time steps T: the batch is presented at T steps while calibrating (``"auto"``,
            ``"calibrated"``); the kernel horizon of ``spike_aware`` and ``fluctuation``.
        relay: the relay share ρ of deep plain stacks (``"auto"`` chooses it by length; 0: none, 1: the copy
            relay); ``spike_aware``'s and ``calibrated``'s start's option.
        membrane: after the init, every neuron's membrane and threshold scaled by this factor
            (:func:`~snn_initplug.scale_membrane`, in the same all-or-nothing write); ``"auto"`` chooses 0.5
            for plain chains of 10–20 layers, else 1 (none).
        weightless: neurons no weight feeds: ``"threshold"`` (the ``"auto"`` choice when there are any) brings
            them to the target through their threshold, ``"report"`` lists them as not calibrated.
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
        **options: the method's options, the fields of its record (:mod:`snn_initplug.options`): ``ikun``:
            variant, version, fan_mode, distribution, moment; ``spike_aware``: sigma_u, target_rate, steps,
            input_second_moment, input_mean, recurrent_fraction; ``fluctuation``: mu_u, sigma_u, target_rate,
            input_rate, steps, input_second_moment, input_mean, recurrent_fraction.
            ``"auto"`` and ``calibrated``: the calibration's (target_rate, tolerance, max_evaluations, bias,
            mode, seed), ``start`` (a method name or an options record, default ``"spike_aware"``) and
            ``start_options`` (a dict); other options go to the start method. A name both take (``mode``) is
            the calibration's: give the start's in ``start_options``. With ``start="fluctuation"``, ``steps=T``
            is also the start's kernel horizon unless it has its own.

    All new weights are computed and sampled before any is written, so an error leaves the model unchanged;
    with ``membrane``, a failure of the scaling puts back the init's writes too. The report records the
    settings (``report.settings``) and each layer's seed (``LayerReport.seed``): ``report.save(path)`` then
    :func:`reinitialize` reproduces the weights exactly.

    Returns:
        Report: the recipe (``report.recipe``, its first line), one row per initialized weight (method, neuron,
        surrogate, fans, gain, std, mean and the numbers the law assumed); printing it gives a table.

    Example:
        IKUN with κ from snnTorch's default arctangent surrogate: std = :math:`\sqrt{\kappa/\mathrm{fan\_in}}`.

        >>> import torch, torch.nn as nn, snntorch as snn
        >>> import snn_initplug as sip
        >>> net = nn.Sequential(nn.Linear(784, 256), snn.Leaky(beta=0.9, init_hidden=True),
        ...                     nn.Linear(256, 10), snn.Leaky(beta=0.9, init_hidden=True, output=True))
        >>> x = torch.rand(64, 784)
        >>> report = sip.initialize(net, x, "ikun", generator=torch.Generator().manual_seed(0))
        >>> [(row.layer, round(row.std, 4)) for row in report.layers]
        [('0.weight', 0.0563), ('2.weight', 0.0986)]
        >>> report = sip.initialize(net, x, steps=4)  # the one call
        >>> report.recipe
        '2-layer plain chain: calibrated'
    """
    example_input, method = _method_and_input(example_input, method)
    named = {"steps": steps, "relay": relay, "membrane": membrane, "weightless": weightless}
    for key, value in named.items():
        if value is not None:
            if key in options:  # cannot happen through Python's keywords; a dict splatted twice can
                raise OptionError(f"initialize: {key}= given twice")
            options[key] = value
    return _initialize(model, method, example_input, generator, overrides, skip, forward, process_group, options)


def _method_and_input(first: Any, second: Any) -> tuple[Any, Any]:
    """``(example_input, method)`` from the two positions after the model: ``(batch, method)``, or the older
    ``(method, batch)`` order, told apart by the method being a name or an options record."""
    if isinstance(first, str) or _is_options_record(first):
        return (None if isinstance(second, str) and second == "auto" else second), first
    if not (isinstance(second, str) or _is_options_record(second)):
        raise OptionError(f"initialize: expected a method name or an options record, got {type(second).__name__} "
                          "(the call is initialize(model, example_input, method))")
    return first, second


def _is_options_record(value: Any) -> bool:
    return isinstance(value, (IkunOptions, SpikeAwareOptions, FluctuationOptions, BaselineOptions))


def _method_call(method: Union[str, MethodOptions], options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``(name, options)`` with an options record unpacked into its non-default fields."""
    if isinstance(method, str):
        return method, dict(options)
    name = method_name(method)
    if options:
        raise OptionError(f"initialize: give {name}'s options in its record or as keywords, not both")
    return name, non_default_fields(method)


def _initialize(model, method, example_input, generator, overrides, skip, forward, group, options,
                replay: Optional[Report] = None) -> Report:
    """``initialize``, optionally replaying the seeds (and checking the laws) of a recorded report."""
    if not isinstance(model, nn.Module):
        raise ArgumentTypeError(f"initialize: model must be a torch.nn.Module, got {type(model).__name__}")
    with exclusive(model, "initialize"):
        rng = torch.get_rng_state() if generator is None else None  # the seeds are drawn from the process RNG
        try:
            return _initialize_exclusive(model, method, example_input, generator, overrides, skip, forward, group,
                                         options, replay)
        except BaseException:
            if rng is not None:
                torch.set_rng_state(rng)  # an error leaves the process RNG as it was, as it leaves the model
            raise


def _initialize_exclusive(model, method, example_input, generator, overrides, skip, forward, group, options,
                          replay: Optional[Report]) -> Report:
    method, options = _method_call(method, options)
    membrane = options.pop("membrane", None)
    if membrane is not None:
        membrane = _checked_membrane(membrane)
    recipe: Optional[Recipe] = None
    if method == "auto":
        recipe = _recipe(model, example_input, forward, options, membrane)
        membrane = recipe.membrane
        options = {**options, **recipe.options()}
    chosen = "calibrated" if recipe is not None else method
    dropped = ""
    steps = options.get("steps")
    if membrane is not None and chosen not in ("calibrated", "spike_aware", "fluctuation"):
        options = {key: value for key, value in options.items() if key != "steps"}  # the membrane check's only
    if membrane is None or membrane == 1.0:
        report = _initialize_method(model, chosen, example_input, generator, overrides, skip, forward, group, options,
                                    replay)
    else:  # the init, then the membrane: one write, all or nothing (the thresholds too)
        levers = [threshold_lever(module) for _, module in neuron_modules(model)]
        state = ModelState(model, [lever for lever in levers if lever is not None])
        refused: Optional[InitError] = None
        try:
            report = _initialize_method(model, chosen, example_input, generator, overrides, skip, forward, group,
                                        options, replay)
            try:
                scale_membrane(model, membrane, example_input, steps=steps, forward=forward, skip=skip,
                               process_group=group)
            except InitError as exc:
                if recipe is None or "membrane" not in recipe.chosen:
                    raise  # membrane= given by the caller: the whole call fails
                refused = exc
            report.membrane = membrane
        except BaseException:
            state.restore()
            raise
        if refused is not None and recipe is not None:
            # the recipe's membrane scaling does not apply to this model (its output reads a membrane, say):
            # the recipe without it, from the model as it was, said so
            state.restore()
            report = _initialize_method(model, chosen, example_input, generator, overrides, skip, forward, group,
                                        options, replay)
            report.notes.append(f"membrane ×{recipe.membrane:g} of the recipe not applied, the model is initialized "
                                f"without it: {refused}")
            dropped = f"; membrane ×{recipe.membrane:g} not applied (see the notes)"
            membrane = 1.0
            recipe = dataclasses.replace(recipe, membrane=1.0)
    if recipe is not None:  # replay re-plans and keeps every choice as recorded
        report.recipe = recipe.summary + dropped
        report.settings = checkpoint.settings("auto", {**options, "membrane": membrane}, overrides, skip,
                                              example_input, forward, world_size(group))
    elif membrane is not None:
        report.settings["options"]["membrane"] = membrane
    return report


def _checked_membrane(membrane: Any) -> float:
    if isinstance(membrane, bool) or not isinstance(membrane, (int, float)) or not (math.isfinite(membrane)
                                                                                    and membrane > 0):
        raise OptionError(f"initialize: membrane must be a positive finite number, got {membrane!r}")
    return float(membrane)


def _recipe(model, example_input, forward, options: dict[str, Any], membrane: Optional[float]) -> Recipe:
    """The one call's recipe for this model (:func:`snn_initplug.recipes.choose`), read from its plan."""
    if example_input is None:
        raise InitError("initialize: the one call (method 'auto', the default) needs example_input= (a real "
                        "batch: it calibrates on it); without data, name a closed-form method such as 'ikun' or "
                        "'fluctuation'")
    first = example_input[0] if isinstance(example_input, list) and forward is None else example_input
    return choose(plan(model, first, forward=forward), relay=options.pop("relay", None), membrane=membrane,
                  weightless=options.pop("weightless", None))


def _initialize_method(model, method, example_input, generator, overrides, skip, forward, group, options,
                       replay: Optional[Report]) -> Report:
    """One method's init (no membrane scaling), its settings recorded."""
    if method == "calibrated":
        call = _CalibratedCall.of(options)
        report = _initialize_calibrated(model, call, example_input, generator, overrides, skip, forward, group, replay)
        options = call.recorded()
    else:
        report, _ = _initialize_analytic(model, method, example_input, generator, overrides, skip, forward, group,
                                         options, replay)
    report.settings = checkpoint.settings(method, options, overrides, skip, example_input, forward, world_size(group))
    return report


def _initialize_analytic(model, method, example_input, generator, overrides, skip, forward, group, options,
                         replay: Optional[Report], label: Callable[[str], str] = str,
                         saved: Optional[Snapshot] = None) -> tuple[Report, Plan]:
    """Plan, agree, compute every law and draw every weight, agree, then write (:mod:`snn_initplug.transaction`).
    Returns the report and the plan (``calibrated`` reuses it: the model's structure has not changed).

    Under ``torch.distributed`` the ranks agree twice: after planning (a fingerprint of the planned layers'
    names, shapes and dtypes, the method and its options: a rank that differs, or failed, makes every rank
    raise before the statistics are all-reduced) and after drawing (a rank that failed later, e.g. on an
    override only it has, makes every rank raise before anyone writes). Outside it, errors raise as they are."""
    error: Optional[Exception] = None
    try:
        method_options(method, options)
        if generator is not None and (not isinstance(generator, torch.Generator) or generator.device.type != "cpu"):
            raise InitError("initialize: generator must be a CPU torch.Generator")
        if isinstance(example_input, torch.Tensor) and example_input.dim() and example_input.shape[0] == 0:
            raise InitError("initialize: example_input has no elements (an empty batch has no statistics)")
        p = plan(model, example_input, forward=forward)
        print_ = fingerprint(method, options, overrides, skip,
                             [(layer.name, tuple(layer.weight.shape), str(layer.weight.dtype)) for layer in p.layers])
    except Exception as exc:
        error, print_ = exc, 0
    agree("initialize", print_, error, group)
    _use_global_input_stats(p, group)
    try:
        results, skipped = compute_laws(p, method, options, overrides, skip, label)
        if not results and not skipped:  # nothing to do is a mistake to report, not a success
            why = list(p.notes) + ([f"neurons with no weight layer before them: {', '.join(p.unfed)}"] if p.unfed
                                   else [])
            raise PlanError(f"initialize: no weight layer feeds a neuron ({'; '.join(why) or 'nothing was traced'})")
        for layer, _, _ in results:
            if layer.weight.numel() == 0:
                raise InitError(f"initialize: {layer.name} has zero elements")
            check_writable(f"initialize: {layer.name}", layer.weight)
        zeroed = _copy_biases(results)
        # Each layer draws from its own stream, seeded in plan order from ``generator`` (or the global RNG): the
        # draws can run in parallel, and skipping or overriding one layer does not change the others' weights.
        # The seeds go into the report: replaying them needs no generator state.
        if replay is not None:
            seeds = checkpoint.replayed_seeds([(law, row) for _, law, row in results], replay)
        else:
            seeds = torch.randint(0, 2**62, (len(results),), generator=generator).tolist()
        new = _draw([(layer.weight, law) for layer, law, _ in results], seeds)
    except Exception as exc:
        error = exc
    agree("initialize", 0, error, group)
    # rank 0's draws win everywhere (robust to ranks whose generators differ): broadcast before writing
    broadcast_parameters(new, src=0, group=group)
    write_all([(layer.weight, value) for (layer, _, _), value in zip(results, new)]
              + [(bias, torch.zeros_like(bias)) for bias in zeroed], saved)
    for (_, _, row), seed in zip(results, seeds):
        row.seed = int(seed)
    notes = list(p.notes)
    notes += p.unfed_notes()
    if is_distributed(group):
        notes.append(f"torch.distributed: input statistics of the global batch of {world_size(group)} ranks; "
                     "weights broadcast from rank 0 (the seeds recorded are this rank's)")
    return Report(method, [r for _, _, r in results], skipped, p.source, notes), p


def _copy_biases(results) -> list[torch.Tensor]:
    """The biases beside the copy relay's weights (``relay=1``), checked writable: a constant input would move
    the membrane off the copy's window, so they are set to 0 with the weights."""
    biases = []
    for layer, law, _ in results:
        bias = drive(layer, {})[1] if law.is_copy else None
        if bias is not None:
            check_writable(f"initialize: {bias[0]}", bias[1])
            biases.append(bias[1])
    return biases


def _draw(weights: list[tuple[torch.Tensor, Law]], seeds: list[int]) -> list[torch.Tensor]:
    """Sample every weight from its own seeded stream (in parallel); nothing is written."""
    def draw(item):
        (weight, law), seed = item
        return sample(law, weight.shape, dtype=weight.dtype, device=weight.device,
                      generator=torch.Generator().manual_seed(seed))

    with ThreadPoolExecutor(max_workers=min(len(weights), os.cpu_count() or 1) or 1) as pool:
        return list(pool.map(draw, zip(weights, seeds)))


def _use_global_input_stats(p: Plan, group) -> None:
    """Under ``torch.distributed``, replace each layer's measured input statistics by the global batch's.

    From each rank's mean m, second moment q, non-zero fraction f and element count n, the sums n·m, n·q, n·f
    and n are all-reduced (float64) and divided again: E[x] = Σ n·m / Σ n, E[x²] = Σ n·q / Σ n, i.e. the
    statistics of the concatenated batch up to float64 rounding (~1e-16 relative). The input is binary only
    if it is binary on every rank. Every rank then computes the same laws (and prints the same plan).
    """
    if not is_distributed(group):
        return
    fields = 5
    rows: list[float] = []
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


# ----------------------------------------------------------------------------------------------------------
# calibrated: an analytic start, then the calibration
# ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _CalibratedCall:
    """The options of ``method="calibrated"``, split: the start method and its options, the calibration's."""

    start: str
    start_options: dict[str, Any]
    calibration: dict[str, Any]  # the calibration options given (validated as a CalibrationOptions)

    @classmethod
    def of(cls, options: dict[str, Any]) -> _CalibratedCall:
        options = dict(options)
        start = options.pop("start", "spike_aware")
        start_options = options.pop("start_options", None)
        if start_options is not None and not isinstance(start_options, dict):
            raise OptionError(f"calibrated: start_options must be a dict, got {type(start_options).__name__}")
        start_options = dict(start_options or {})
        if not isinstance(start, str):
            if start_options:
                raise OptionError("calibrated: give the start's options in its record or in start_options, not both")
            start, start_options = _method_call(start, {})
        if start not in ANALYTIC_METHODS:
            raise OptionError(f"initialize: start must be one of {list(ANALYTIC_METHODS)}, got {start!r}")
        calibration = {key: options.pop(key) for key in CALIBRATION_FIELDS if key in options}
        for key in options:  # what is left is the start's, as keywords
            if key in start_options:
                raise OptionError(f"calibrated: {key}= given both as a keyword and in start_options")
        start_options.update(options)
        if start == "fluctuation" and "steps" in calibration and not {"horizon", "steps"} & set(start_options):
            start_options["steps"] = calibration["steps"]  # T steps run: the kernel sums over T steps
        cls._check_calibration(calibration, start)
        method_options(start, start_options, " (the start of calibrated)")
        return cls(start, start_options, calibration)

    @staticmethod
    def _check_calibration(calibration: dict[str, Any], start: str) -> None:
        try:
            CalibrationOptions(**calibration)
        except OptionError as exc:
            shared = [key for key in calibration if key in method_options(start).__dataclass_fields__]
            if not shared:
                raise
            hint = ", ".join(f"{key!r}: {calibration[key]!r}" for key in shared)
            raise OptionError(f"{exc}. {', '.join(shared)}= is the calibration's option here; the start method's "
                              f"goes in start_options={{{hint}}}") from exc

    def recorded(self) -> dict[str, Any]:
        """The options as the report records them (what replay passes back)."""
        return {"start": self.start, "start_options": dict(self.start_options), **self.calibration}


def _initialize_calibrated(model, call: _CalibratedCall, example_input, generator, overrides, skip, forward, group,
                           replay: Optional[Report] = None) -> Report:
    """``method="calibrated"``: an analytic start (``start=``, default spike-aware, with its options), then
    :func:`snn_initplug.calibration.calibrate` on the example batch. Either both happen or neither."""
    if example_input is None:
        raise InitError("initialize: method='calibrated' (the default) needs example_input= (a real batch); "
                        "without data, choose a closed-form method such as 'ikun' or 'fluctuation'")
    saved = Snapshot(list(model.parameters()))
    try:
        # a list holds one input per time step (a model called once per step): the start plans on the first
        start_input = example_input[0] if isinstance(example_input, list) else example_input
        report, start_plan = _initialize_analytic(model, call.start, start_input, generator, overrides, skip,
                                                  forward, group, call.start_options, replay, label=calibrated_label,
                                                  saved=saved)  # the rollback of every parameter, taken above
        # the start planned on the input calibrate would plan on (its first step), so its plan is reused: only
        # the pairing is needed, and the weights it wrote do not change it
        same_input = forward is None or not isinstance(example_input, list)
        report.calibration = calibrate(model, example_input, forward=forward, skip=skip, process_group=group,
                                       plan_=start_plan if same_input else None, **call.calibration)
        if replay is not None:
            checkpoint.check_replayed_scales(report.calibration, replay.calibration)
    except BaseException:
        saved.restore()
        raise
    report.method = calibrated_label(call.start)
    return report


# ----------------------------------------------------------------------------------------------------------
# Replay
# ----------------------------------------------------------------------------------------------------------
def reinitialize(
    model: nn.Module,
    report: Union[Report, str, os.PathLike[str]],
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

    Returns:
        Report: the report of the replayed call.

    Example:
        >>> import os, tempfile, torch, torch.nn as nn, snntorch as snn
        >>> import snn_initplug as sip
        >>> def build():
        ...     return nn.Sequential(nn.Linear(784, 256), snn.Leaky(beta=0.9, init_hidden=True))
        >>> x = torch.rand(64, 784)
        >>> net = build()
        >>> path = os.path.join(tempfile.mkdtemp(), "init.json")
        >>> sip.initialize(net, "spike_aware", x).save(path)
        >>> copy = build()
        >>> _ = sip.reinitialize(copy, path, x)
        >>> torch.equal(copy[0].weight, net[0].weight)
        True
    """
    if isinstance(report, (str, os.PathLike)):
        report = Report.load(report)
    method, options, overrides, skip = checkpoint.recorded_call(report, example_input, forward)
    return _initialize(model, method, example_input, None, overrides or None, skip or None, forward,
                       process_group, options, replay=report)
