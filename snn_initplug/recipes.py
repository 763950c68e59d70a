"""The one call's recipe: what ``initialize(model, example_input)`` does when no method is named.

:func:`choose` reads the model's :class:`~snn_initplug.planning.Plan` and returns a :class:`Recipe`: always
``calibrated`` (the one method that brought every model type we measured to its target rate in every layer),
and for a *plain chain* — spiking layers one after the other, each fed by one weight layer reading the previous
layer's spikes, with no normalization, no residual sum, no recurrent weight and no weight-less neuron — the
relay by the chain's length L (number of neuron layers), as measured by ``benchmarks/deep_sweep.py``
(docs/depth.md):

* L < :data:`RELAY_FROM` (2, a single layer): no relay (no layer reads spikes).
* :data:`RELAY_FROM` ≤ L ≤ :data:`COPY_ABOVE` (20): ``relay=0.9`` then the membrane scaled by 0.5. Chosen on
  validation (1,000 images carved from the training set): at 20 layers calibrated without relay 0.19,
  ``relay=0.9`` with c = 1 / 0.7 / 0.5: 0.843 / 0.898 / **0.910**; on test, 3 seeds, 10 layers 0.931 and 20
  layers 0.913, against 0.100 for the default. Short chains gain as much (``benchmarks/one_call.py --val 1000
  --train 3000``, MNIST, 1 epoch, 3 seeds, calibrated vs ``relay=0.9`` + c = 0.5, at Adam lr 3e-4 and 1e-3):
  2 layers 0.771 → 0.816 and 0.843 → 0.884, 5 layers 0.652 → 0.846 and 0.832 → 0.893 (the default 0.690 /
  0.839 and 0.146 / 0.493), so the relay starts at 2 layers (it started at 10, lengths below never measured).
* L > :data:`COPY_ABOVE`: the copy relay ``relay=1``, membrane as it is. On MNIST validation ρ = 0.9 stops at
  0.751 at 50 layers (0.910 at 20); on Fashion-MNIST ρ = 0.9 collapses to chance at 50 and 100 layers where the
  copy relay reaches 0.805 and 0.800 (3 seeds), and c = 0.5 on the copy relay collapses too (0.100, validation).
  Between 20 and 50 layers nothing was measured: the switch sits right after the last length where ρ = 0.9 won.

A plain chain whose neurons take their input a step late (snnTorch's ``Alpha``: K[0] = 0) gets no relay: no
one-step jump can hand a spike on (:func:`snn_initplug.rules.immediate_input`); it is calibrated and scaled as
below.

Every other model (normalization, residual sums, recurrent weights, branches) gets no relay and the membrane ×0.5
after the calibration (BatchNorm networks are calibrated through γ). On validation (``benchmarks/one_call.py --val
1000``, 1 epoch, Adam) the scaling beat the plain calibration on average in every setting measured: IKUN's CSNN
(Conv-BN-IF, Fashion-MNIST, 2,000 images, 6 seeds, paired) calibrated 0.493 → 0.562 at lr 3e-4 (+0.069, every seed
up; the default 0.528) and 0.553 → 0.571 at 1e-3 (the default 0.573); the ``RLeaky`` network (MNIST, 3,000 images, 3
seeds) 0.674 → 0.830 at 3e-4 (the default 0.835), 0.734 → 0.774 at 6e-4 and 0.739 → 0.760 at 1e-3, where the default
trains better (0.887, 0.889): its calibrated spike-count output layer is what holds it back (left at its start,
``skip=`` its weight: 0.866 at 1e-3), which the recipe cannot see yet. Checked after the choice: SEW ResNet-18 (BN
and residual, 3 seeds, lr 1e-3) 0.461 → 0.628, the default 0.100. Models where some neuron's input has a path
without a weight keep their membrane: a residual sum adding spikes into a neuron (Spiking ResNet without BN: the
identity path is not scaled, so the spikes would change and ``scale_membrane`` refuses), a neuron no weight feeds
(Spikformer's attention LIF, an encoder reading the data). Weight-less neurons are brought to the target through
their threshold (``weightless="threshold"``). Every choice is overridden by naming it: ``relay=``, ``membrane=``,
``weightless=`` (or a method).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from .errors import OptionError
from .planning import LayerPlan, Plan
from .rules import immediate_input

__all__ = ["Recipe", "choose", "plain_chain_length", "RELAY_FROM", "COPY_ABOVE", "RELAY", "COPY_RELAY", "MEMBRANE"]

RELAY_FROM = 2  # shortest plain chain that gets the relay (and the membrane ×0.5)
COPY_ABOVE = 20  # longest plain chain that gets ρ = 0.9 and the membrane ×0.5; longer ones get the copy relay
RELAY = 0.9
COPY_RELAY = 1.0
MEMBRANE = 0.5  # a power of 2: the scaled weights and thresholds are exact, every spike bitwise the same


@dataclass(frozen=True)
class Recipe:
    """What the one call does: the method (``calibrated``), its relay share, the membrane factor applied after
    it (1: none), what happens to weight-less neurons, and the reason, as the report's first line says it."""

    method: str
    relay: float
    membrane: float
    weightless: str
    model: str  # "20-layer plain chain", "model with BatchNorm", ...
    chosen: tuple[str, ...] = field(default_factory=tuple)  # the choices made here (not given by the caller)

    @property
    def summary(self) -> str:
        """``"20-layer plain chain: calibrated, relay 0.9, membrane ×0.5"``."""
        parts = [self.method]
        if self.relay:
            parts.append("copy relay (relay 1)" if self.relay == COPY_RELAY else f"relay {self.relay:g}")
        if self.membrane != 1.0:
            parts.append(f"membrane ×{self.membrane:g}")
        if self.weightless == "threshold":
            parts.append("weight-less neurons through their threshold")
        given = [name for name in ("relay", "membrane", "weightless") if name not in self.chosen]
        return f"{self.model}: {', '.join(parts)}" + (f" ({', '.join(given)} as given)" if given else "")

    def options(self) -> dict[str, object]:
        """The options of ``initialize(model, "calibrated", ...)`` this recipe adds."""
        return {**({"relay": self.relay} if self.relay else {}), "weightless": self.weightless}


def plain_chain_length(p: Plan) -> Optional[int]:
    """The number of neuron layers when the model is a plain chain, else None.

    A plain chain: every neuron fed by exactly one feed-forward weight layer, the first reading the data and
    each other one the spikes of the neuron before it; no normalization between, no residual sum, no recurrent
    weight, no neuron without a weight (pooling, dropout and flattening between are allowed)."""
    if p.weightless or p.unfed or not p.neurons:
        return None
    layers: dict[str, LayerPlan] = {}
    for layer in p.layers:
        if layer.role != "input" or layer.norm is not None or layer.residual or layer.neuron_name in layers:
            return None
        layers[layer.neuron_name] = layer
    previous = None
    for name, _, _ in p.neurons:
        feed = layers.get(name)
        if feed is None:
            return None
        expected = ("data", ()) if previous is None else ("neurons", (previous,))
        if (feed.input_source, tuple(feed.upstream)) != expected:
            return None
        previous = name
    return len(p.neurons)


def _model_kind(p: Plan) -> str:
    """A few words naming the kind of model, for the report's first line."""
    kinds = []
    if any(layer.role == "recurrent" for layer in p.layers):
        kinds.append("recurrent weights")
    if any(layer.norm is not None for layer in p.layers):
        kinds.append("normalization")
    if any(layer.residual for layer in p.layers):
        kinds.append("residual sums")
    if p.weightless:
        kinds.append(f"{len(p.weightless)} weight-less neuron layer(s)")
    return "model with " + ", ".join(kinds) if kinds else "model with branches"


def _unscalable(p: Plan) -> bool:
    """Whether some neuron's input has a path the membrane scaling cannot scale: no weight before it, or a
    residual sum adding spikes (an identity path) to its weight layer's output."""
    return bool(p.weightless or p.unfed or any(layer.residual for layer in p.layers))


def choose(p: Plan, *, relay: Optional[float] = None, membrane: Optional[float] = None,
           weightless: Optional[str] = None) -> Recipe:
    """The recipe for the planned model; a value given (not None) is kept as it is (see the module docstring
    for the lengths and the measurements behind them)."""
    if weightless is not None and weightless not in ("report", "threshold"):
        raise OptionError(f"initialize: weightless must be 'report' or 'threshold', got {weightless!r}")
    chosen = []
    length = plain_chain_length(p)
    if length is None:
        model, auto_relay, auto_membrane = _model_kind(p), 0.0, (1.0 if _unscalable(p) else MEMBRANE)
    else:
        model = f"{length}-layer plain chain"
        if not all(immediate_input(spec) for _, _, spec in p.neurons):
            model += " (inputs reach the membrane a step late: no relay)"
            auto_relay, auto_membrane = 0.0, MEMBRANE
        elif length < RELAY_FROM:
            auto_relay, auto_membrane = 0.0, 1.0
        elif length <= COPY_ABOVE:
            auto_relay, auto_membrane = RELAY, MEMBRANE
        else:
            auto_relay, auto_membrane = COPY_RELAY, 1.0
    if relay is None:
        relay = auto_relay
        chosen.append("relay")
    if membrane is None:
        membrane = auto_membrane
        chosen.append("membrane")
    if weightless is None:
        weightless = "threshold" if p.weightless else "report"
        chosen.append("weightless")
    return Recipe("calibrated", float(relay), float(membrane), weightless, model, tuple(chosen))
