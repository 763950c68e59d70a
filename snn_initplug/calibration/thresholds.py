"""Neurons that no weight feeds (Spikformer's attention LIF, fed by q·kᵀ·v of spikes): reported with their
rate, or, with ``weightless="threshold"``, brought to their target by scaling their threshold."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import torch
import torch.nn as nn

from ..adapters import threshold_lever
from ..options import TargetRate
from ..planning import Plan, preserved
from ..reports import LayerCalibration
from ..running import Group, recorded_passes
from ..transaction import SameDraws
from .model import calibrate_model
from .search import SearchResult, SearchSettings, measured_rate, spike_rate, target_for

Lever = Callable[[float], Callable[[], None]]  # multiplies a neuron's threshold by a factor; returns the undo


def weightless_records(model: nn.Module, p: Plan, target_rate: TargetRate, run: Callable[[], Any],
                        process_group) -> list[LayerCalibration]:
    """One record per weight-less neuron (fed by other neurons' spikes combined without a weight, as
    Spikformer's attention LIF is by q·kᵀ·v): its rate with the calibrated weights, from one forward pass,
    and the status ``not calibrated`` with the reason."""
    names = list(p.weightless)
    rates = _rates_of(model, p, names, run, None, process_group)  # unseeded: the pass as the model runs it
    records = []
    for name in names:
        rate = rates[name]
        sources = ", ".join(p.weightless[name])
        records.append(LayerCalibration(
            name, [], target_for(name, target_rate), rate, rate, 1.0, 0,
            f"not calibrated: no weight feeds it (its input is the spikes of {sources} combined without a weight); "
            "its rate follows theirs"))
    return records


_THRESHOLD_ROUNDS = 3


def with_thresholds(model, p: Plan, groups: list[Group], run: Callable[[], Any], first: list[LayerCalibration],
                    settings: SearchSettings) -> tuple[list[LayerCalibration], list[tuple[Lever, float]]]:
    """``weightless="threshold"``: the weight-less neurons' thresholds, then the weights again, in rounds.

    A new threshold changes what the neurons after it receive, so the weights found before it no longer give
    their rates: each round searches the thresholds (with the weights in place), measures every neuron in one
    pass, and, where a rate left the tolerance, searches the weights again from where they are (then the
    thresholds), at most ``_THRESHOLD_ROUNDS`` times. The records carry the total factors and the rates of that
    last pass. Returns them and the ``(lever, factor)`` per threshold; the thresholds are back as they were."""
    records = {r.neuron: r for r in first}
    factors: dict[str, tuple[Lever, float]] = {}
    undo: list[Callable[[], None]] = []
    tolerance = settings.tolerance
    try:
        for round_ in range(_THRESHOLD_ROUNDS):
            found, writes = _calibrate_thresholds(model, p, run, settings)
            for record, (lever, factor) in zip([r for r in found if r.parameters], writes):
                undo.append(lever(factor))  # in place for the next rounds
                total = factors[record.neuron][1] * factor if record.neuron in factors else factor
                factors[record.neuron] = (lever, total)
            _merge(records, found)
            rates = _rates_of(model, p, [r.neuron for r in records.values()], run, settings.seed, settings.process_group)
            drifted = [name for name, r in records.items() if r.status == "ok"
                       and abs(rates[name] / r.target - 1.0) > tolerance]
            for name, rate in rates.items():
                records[name] = dataclasses.replace(records[name], rate=rate)
            if not drifted or round_ == _THRESHOLD_ROUNDS - 1:
                for name in drifted:
                    records[name] = dataclasses.replace(records[name], status=(
                        f"moved to {rates[name]:.4g} by the thresholds set before it ({_THRESHOLD_ROUNDS} rounds)"))
                break
            again, _ = calibrate_model(model, groups, run, settings)  # from the weights in place
            _merge(records, again)
    finally:
        for step in reversed(undo):
            step()
    return list(records.values()), list(factors.values())


def _merge(records: dict[str, LayerCalibration], found: list[LayerCalibration]) -> None:
    """A later search's records into the first's: factors multiply, evaluations add, the first rate stays."""
    for r in found:
        old = records.get(r.neuron)
        records[r.neuron] = r if old is None else dataclasses.replace(
            r, initial_rate=old.initial_rate, scale=old.scale * r.scale, evaluations=old.evaluations + r.evaluations)


def _rates_of(model, p: Plan, names: list[str], run: Callable[[], Any], seed: Optional[int], process_group
              ) -> dict[str, float]:
    """The rate of each named neuron over one whole-model pass from rest (with the draws of ``seed``, as the
    searches see them; None: the pass as it comes)."""
    with recorded_passes(model, p, run, names) as (once, recorded):
        def evaluate() -> list[torch.Tensor]:
            if seed is None:
                with preserved(model):  # the RNG put back too
                    once()
            else:
                SameDraws(seed).run(once)
            return []

        measured_rate(evaluate, process_group)  # the pass, with every rank agreeing it ran
    return {name: spike_rate(recorded[name], process_group) for name in names}


def _search_threshold(model, p: Plan, name: str, lever: Lever, target: float, run: Callable[[], Any],
                      settings: SearchSettings) -> SearchResult:
    """:func:`search` for one weight-less neuron, each evaluation a whole-model pass with θ divided by s."""
    draws = SameDraws(settings.seed)
    with recorded_passes(model, p, run, [name]) as (once, recorded):
        def rate_at(s: float) -> float:
            def evaluate() -> list[torch.Tensor]:
                restore = lever(1.0 / s)
                try:
                    draws.run(once)
                finally:
                    restore()
                return list(recorded[name])

            return settings.rate(evaluate)

        return settings.scale(rate_at, target,
                              f"its input stays silent: the neurons feeding it ({', '.join(p.weightless[name])}) do "
                              "not fire", lever="the threshold divided by")


def _calibrate_thresholds(model, p: Plan, run: Callable[[], Any], settings: SearchSettings
                          ) -> tuple[list[LayerCalibration], list[tuple[Lever, float]]]:
    r"""Bring each weight-less neuron to its target through its threshold: :math:`\theta \leftarrow \theta / s`,
    :math:`s` searched like a weight scale (the rate grows with it) on whole-model passes, in forward order, so a
    later neuron sees the earlier ones' new thresholds. Returns the records and the ``(lever, 1/s)`` to apply;
    every threshold is back as it was on return."""
    modules = {name: module for name, module, _ in p.neurons}
    records: list[LayerCalibration] = []
    writes: list[tuple[Lever, float]] = []
    undo: list[Callable[[], None]] = []
    try:
        for name in p.weightless:
            module, target = modules[name], settings.target(name)
            lever = threshold_lever(module)
            if lever is None:
                records.append(LayerCalibration(
                    name, [], target, float("nan"), float("nan"), 1.0, 0,
                    f"not calibrated: no weight feeds it and its adapter cannot scale its threshold "
                    f"({type(module).__name__}; register_neuron(scale_threshold=...))"))
                continue
            found = _search_threshold(model, p, name, lever, target, run, settings)
            undo.append(lever(1.0 / found.scale))  # the neurons after it see its new threshold
            writes.append((lever, 1.0 / found.scale))
            records.append(found.record(name, [f"{name}.threshold"], target, factor=1.0 / found.scale))
    finally:
        for step in reversed(undo):
            step()
    return records, writes
