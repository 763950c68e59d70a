"""Independent references for surrogate moments.

Each surrogate's derivative h(x) is written out here from the frameworks' documented backward formulas
(``shared/docs/frameworks.md``), independently of the frameworks' code and of snn_initplug's quadrature, and
integrated with scipy's QUADPACK piece by piece between its known kinks and jumps. Closed forms are used where
they exist.
"""
import math

import numpy as np
from scipy import integrate, special, stats

WIDTH = 13.0  # standard deviations: the Gaussian mass beyond is < 1e-38


def dense_moment(h, k, dist, breakpoints=()):
    """E_D[h(x)^k] by QUADPACK on each piece between breakpoints (and a fine split near 0)."""
    kind, a, b = dist
    if kind == "uniform":
        lo, hi = a, b
        density = lambda x: 1.0 / (b - a)  # noqa: E731
    else:
        lo, hi = a - WIDTH * b, a + WIDTH * b
        density = lambda x: stats.norm.pdf(x, a, b)  # noqa: E731
    fine = np.concatenate([[0.0, a], np.geomspace(1e-6, 20, 25), -np.geomspace(1e-6, 20, 25)]) if kind == "normal" \
        else np.concatenate([[0.0], np.geomspace(1e-6, 20, 25), -np.geomspace(1e-6, 20, 25)])
    points = np.unique(np.concatenate([[lo, hi], np.asarray(breakpoints, float), fine]))
    points = points[(points >= lo) & (points <= hi)]
    total = 0.0
    for left, right in zip(points[:-1], points[1:]):
        value, _ = integrate.quad(lambda x: h(x) ** k * density(x), left, right, epsabs=1e-15, epsrel=1e-11, limit=200)
        total += value
    return total


def sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


# h(x) formulas, x = u - threshold -----------------------------------------------------------------
def h_atan(alpha):
    return lambda x: (alpha / 2) / (1 + (math.pi * alpha * x / 2) ** 2)


def h_logistic(alpha):
    return lambda x: alpha * sigmoid(alpha * x) * (1 - sigmoid(alpha * x))


def h_fast_sigmoid(slope):
    return lambda x: 1.0 / (slope * abs(x) + 1) ** 2


def h_spike_rate_escape(beta, slope):
    return lambda x: slope * math.exp(-beta * abs(x - 1))


def h_sfs(slope, B):
    return lambda x: (1.0 / (slope * abs(x) + 1) ** 2) if x > B else 0.0


def h_triangular(threshold):
    return lambda x: threshold if x < 0 else -threshold


def h_heaviside():
    return lambda x: 1.0 if x > 0 else 0.0


def h_rect(alpha):
    return lambda x: alpha if abs(x) < 1 / (2 * alpha) else 0.0


def h_piecewise_quadratic(alpha):
    return lambda x: max(0.0, alpha - alpha * alpha * abs(x))


def h_piecewise_exp(alpha):
    return lambda x: alpha / 2 * math.exp(-alpha * abs(x))


def h_erf(alpha):
    return lambda x: alpha / math.sqrt(math.pi) * math.exp(-(alpha * x) ** 2)


def h_soft_sign(alpha):
    return lambda x: alpha / (2 * (1 + alpha * abs(x)) ** 2)


def h_super_spike(alpha):
    return lambda x: alpha / (1 + abs(x)) ** 2


def h_piecewise_leaky_relu(w, c, legacy):
    inside = 1.0 / w if legacy else 1.0 / (2 * w)
    return lambda x: inside if abs(x) < w else c


def h_q_pseudo_spike(alpha):
    return lambda x: (1 + 2 * abs(x) / (alpha - 1)) ** (-alpha)


def h_nonzero_sign_log_abs(alpha):
    return lambda x: 1.0 / (1 / alpha + abs(x))


def h_leaky_k_relu(leak, k):
    return lambda x: k if x >= 0 else leak


# Closed forms for x ~ N(mu, sigma^2) -----------------------------------------------------------------
def normal_atan_m1(alpha, mu, sigma):
    return special.voigt_profile(mu, sigma, 2 / (math.pi * alpha))


def normal_erf(alpha, mu, sigma):
    m1 = alpha / math.sqrt(math.pi * (1 + 2 * alpha**2 * sigma**2)) * math.exp(-(alpha**2) * mu**2 / (1 + 2 * alpha**2 * sigma**2))
    m2 = (alpha**2 / math.pi) / math.sqrt(1 + 4 * alpha**2 * sigma**2) * math.exp(-2 * alpha**2 * mu**2 / (1 + 4 * alpha**2 * sigma**2))
    return m1, m2


def normal_rect(alpha, mu, sigma):
    m1 = alpha * (stats.norm.cdf((1 / (2 * alpha) - mu) / sigma) - stats.norm.cdf((-1 / (2 * alpha) - mu) / sigma))
    return m1, alpha * m1


def laplace_mean(alpha, mu, sigma):
    """E[(alpha/2) exp(-alpha |x|)] for x ~ N(mu, sigma^2)."""
    return (alpha / 2) * (
        math.exp(alpha * mu + alpha**2 * sigma**2 / 2) * stats.norm.cdf(-mu / sigma - alpha * sigma)
        + math.exp(-alpha * mu + alpha**2 * sigma**2 / 2) * stats.norm.cdf(mu / sigma - alpha * sigma)
    )


def normal_piecewise_exp(alpha, mu, sigma):
    return laplace_mean(alpha, mu, sigma), (alpha / 4) * laplace_mean(2 * alpha, mu, sigma)


def normal_spike_rate_escape(beta, slope, mu, sigma):
    m1 = (2 * slope / beta) * laplace_mean(beta, mu - 1, sigma)
    m2 = (slope**2 / beta) * laplace_mean(2 * beta, mu - 1, sigma)
    return m1, m2


def normal_heaviside(mu, sigma):
    p = stats.norm.cdf(mu / sigma)
    return p, p


def normal_triangular(threshold, mu, sigma):
    return threshold * (1 - 2 * stats.norm.cdf(mu / sigma)), threshold**2


def normal_sso(mean, variance, mu, sigma):
    p = stats.norm.cdf(mu / sigma)
    return p + (1 - p) * mean * variance, p + (1 - p) * variance**2 * (1 / 12 + mean**2)


# Closed forms for x ~ Uniform(a, b) -------------------------------------------------------------------
def uniform_atan_m1(alpha, a, b):
    return (math.atan(math.pi * alpha * b / 2) - math.atan(math.pi * alpha * a / 2)) / (math.pi * (b - a))


def uniform_logistic_m1(alpha, a, b):
    return (sigmoid(alpha * b) - sigmoid(alpha * a)) / (b - a)


def uniform_erf_m1(alpha, a, b):
    return (special.erf(alpha * b) - special.erf(alpha * a)) / (2 * (b - a))


def uniform_rect(alpha, a, b):
    overlap = max(0.0, min(b, 1 / (2 * alpha)) - max(a, -1 / (2 * alpha)))
    m1 = alpha * overlap / (b - a)
    return m1, alpha * m1
