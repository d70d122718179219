"""Exponential smoothing of readings for display (the CSV keeps raw values)."""

from __future__ import annotations


class Smoother:
    """``value = alpha * previous + (1 - alpha) * new``; alpha 0 shows raw values."""

    def __init__(self, alpha: float = 0.5):
        if not 0.0 <= alpha < 1.0:
            raise ValueError("alpha must be in [0, 1)")
        self.alpha = alpha
        self.state: dict[str, float] = {}

    def update(self, values: dict[str, float]) -> dict[str, float]:
        for key, value in values.items():
            prev = self.state.get(key)
            self.state[key] = value if prev is None else self.alpha * prev + (1 - self.alpha) * value
        return {key: self.state[key] for key in values}
