"""``initialize(model, example_input, method="auto")``: plan the model, compute every new weight, then write them all.

With no method (``"auto"``), the recipe is chosen from the plan (:mod:`snn_initplug.recipes`) and written
with its membrane scaling in one all-or-nothing step (:mod:`snn_initplug.onecall`). Each method is a rule of
:mod:`snn_initplug.rules` that reads one planned layer's numbers and calls the method's law function; only
after every law is known and every tensor sampled are the weights written, under ``torch.no_grad()``.
Biases, BatchNorm parameters and layers that feed no neuron (a plain readout) are left as they are.

Under ``torch.distributed`` (``process_group=``) the input statistics are those of the global batch and the
written weights are broadcast from rank 0 (:mod:`snn_initplug.distributed`). Every :class:`Report` records the
settings and the per-layer seeds, so ``Report.save`` / ``Report.load`` / :func:`reinitialize` reproduce the
weights bit for bit (:mod:`snn_initplug.replay`).
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

import torch
import torch.nn as nn

from . import replay as checkpoint
from .calibration import calibrate_planned
from .copycheck import verify_copies
from .distributed import all_reduce_sums, broadcast_parameters, is_distributed, world_size
from .errors import ArgumentTypeError, InitError, OptionError, PlanError
from .guard import entry_point
from .init import sample
from .laws import Law
from .onecall import one_call
from .options import (
    ANALYTIC_METHODS,
    CALIBRATION_FIELDS,
    BaselineOptions,
    CalibrationOptions,
    FluctuationOptions,
    IkunOptions,
    MethodOptions,
    SpikeAwareOptions,
    SpikeInitOptions,
    check_steps,
    method_name,
    method_options,
    non_default_fields,
)
from .planning import InputStats, Plan, plan
from .reports import LayerReport, Report, calibrated_label
from .rules import compute_laws
from .running import drive
from .selection import Skip, skip_list
from .shaping import SurrogateSnapshot, surrogate_writes, write_weights_and_surrogates
from .transaction import Snapshot, agree, check_writable, exclusive, fingerprint

__all__ = ["initialize", "reinitialize", "Report", "LayerReport", "METHODS", "compute_laws"]

METHODS = ("auto",) + ANALYTIC_METHODS + ("calibrated",)


# ----------------------------------------------------------------------------------------------------------
# initialize
# ----------------------------------------------------------------------------------------------------------
@entry_point("initialize")
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
    measurements found best for it (:mod:`snn_initplug.recipes`): ``calibrated`` everywhere; for plain chains the
    relay by length (``relay=0.9`` from 2 to 20 layers, the copy relay ``relay=1`` beyond); the membrane ×0.5 but
    with the copy relay or a path it cannot scale; weight-less neurons through their threshold. The report's first
    line names the recipe and why. Naming a method (``initialize(model, batch, "ikun")``, or the older
    ``initialize(model, "ikun", batch)``) uses that method instead.

    Args:
        model: an snnTorch / SpikingJelly model (or one with neurons registered by ``register_neuron``).
        example_input: a batch as the model takes it (for a model called once per time step, with ``steps=T``,
            or a list of T per-step tensors). Needed by ``"auto"`` and ``"calibrated"``, by models with a
            custom forward and for the statistics of layers that read the model input.
        method: ``"auto"`` (the default: the recipe above), ``"calibrated"``, ``"ikun"``, ``"spike_aware"``,
            ``"fluctuation"``, ``"spikeinit"``, or a baseline (``"default"``, ``"kaiming_normal"``,
            ``"kaiming_uniform"``, ``"xavier_normal"``, ``"xavier_uniform"``, ``"lecun_normal"``,
            ``"spikingjelly"``, ``"ding"``); or an options record (``IkunOptions(fan_mode="fan_out")``, ...).
        steps: the number of time steps T: the batch is presented at T steps while calibrating (``"auto"``,
            ``"calibrated"``); the kernel horizon of ``spike_aware``, ``fluctuation`` and ``spikeinit``.
        relay: the relay share ρ of deep plain stacks (``"auto"`` chooses it by length; 0: none, 1: the copy
            relay); ``spike_aware``'s and ``calibrated``'s start's option.
        membrane: after the init, every neuron's membrane and threshold scaled by this factor
            (:func:`~snn_initplug.scale_membrane`, in the same all-or-nothing write); ``"auto"`` chooses 0.5
            but with the copy relay or a path it cannot scale (then 1: none; :mod:`snn_initplug.recipes`).
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
            input_rate, steps, input_second_moment, input_mean, recurrent_fraction; ``spikeinit``: target_rate,
            steps, surrogate (True: each neuron's surrogate at the shape α*), simulate, samples, seed.
            ``"auto"`` and ``calibrated``: the calibration's (target_rate, tolerance, max_evaluations, bias,
            mode, seed), ``start`` (a method name or an options record, default ``"spike_aware"``) and
            ``start_options`` (a dict); other options go to the start method. A name both take (``mode``) is
            the calibration's: give the start's in ``start_options``. With ``start="fluctuation"``, ``steps=T``
            is also the start's kernel horizon unless it has its own; with ``start="spikeinit"``, ``steps`` and
            a numeric ``target_rate`` are also the start's.

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
        '2-layer plain chain: calibrated, relay 0.9; membrane ×0.5 not applied (see the notes)'
    """
    example_input, method = _method_and_input(example_input, method)
    if isinstance(method, str) and method in ("auto", "calibrated"):  # the number of steps run, not a kernel horizon
        check_steps("initialize", steps)
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
    return isinstance(value, (IkunOptions, SpikeAwareOptions, FluctuationOptions, SpikeInitOptions, BaselineOptions))


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
            name, options = _method_call(method, options)
            return one_call(_initialize_method, model, name, example_input, generator, overrides, skip, forward,
                            group, options, replay)
        except BaseException:
            if rng is not None:
                torch.set_rng_state(rng)  # an error leaves the process RNG as it was, as it leaves the model
            raise


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
        surrogates = surrogate_writes(results)
    except Exception as exc:
        error = exc
    agree("initialize", 0, error, group)
    # rank 0's draws win everywhere (robust to ranks whose generators differ): broadcast before writing
    broadcast_parameters(new, src=0, group=group)
    copy_notes = _write_and_check_copies(model, results, new, zeroed, surrogates, saved, example_input, forward,
                                         group)
    for (_, _, row), seed in zip(results, seeds):
        row.seed = int(seed)
    notes = list(p.notes) + copy_notes
    notes += p.unfed_notes()
    if is_distributed(group):
        notes.append(f"torch.distributed: input statistics of the global batch of {world_size(group)} ranks; "
                     "weights broadcast from rank 0 (the seeds recorded are this rank's)")
    return Report(method, [r for _, _, r in results], skipped, p.source, notes), p


def _write_and_check_copies(model, results, new, zeroed, surrogates, saved: Optional[Snapshot], example_input,
                            forward, group) -> list[str]:
    """Write the drawn weights, the zeroed copy biases and the surrogates in one all-or-nothing write, then
    check the copy relay's claim on the example batch (:func:`verify_copies`): a failed check puts every weight
    and surrogate back. Returns the check's notes."""
    targets = [(layer.weight, value) for (layer, _, _), value in zip(results, new)] + \
        [(bias, torch.zeros_like(bias)) for bias in zeroed]
    copies = [(layer, row.assumed["relay_steps"] if isinstance(row.assumed.get("relay_steps"), int) else None)
              for layer, law, row in results if law.is_copy]
    if copies and saved is None:
        saved = Snapshot([target for target, _ in targets])
    old_surrogates = SurrogateSnapshot(model) if copies and surrogates else None
    write_weights_and_surrogates(targets, saved, surrogates, model)
    try:
        return verify_copies(model, copies, example_input, forward, group, saved) if saved is not None and copies \
            else []
    except BaseException:
        if old_surrogates is not None:
            old_surrogates.restore()
        raise


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
        if start == "spikeinit":  # the calibration's steps and (one) target rate are the start's too
            for key in ("steps", "target_rate"):
                if key in calibration and key not in start_options and not (
                        key == "target_rate" and (callable(calibration[key]) or isinstance(calibration[key], dict))):
                    start_options[key] = calibration[key]
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
    if isinstance(example_input, list) and not example_input:
        raise InitError("initialize: example_input is an empty list (no time step); give a batch, or one per step")
    saved, surrogates = Snapshot(list(model.parameters())), SurrogateSnapshot(model)
    try:
        # a list holds one input per time step (a model called once per step): the start plans on the first
        start_input = example_input[0] if isinstance(example_input, list) else example_input
        report, start_plan = _initialize_analytic(model, call.start, start_input, generator, overrides, skip,
                                                  forward, group, call.start_options, replay, label=calibrated_label,
                                                  saved=saved)  # the rollback of every parameter, taken above
        # the start planned on the input calibrate would plan on (its first step), so its plan is reused: only
        # the pairing is needed, and the weights it wrote do not change it
        same_input = forward is None or not isinstance(example_input, list)
        # a copy's weight does not depend on the data and its rate is its input's: left at scale 1, not searched
        copies = {row.layer for row in report.layers if row.assumed.get("relay") == 1.0}
        report.calibration = calibrate_planned(
            model, example_input, forward=forward, process_group=group,
            skip=[*skip_list(skip), lambda layer: layer.name in copies] if copies else skip,
            plan_for_model=start_plan if same_input else None, **call.calibration)
        if copies:
            report.calibration.notes.append(f"relay=1: {', '.join(sorted(copies))} copy their input and stay at "
                                            "scale 1 (not searched: their rate is their input's)")
        if replay is not None:
            checkpoint.check_replayed_scales(report.calibration, replay.calibration)
    except BaseException:
        saved.restore()
        surrogates.restore()
        raise
    report.method = calibrated_label(call.start)
    return report


# ----------------------------------------------------------------------------------------------------------
# Replay
# ----------------------------------------------------------------------------------------------------------
@entry_point("reinitialize")
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
