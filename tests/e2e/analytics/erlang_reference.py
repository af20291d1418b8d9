"""An independent Erlang C, to check the SQL of pbx.staffing_15m against (tests only).

The SQL walks the Erlang B recursion in floating point; this is the textbook
formula instead, the Poisson terms summed in 60-digit decimal arithmetic:

    C(N, A) = (A^N / N! * N / (N - A)) / (sum_{k<N} A^k / k! + A^N / N! * N / (N - A))
    SL(N)   = 1 - C(N, A) * exp(-(N - A) * T / AHT)

so an error in the recursion, the order of terms or the rounding of either
shows as a disagreement. Nothing here is in the read path.
"""

from __future__ import annotations

from decimal import Decimal, localcontext

__all__ = ["agents_required", "erlang_c", "service_level"]

_DIGITS = 60


def _dec(x: float | int | Decimal) -> Decimal:
    return x if isinstance(x, Decimal) else Decimal(x)  # floats convert exactly


def erlang_c(n: int, a: float | Decimal) -> Decimal:
    """Probability that a call waits, with ``n`` agents and ``a`` Erlangs (``n > a``)."""
    with localcontext() as ctx:
        ctx.prec = _DIGITS
        a = _dec(a)
        if not n > a:
            raise ValueError(f"Erlang C needs more agents than Erlangs: n={n}, a={a}")
        term, below = Decimal(1), Decimal(0)  # term = A^k / k!
        for k in range(n):
            below += term
            term = term * a / (k + 1)
        top = term * n / (n - a)
        return +(top / (below + top))


def service_level(n: int, a: float | Decimal, aht_s: float | Decimal, threshold_s: float | Decimal) -> Decimal:
    """Share of calls answered within ``threshold_s`` with ``n`` agents (``n > a``)."""
    with localcontext() as ctx:
        ctx.prec = _DIGITS
        a, aht, t = _dec(a), _dec(aht_s), _dec(threshold_s)
        wait = erlang_c(n, a)
        if aht == 0:
            return 1 - wait * 0
        return +(1 - wait * (-(n - a) * t / aht).exp())


def agents_required(a: float, aht_s: float, threshold_s: float, target_pct: float) -> int | None:
    """The smallest N > a with service_level(N) >= target_pct / 100; None if the target is 100 % or more."""
    if target_pct >= 100:
        return None
    n = int(a) + 1
    goal = _dec(target_pct) / 100
    while service_level(n, a, aht_s, threshold_s) < goal:
        n += 1
    return n
