"""Pass/fail criteria on evaluation scores, stated the same way wherever they are checked (the skill
experiment, the demo's index): {'value', 'target', 'met'}, the target in words ('<= 0.6', '0.8 .. 1.2').
A missing or non-finite value (an undefined score) never meets its target.
"""

from __future__ import annotations

import math


def ratio(numerator, denominator) -> float | None:
    """numerator / denominator; None when either is missing or the denominator is not > 0."""
    if numerator is None or denominator is None or not denominator > 0:
        return None
    return float(numerator) / float(denominator)


def check(value, *, low: float | None = None, high: float | None = None, strict: bool = False) -> dict:
    """{'value', 'target', 'met'}: met when `value` is finite and within [low, high] (a bound left
    None is open); `strict` excludes the bounds themselves ('< 1' rather than '<= 1')."""
    if low is None and high is None:
        raise ValueError("a criterion needs a bound: give low, high or both")
    lt, gt = ("<", ">") if strict else ("<=", ">=")
    if low is not None and high is not None:
        target = f"{low:g} .. {high:g}" + (" (exclusive)" if strict else "")
    else:
        target = f"{lt} {high:g}" if high is not None else f"{gt} {low:g}"
    finite = value is not None and math.isfinite(value)
    met = (
        finite
        and (low is None or (value > low if strict else value >= low))
        and (high is None or (value < high if strict else value <= high))
    )
    return {"value": float(value) if finite else None, "target": target, "met": bool(met)}


def shown(value, digits: int = 3) -> str:
    """A criterion's value as text with `digits` significant digits, more (up to 6) where rounding
    would leave fewer digits than that and a different number, so a value just past a round target
    does not print as the target: 1.003 is '1.003', not '1' (under '<= 1' it is NOT met), while 1.0
    stays '1' and 0.9361 '0.936'. 'n/a' for a missing or non-finite value."""
    if value is None or not math.isfinite(value):
        return "n/a"
    for places in range(digits, 7):
        text = f"{value:.{places}g}"
        if "e" in text or float(text) == value or len(text.lstrip("-0.").replace(".", "")) >= digits:
            break
    return text
