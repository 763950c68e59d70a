"""Model mode: any architecture (custom time loops, residual networks); the search runs the model, and
re-runs a neuron alone wherever its input is known to be affine in its scale."""
from __future__ import annotations

from ..adapters import is_time_major
from .paused import calibrate_paused
from .recorded import calibrate_recorded
from .search import SearchSettings


def calibrate_model(model, groups, run, settings: SearchSettings):
    """Multi-step models: one paused pass; single-step loops: one recorded pass per neuron layer; a neuron
    whose input is not affine in its scale: whole-model (or up-to-the-neuron) evaluations."""
    if all(is_time_major(group.neuron) for group in groups):  # each neuron sees its whole [T, ...] input at once
        return calibrate_paused(model, groups, run, settings)
    return calibrate_recorded(model, groups, run, settings)
