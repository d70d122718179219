"""Exponential smoothing of readings for display (the CSV keeps raw values), stated as a time constant.

``value += (1 - exp(-dt / tau)) * (new - value)``, with dt the stream time since the last update: a step
change shows 63 % of its size after ``tau`` seconds, whatever the window rate; tau 0 shows raw values.
"""

from __future__ import annotations

import math


class Smoother:
    def __init__(self, tau_s: float = 3.0):
        if not 0.0 <= tau_s < math.inf:
            raise ValueError("the smoothing time constant must be >= 0 seconds")
        self.tau_s = tau_s
        self.state: dict[str, float] = {}
        self.t_s: float | None = None

    def alpha(self, t_s: float) -> float:
        """The weight the previous value keeps at stream time ``t_s``."""
        if self.t_s is None or self.tau_s == 0:
            return 0.0
        return math.exp(-max(0.0, t_s - self.t_s) / self.tau_s)

    def update(self, values: dict[str, float], t_s: float) -> dict[str, float]:
        alpha = self.alpha(t_s)
        for key, value in values.items():
            prev = self.state.get(key)
            self.state[key] = value if prev is None else alpha * prev + (1 - alpha) * value
        self.t_s = t_s if self.t_s is None else max(self.t_s, t_s)
        return {key: self.state[key] for key in values}
