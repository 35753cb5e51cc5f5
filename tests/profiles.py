"""Hypothesis example counts that follow the loaded profile (``conftest.py``): a test that sets its own count
(fewer for a costly example, more for a search) runs that many under "ci" and 40 times as many under
"thorough", as the profiles' own 25 and 1000 — a count written as a bare number stayed at it under
"thorough", so the profile that hunts counterexamples drew 6 examples where it promised 1000."""

from hypothesis import settings


def scaled(n: int) -> int:
    """``n`` examples in the default profile's proportion (25 under "ci"): ``n`` there, 40·n under "thorough"."""
    return max(1, round(n * settings.default.max_examples / 25))
