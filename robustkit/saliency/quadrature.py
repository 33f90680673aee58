"""Quadrature rules for the path integral of Integrated Gradients."""

from __future__ import annotations

import numpy as np

from robustkit.errors import InputError, positive_int

RULES = ("riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid", "gauss_legendre")


def quadrature(rule: str, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes alpha in [0, 1] and weights (summing to 1) of a rule for the integral over [0, 1].

    Riemann rules use ``steps`` equal intervals (left, right or middle point of each);
    ``riemann_trapezoid`` uses ``steps`` equally spaced nodes including both ends;
    ``gauss_legendre`` uses the ``steps`` Gauss-Legendre nodes, exact for polynomials of
    degree < 2 * steps. Returns float64 arrays [steps].
    """
    steps = positive_int(steps, "steps")
    if rule == "riemann_left":
        alphas = np.arange(steps) / steps
    elif rule == "riemann_right":
        alphas = np.arange(1, steps + 1) / steps
    elif rule == "riemann_middle":
        alphas = (np.arange(steps) + 0.5) / steps
    elif rule == "riemann_trapezoid":
        if steps < 2:
            raise InputError("riemann_trapezoid needs steps >= 2 (both ends of the path).")
        alphas = np.linspace(0.0, 1.0, steps)
        weights = np.full(steps, 1.0 / (steps - 1))
        weights[[0, -1]] /= 2
        return alphas, weights
    elif rule == "gauss_legendre":
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        return (nodes + 1) / 2, weights / 2
    else:
        raise InputError(f"Unknown integration rule {rule!r}; use one of {RULES}.")
    return alphas, np.full(steps, 1.0 / steps)
