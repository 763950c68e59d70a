"""The commit of a calibration: every target and weight checked before anything is touched, the searches run
with the model restorable, the ranks agreed, then the calibrated weights (and thresholds) kept all or nothing."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import torch
import torch.nn as nn

from ..adapters import is_time_major
from ..distributed import broadcast_parameters
from ..errors import DistributedError, InitError, PlanError
from ..options import CalibrationOptions, TargetRate
from ..planning import Plan, preserved, reset_neuron
from ..reports import LayerCalibration
from ..running import Group, neuron_groups
from ..transaction import Snapshot, agree, all_finite, check_writable, fingerprint
from .chain import calibrate_chain, chain_mismatch
from .model import calibrate_model
from .search import SearchSettings, target_for
from .thresholds import Lever, with_thresholds


def checked_groups(model: nn.Module, p: Plan, skip, target_rate: TargetRate) -> list[Group]:
    """The groups to scale, after checking every target and every weight before anything is touched."""
    groups = neuron_groups(model, p, skip)
    for group in groups:
        target_for(group.neuron_name, target_rate)
        for name, param in group.params:
            if not all_finite(param):  # a scale search on NaN weights would misreport the cause
                raise InitError(f"calibrate: {name} has non-finite values; initialize it first")
            check_writable(f"calibrate: {name}", param)
    if not groups:
        raise PlanError("calibrate: no weight layer feeds a neuron")
    return groups


def calibrate_atomically(model, p: Plan, groups: list[Group], units, calls, run, options: CalibrationOptions,
                         process_group, whole_model: Callable[[], Any]) -> tuple[list[LayerCalibration], list[str]]:
    """Search every group's scale (chain mode when ``units`` is given, else model mode with ``run``), then
    commit (:mod:`snn_initplug.transaction`): the model is put back as it was, the ranks agree, and the scaled
    weights (and zeroed biases) are written all or nothing. On any error the model is left unchanged.

    Chain mode's rates are checked by one real forward pass of the chain at the found scales; where they differ
    (the shortcut's assumption failed), the search is redone in model mode. Returns the records and, then, the
    note saying so (empty otherwise)."""
    targets = [param for g in groups for _, param in g.params + g.biases]
    scaled_params = [param for g in groups for _, param in g.params]
    originals = Snapshot(targets)
    # every rank must calibrate the same layers with the same options, or the summed rates would mix networks
    agree("calibrate", fingerprint([(n, tuple(t.shape), str(t.dtype)) for g in groups for n, t in g.params + g.biases],
                                   dataclasses.astuple(options), units is None), None, process_group)
    error: Optional[Exception] = None
    # the search's passes run through SameDraws, which finds whether the model draws: watching every operation
    # of the whole search for draws instead (a dispatch mode) would slow it by a third
    with preserved(model, watch_draws=False):
        try:
            # every rank starts from rank 0's weights
            broadcast_parameters(scaled_params, src=0, group=process_group)
            results, fallback, thresholds = _search_all(model, p, groups, units, calls, run, options,
                                                        SearchSettings.of(options, process_group), originals,
                                                        whole_model)
        except Exception as exc:
            error = exc
            originals.restore()
    if isinstance(error, DistributedError):  # every rank raised it together in the search: agreed already
        raise error
    # The weights already hold the calibrated values (the search wrote them in place): the commit keeps them
    # rather than restoring and copying them again, and restores them if any rank failed.
    undo: list[Callable[[], None]] = []
    try:
        agree("calibrate", 0, error, process_group)
        # the scales agree on every rank already (same global rates); this guards against anything rank-local
        broadcast_parameters(targets, src=0, group=process_group)
        for scale_threshold, factor in thresholds:
            undo.append(scale_threshold(factor))
    except BaseException:
        for step in reversed(undo):
            step()
        originals.restore()
        raise
    return results, fallback


def _from_rest(p: Plan, groups: list[Group], bias: str) -> None:
    """Every neuron at rest (calibrate as a fresh batch is processed), and with ``bias="zero"`` the biases
    beside the scaled weights set to 0."""
    for _, neuron, _ in p.neurons:
        reset_neuron(neuron)
    if bias == "zero":
        with torch.no_grad():
            for group in groups:
                for _, b in group.biases:
                    b.zero_()


def _search_all(model, p: Plan, groups: list[Group], units, calls, run, options: CalibrationOptions,
                settings: SearchSettings, originals: Snapshot, whole_model: Callable[[], Any]
                ) -> tuple[list[LayerCalibration], list[str], list[tuple[Lever, float]]]:
    """The searches, leaving the calibrated weights in place: chain mode (checked by a real pass, redone in
    model mode where it was wrong) or model mode, then the weight-less neurons' thresholds. Returns the records,
    the note of a chain redone in model mode, and the ``(lever, factor)`` per threshold to write."""
    fallback: list[str] = []
    _from_rest(p, groups, options.bias)
    if units is not None:
        results, scales = calibrate_chain(units, groups, calls, settings)
        with torch.no_grad():  # the chain search never wrote the weights: scale them for the check
            for param, s in scales:
                param.mul_(s)
        fallback = chain_mismatch(p, groups, units, calls, results, options, settings.process_group)
        if fallback:
            originals.restore()
            _from_rest(p, groups, options.bias)
            results, _ = calibrate_model(model, groups, lambda: [model(x) for x in calls], settings)
    else:
        results, _ = calibrate_model(model, groups, run, settings)  # model mode leaves them scaled
    thresholds: list[tuple[Lever, float]] = []
    if p.weightless and options.weightless == "threshold":  # with the calibrated weights in place
        results, thresholds = with_thresholds(model, p, groups, whole_model, results, settings)
    return results, fallback, thresholds


def counting_first_run(run: Callable[[], Any], neurons, seen: dict[str, int]) -> Callable[[], Any]:
    """``run``, whose first call also counts how often each neuron is called in one forward pass (its steps)."""
    def counted() -> Any:
        if seen or not neurons:
            return run()
        handles = []
        for name, module, _ in neurons:
            seen[name] = 0
            handles.append(module.register_forward_hook(lambda m, a, o, key=name: seen.__setitem__(key, seen[key] + 1)))
        try:
            return run()
        finally:
            for handle in handles:
                handle.remove()
    return counted


def one_step_warning(p: Plan, steps: Optional[int], example_input: Any, chain: bool,
                      seen: dict[str, int]) -> Optional[str]:
    """A warning when every neuron ran a single time step: single-step neurons (snnTorch, SpikingJelly
    ``step_mode='s'``) called once per forward pass and no ``steps=``, so only step 1 from rest was calibrated
    and the model fires differently over its real T steps."""
    if steps is not None or isinstance(example_input, list) or any(is_time_major(m) for _, m, _ in p.neurons):
        return None
    if not chain and (not seen or max(seen.values()) > 1):
        return None
    return ("calibrate: every neuron ran one time step (single-step neurons called once by the forward pass, and "
            "no steps=), so the rates are those of step 1 from rest; pass steps=T (the batch is presented at every "
            "step), a list of T per-step inputs, or forward= running the model's time loop")
