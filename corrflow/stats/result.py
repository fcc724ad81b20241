"""Result type for Monte Carlo error analysis and value(error) formatting.

The :class:`Stats` container is what :func:`corrflow.stats.gamma_method` and
:func:`corrflow.stats.binned_jackknife` return.  :func:`format_value_error`
renders a central value with its uncertainty in the compact notation common
in lattice papers, e.g. ``0.31498(72)`` meaning ``0.31498 +- 0.00072``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, localcontext

__all__ = ["Stats", "format_value_error"]

# Outside this range of decimal exponents (of max(|value|, error)) the
# formatter switches to scientific notation, e.g. "1.234(56)e-08".
_SCI_MIN_EXP = -5
_SCI_MAX_EXP = 9


def _plain(x: float) -> str:
    """Shortest round-tripping representation of a float (``repr``)."""
    return repr(float(x))


def _fixed_point(value: Decimal, error: Decimal, digits: int) -> str:
    """Fixed-point ``value(error)`` for finite value and finite error > 0."""
    exp_err = error.adjusted()  # decimal exponent of the leading error digit
    decimals = digits - 1 - exp_err
    quantum = Decimal(1).scaleb(-decimals)
    err_q = error.quantize(quantum, rounding=ROUND_HALF_UP)
    if err_q.adjusted() > exp_err:
        # Rounding carried into a new leading digit (e.g. 0.0999 -> 0.10):
        # keep `digits` significant digits of the *rounded* error.
        decimals -= 1
        quantum = Decimal(1).scaleb(-decimals)
        err_q = error.quantize(quantum, rounding=ROUND_HALF_UP)
    val_q = value.quantize(quantum, rounding=ROUND_HALF_UP)
    if val_q.is_zero():
        val_q = abs(val_q)  # avoid "-0.000(50)"

    if decimals > 0:
        val_str = f"{val_q:.{decimals}f}"
        if err_q >= 1:
            err_str = f"{err_q:.{decimals}f}"  # e.g. 12.3(1.2)
        else:
            err_str = str(int(err_q.scaleb(decimals)))  # e.g. 0.31498(72)
    else:
        # Integer-valued display, e.g. 1235(57) or 12350(570).
        val_str = str(int(val_q))
        err_str = str(int(err_q))
    return f"{val_str}({err_str})"


def format_value_error(value: float, error: float, digits: int = 2) -> str:
    """Format ``value +- error`` in compact physicist notation.

    The error is rounded (half-up) to ``digits`` significant digits and the
    value is rounded to the same decimal position.  The error is written in
    parentheses in units of the last displayed digit of the value; if the
    error is >= 1 while the value still shows decimals, the error is written
    with its decimal point instead.

    Examples
    --------
    >>> format_value_error(0.314976, 0.000723)
    '0.31498(72)'
    >>> format_value_error(12.345, 1.2)
    '12.3(1.2)'
    >>> format_value_error(1234.5, 56.7)
    '1235(57)'
    >>> format_value_error(-0.314976, 0.000723)
    '-0.31498(72)'
    >>> format_value_error(1.5, 0.0)
    '1.5'
    >>> format_value_error(float("nan"), float("nan"))
    'nan(nan)'

    Parameters
    ----------
    value : float
        Central value.
    error : float
        Non-negative uncertainty.
    digits : int, default 2
        Number of significant digits of the error (>= 1).

    Returns
    -------
    str
        The formatted string.  Conventions for special cases:

        * ``error == 0``: the plain value (``repr`` of the float).
        * NaN or infinite value or error: ``"<value>(<error>)"`` with the
          non-finite entries spelled ``nan``/``inf`` and a finite value in
          ``repr`` form, e.g. ``"nan(nan)"`` or ``"1.5(inf)"``.
        * If the leading decimal exponent of ``max(|value|, error)`` is below
          -5 or above 9, scientific notation with a common exponent is used,
          e.g. ``"1.234(56)e-08"``.

    Raises
    ------
    ValueError
        If ``digits < 1`` or ``error`` is negative.
    """
    digits = int(digits)
    if digits < 1:
        raise ValueError(f"digits must be >= 1, got {digits}")
    value = float(value)
    error = float(error)
    if not (math.isfinite(value) and math.isfinite(error)):
        return f"{_plain(value)}({_plain(error)})"
    if error < 0:
        raise ValueError(f"error must be non-negative, got {error!r}")
    if error == 0:
        return _plain(value)

    with localcontext() as ctx:
        ctx.prec = 1000  # exact quantisation even for |value| >> error
        v = Decimal(repr(value))
        e = Decimal(repr(error))
        lead = max(e.adjusted(), v.adjusted() if v != 0 else e.adjusted())
        if lead < _SCI_MIN_EXP or lead > _SCI_MAX_EXP:
            mantissa = _fixed_point(v.scaleb(-lead), e.scaleb(-lead), digits)
            return f"{mantissa}e{lead:+03d}"
        return _fixed_point(v, e, digits)


@dataclass(frozen=True)
class Stats:
    """Estimate of a (primary or derived) Monte Carlo observable.

    Attributes
    ----------
    value : float
        Central value: the observable (or ``func``) evaluated at the sample
        mean(s).
    error : float
        Estimated statistical error (one standard deviation) of ``value``,
        autocorrelations included.
    tau_int : float
        Integrated autocorrelation time in units of the sample spacing, with
        the convention ``tau_int = 1/2`` for uncorrelated data, so that
        ``error**2 ~= 2 * tau_int * var / n``.
    tau_int_error : float
        Estimated statistical error of ``tau_int``.
    n : int
        Total number of samples used (summed over replicas).
    n_replicas : int
        Number of independent replicas (Markov chains).
    window : int
        For the Gamma method, the summation window ``W`` chosen by the
        automatic windowing procedure (``0`` flags vanishing fluctuations,
        e.g. constant data).  For the binned jackknife, the bin size.
    method : str, default "gamma"
        ``"gamma"`` or ``"jackknife"``: which estimator produced the result
        (determines the meaning of ``window``).
    """

    value: float
    error: float
    tau_int: float
    tau_int_error: float
    n: int
    n_replicas: int
    window: int
    method: str = "gamma"

    @property
    def ess(self) -> float:
        """Effective sample size ``n / (2 tau_int)`` (``inf`` if tau_int == 0)."""
        if self.tau_int <= 0:
            return math.inf
        return self.n / (2.0 * self.tau_int)

    def pull(self, exact: float) -> float:
        """Deviation from a known value in units of the error.

        Returns ``(value - exact) / error``.  If ``error == 0`` the result is
        ``0.0`` when ``value == exact`` and ``+-inf`` otherwise.
        """
        diff = self.value - float(exact)
        if self.error == 0:
            return 0.0 if diff == 0 else math.copysign(math.inf, diff)
        return diff / self.error

    def __str__(self) -> str:
        return format_value_error(self.value, self.error)

    def __repr__(self) -> str:
        tau = format_value_error(self.tau_int, self.tau_int_error, digits=1)
        return f"Stats({self}, tau_int={tau}, ess={self.ess:.0f})"

    def __format__(self, spec: str) -> str:
        """Format with a spec.

        * ``""``: same as ``str`` (two error digits), e.g. ``0.31498(72)``.
        * a bare integer, e.g. ``f"{s:1}"``: that many error digits,
          e.g. ``0.3150(7)``.
        * ``"r"``: same as ``repr``.
        * anything else is a float format spec applied to value and error,
          e.g. ``f"{s:.4f}"`` -> ``0.3150 +- 0.0007``.
        """
        if spec == "":
            return str(self)
        if spec == "r":
            return repr(self)
        if spec.isdigit():
            return format_value_error(self.value, self.error, digits=int(spec))
        return f"{format(self.value, spec)} +- {format(self.error, spec)}"
