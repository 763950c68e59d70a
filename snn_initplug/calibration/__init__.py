r"""Data-calibrated initialization: hold the firing rate at every depth, any T, any neuron.

Starting from the current (typically analytic) weights, each neuron layer is visited in forward order; on the
real batch and the real neuron dynamics over all time steps, one scale factor :math:`s` of the weight that
feeds it is searched until the measured firing rate (over batch, neurons and time) equals the target:

.. math::

    r(s) = \frac{1}{N T}\sum_{n,t} S_{n,t}\big(W \leftarrow sW\big) = r^\star .

Where BatchNorm sits between the layer and the neuron, the BatchNorm weight :math:`\gamma` is scaled instead
(the weight's scale is normalised away in training mode). :math:`r(s)` grows with :math:`s` for zero-mean
weights, so the search brackets the target by doubling or halving :math:`s` and then refines it by regula
falsi on :math:`\log s` (Illinois variant), stopping at ``|r/r* - 1| <= tolerance``.

Two execution modes:

* **chain** (a model built of ``nn.Sequential`` containers): each layer's input is cached, so a search step
  re-runs only that layer's neuron (for a bare Linear/Conv the pre-activation is affine in :math:`s` and is
  not even recomputed); the cost is a few passes of one layer per layer.
* **model** (anything else: custom time loops, residual networks): each search step runs the whole model;
  correct for any architecture, slower.

Under ``torch.distributed`` (``process_group=``) each rate is measured on the global batch: the spike and
element counts are all-reduced (SUM) over the ranks, so all ranks take the same search steps, and the weights
are broadcast from rank 0 before and after (see ``docs/distributed.md``).

Neuron states, BatchNorm statistics and the RNG are restored afterwards; only the weights change, and only
once every layer has been calibrated (an error leaves the model as it was).

The package, by concern: :mod:`.search` (the scale search and its record), :mod:`.chain` (chain mode),
:mod:`.model` with :mod:`.paused`, :mod:`.recorded`, :mod:`.whole` and :mod:`.affine` (model mode),
:mod:`.thresholds` (neurons no weight feeds), :mod:`.commit` (checks, then all or nothing).
"""
from __future__ import annotations

import warnings
from typing import Any, Callable, Optional

import torch
import torch.nn as nn

from ..distributed import is_distributed, world_size
from ..errors import ArgumentTypeError, InitError
from ..guard import entry_point
from ..options import DEFAULT_TARGET_RATE, CalibrationOptions, TargetRate
from ..planning import Plan
from ..reports import CalibrationReport, LayerCalibration
from ..running import checked_calls, input_calls, plan_for_input, runner
from ..transaction import agree, exclusive, seeded_evaluations
from .chain import chain_ready
from .commit import calibrate_atomically, checked_groups, counting_first_run, one_step_warning
from .thresholds import weightless_records

__all__ = ["calibrate", "calibrate_planned", "CalibrationReport", "LayerCalibration", "DEFAULT_TARGET_RATE"]


@entry_point("calibrate")
def calibrate(
    model: nn.Module,
    example_input: Any,
    target_rate: TargetRate = DEFAULT_TARGET_RATE,
    *,
    tolerance: float = 0.05,
    max_evaluations: int = 30,
    steps: Optional[int] = None,
    forward: Optional[Callable[[nn.Module, Any], Any]] = None,
    bias: str = "keep",
    mode: str = "auto",
    seed: int = 0,
    weightless: str = "report",
    skip=None,
    process_group: Any = None,
) -> CalibrationReport:
    """Scale the weight (or BatchNorm weight) that feeds each neuron until its firing rate equals the target.

    Args:
        model: the network, already initialized (e.g. by ``initialize(model, "spike_aware", ...)``).
        example_input: a real batch as the model takes it. For a model called once per time step (snnTorch
            ``nn.Sequential`` with ``init_hidden=True``), give ``steps=T``: the batch is presented at every step,
            or pass a list of T per-step tensors.
        target_rate: spikes per neuron per step: a number, ``{pattern: rate}`` on neuron names, or a callable.
        tolerance: relative tolerance on the rate (default ±5%).
        max_evaluations: evaluations of the rate per layer.
        forward: ``callable(model, example_input)`` for models that need more than ``model(example_input)``.
        bias: ``"keep"`` or ``"zero"`` (set the feeding layer's, or BatchNorm's, bias to 0 first, removing offsets
            that can make a low target unreachable).
        mode: ``"auto"`` (chain when the model is a plain ``nn.Sequential`` stack), ``"chain"`` or ``"model"``.
        seed: RNG seed used for every evaluation (dropout and stochastic encoders see the same draws each time).
        weightless: neurons that no weight feeds (Spikformer's attention LIF, fed by q·kᵀ·v of spikes):
            ``"report"`` (default) lists them as ``not calibrated`` with their rate; ``"threshold"`` brings each to
            its target by scaling its threshold θ (searched on whole-model passes with the calibrated weights, in
            forward order; the record's parameter is ``<neuron>.threshold`` and its scale the factor on θ). The
            threshold is then part of the model's state that calibrate changed; a neuron whose adapter cannot set
            it (``register_neuron(scale_threshold=...)``) stays ``not calibrated``.
        skip: layers to leave alone (patterns or predicates, as in ``initialize``).
        process_group: under an initialized ``torch.distributed`` group (None: the world group; False: no
            synchronisation), every rank calibrates on the global batch: the weights to scale are first
            broadcast from rank 0, each measured rate is (spikes summed over ranks) / (elements summed over
            ranks), so all ranks take the same search steps and find the same scales, and the final weights
            are broadcast from rank 0 again as a safety net. Each rank passes its own share of the batch.
            BatchNorm layers in training mode still normalise with per-rank batch statistics (use
            ``SyncBatchNorm``). A no-op outside ``torch.distributed``.

    The options are validated as a :class:`~snn_initplug.options.CalibrationOptions`.

    Returns:
        CalibrationReport: per neuron, the scaled weights, the target, the rate before and after, the scale and
        the ``status`` (``"ok"``, or why the target cannot be reached).

    Example:
        >>> import torch, torch.nn as nn, snntorch as snn
        >>> import snn_initplug as sip
        >>> net = nn.Sequential(nn.Linear(784, 256), snn.Leaky(beta=0.9, init_hidden=True),
        ...                     nn.Linear(256, 256), snn.Leaky(beta=0.9, init_hidden=True))
        >>> x = torch.rand(64, 784)
        >>> _ = sip.initialize(net, "spike_aware", x)
        >>> report = sip.calibrate(net, x, target_rate=0.1, steps=4)  # the batch presented at 4 steps
        >>> [(layer.status, round(layer.rate, 2)) for layer in report.layers]
        [('ok', 0.1), ('ok', 0.1)]
    """
    return calibrate_planned(model, example_input, target_rate, tolerance=tolerance, max_evaluations=max_evaluations,
                             steps=steps, forward=forward, bias=bias, mode=mode, seed=seed, weightless=weightless,
                             skip=skip, process_group=process_group)


def calibrate_planned(model: nn.Module, example_input: Any, target_rate: TargetRate = DEFAULT_TARGET_RATE, *,
                      tolerance: float = 0.05, max_evaluations: int = 30, steps: Optional[int] = None,
                      forward: Optional[Callable[[nn.Module, Any], Any]] = None, bias: str = "keep",
                      mode: str = "auto", seed: int = 0, weightless: str = "report", skip=None,
                      process_group: Any = None, plan_for_model: Optional[Plan] = None) -> CalibrationReport:
    """:func:`calibrate`, reusing ``plan_for_model`` (a plan of ``model`` on this input) when given: the path
    of ``initialize(method="calibrated")``, whose start has just planned the same model."""
    if not isinstance(model, nn.Module):
        raise ArgumentTypeError(f"calibrate: model must be a torch.nn.Module, got {type(model).__name__}")
    try:  # a rank failing here still joins the first agreement, so the others do not wait for it
        options = CalibrationOptions(target_rate, tolerance, max_evaluations, steps, bias, mode, seed, weightless)
        if example_input is None:
            raise InitError("calibrate: needs a real batch (example_input)")
        calls = checked_calls("calibrate", input_calls("calibrate", example_input, options.steps))
        p = plan_for_model if plan_for_model is not None else plan_for_input(model, example_input, calls, forward)
        groups = checked_groups(model, p, skip, options.target_rate)
        chain_ok = forward is None and all(isinstance(c, torch.Tensor) for c in calls)  # a unit takes one tensor
        units = chain_ready(model, groups) if options.mode in ("auto", "chain") and chain_ok else None
        if options.mode == "chain" and units is None:
            raise InitError("calibrate: mode='chain' needs a plain nn.Sequential stack with one layer per neuron")
        run = None if units is not None else runner(model, example_input, calls, options.steps, forward)
        steps_seen: dict[str, int] = {}
        if run is not None:
            run = counting_first_run(run, p.neurons, steps_seen)
    except Exception as exc:
        agree("calibrate", 0, exc, process_group)  # raises: this error alone, or DistributedError on every rank
        raise
    seeded_before = seeded_evaluations()
    with exclusive(model, "calibrate"):  # the search installs hooks and writes weights: one thread at a time
        whole_model = runner(model, example_input, calls, options.steps, forward)
        results, chain_mismatch = calibrate_atomically(model, p, groups, units, calls, run, options, process_group,
                                                        whole_model)
        if chain_mismatch:
            units = None  # recalibrated in model mode
        if p.weightless and options.weightless == "report":  # reported, not silently "ok": no weight was scaled
            results += weightless_records(model, p, options.target_rate, whole_model, process_group)
    notes = list(chain_mismatch)
    if set(p.unfed) - set(p.weightless):  # weight-less neurons have their own records above
        notes += p.unfed_notes()
    if seeded_evaluations() > seeded_before:
        notes.append(f"the model draws random numbers from the process RNG (dropout, a stochastic encoder): every "
                     f"evaluation ran from seed={options.seed} inside torch.random.fork_rng, which restored the "
                     "RNG afterwards; torch has one CPU generator per process, so another thread drawing from it "
                     "during the calibration saw that stream")
    one_step = one_step_warning(p, options.steps, example_input, units is not None, steps_seen)
    if one_step is not None:
        warnings.warn(one_step, UserWarning, stacklevel=3)
        notes.append(one_step)
    if is_distributed(process_group):
        notes.append(f"rates measured on the global batch of {world_size(process_group)} ranks; weights from rank 0")
    if not all(r.status == "ok" for r in results):
        notes.append("some layers did not reach their target; see status")
    return CalibrationReport(results, "chain" if units is not None else "model", options.tolerance, notes)
