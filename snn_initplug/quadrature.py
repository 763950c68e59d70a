"""Vectorised adaptive Gauss-Kronrod (7/15) quadrature: the surrogate moments' integrals (:mod:`.surrogate`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .errors import SurrogateError

__all__ = ["Integral", "integrate"]

_XGK = np.array([
    0.991455371120812639206854697526329, 0.949107912342758524526189684047851,
    0.864864423359769072789712788640926, 0.741531185599394439863864773280788,
    0.586087235467691130294144845693013, 0.405845151377397166906606412076961,
    0.207784955007898467600689403773245, 0.0,
])
_WGK = np.array([
    0.022935322010529224963732008058970, 0.063092092629978553290700663189204,
    0.104790010322250183839876322541518, 0.140653259715525918745189590510238,
    0.169004726639267902826583426598550, 0.190350578064785409913256402421014,
    0.204432940075298892414161999234649, 0.209482141084727828012999174891714,
])
_WG = np.array([
    0.129484966168869693270611432679082, 0.279705391489276667901467771423780,
    0.381830050505118944950369775488975, 0.417959183673469387755102040816327,
])
_EPS = np.finfo(np.float64).eps
_NODES = np.concatenate([-_XGK[:-1], _XGK[::-1]])  # 15 nodes in [-1, 1]
_KRONROD_W = np.concatenate([_WGK[:-1], _WGK[::-1]])
_GAUSS_W = np.zeros(15)
_GAUSS_W[[1, 3, 5]] = _WG[:3]
_GAUSS_W[7] = _WG[3]
_GAUSS_W[[9, 11, 13]] = _WG[2::-1]


@dataclass(frozen=True)
class Integral:
    value: np.ndarray  # one entry per component of the integrand
    error: np.ndarray  # absolute error bound of each component
    evaluations: int
    intervals: int


def integrate(
    f: Callable[[np.ndarray], np.ndarray],
    breakpoints,
    rtol: float = 1e-11,
    atol: float = 1e-300,
    max_rounds: int = 200,
    max_intervals: int = 200_000,
) -> Integral:
    """Integrate ``f`` over [min(breakpoints), max(breakpoints)] by adaptive Gauss-Kronrod 7/15.

    ``f`` maps a 1-D float64 array of n points to an array of shape ``(components, n)`` (or ``(n,)``), so
    each refinement round costs one vectorised call for all components. Every round splits the intervals
    with the largest error estimates ``|K15 - G7|`` (relative to each component's tolerance
    ``max(atol, rtol·|integral|)``) until the error left unsplit is below half the tolerance; a jump therefore
    costs about one extra interval per halving of its error.
    """
    points = np.unique(np.asarray(breakpoints, dtype=np.float64))
    if points.size < 2:
        raise SurrogateError("integrate: need at least two distinct breakpoints")
    lo, hi = points[:-1], points[1:]
    done_value = done_error = done_magnitude = 0.0
    evaluations = 0
    for _ in range(max_rounds):
        mid, half = 0.5 * (lo + hi), 0.5 * (hi - lo)
        x = (mid[:, None] + half[:, None] * _NODES[None, :]).ravel()
        values = np.atleast_2d(np.asarray(f(x), dtype=np.float64)).reshape(-1, lo.size, _NODES.size)
        evaluations += x.size
        kronrod = half * (values @ _KRONROD_W)  # (components, intervals)
        errors = np.abs(kronrod - half * (values @ _GAUSS_W))
        magnitude = done_magnitude + (half * (np.abs(values) @ _KRONROD_W)).sum(axis=1)
        total = done_value + kronrod.sum(axis=1)
        # Where positive and negative parts cancel (snnTorch triangular on a symmetric range), rounding
        # limits the attainable accuracy to a few ulps of the integral of |f|.
        tolerance = np.maximum.reduce([np.full_like(total, atol), rtol * np.abs(total), 64 * _EPS * magnitude])
        error_left = done_error + errors.sum(axis=1)
        # An interval too narrow to split in floating point is final.
        final = half <= 4 * _EPS * np.maximum(np.abs(mid), 1e-300)
        if np.all(error_left <= tolerance) or final.all():
            return Integral(total, error_left, evaluations, lo.size)
        # Split the largest (normalised) errors first until what stays unsplit is under half the tolerance.
        scaled = np.where(final, 0.0, (errors / tolerance[:, None]).max(axis=0))
        order = np.argsort(-scaled)
        unsplit = (done_error / tolerance).max() + scaled.sum() - np.cumsum(scaled[order])
        n_split = int(np.argmax(unsplit <= 0.5)) + 1 if np.any(unsplit <= 0.5) else order.size
        split = np.zeros(lo.size, dtype=bool)
        split[order[:n_split]] = True
        split &= ~final
        done_value = done_value + kronrod[:, ~split].sum(axis=1)
        done_magnitude = done_magnitude + (half[~split] * (np.abs(values[:, ~split]) @ _KRONROD_W)).sum(axis=1)
        done_error = done_error + errors[:, ~split].sum(axis=1)
        lo, hi, mid = lo[split], hi[split], mid[split]
        lo, hi = np.concatenate([lo, mid]), np.concatenate([mid, hi])
        if lo.size > max_intervals:
            break
    raise SurrogateError(
        f"integrate: no convergence within {max_rounds} rounds and {max_intervals} intervals "
        f"(error so far {np.max(done_error):.3g})"
    )
