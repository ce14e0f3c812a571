"""A safe arithmetic evaluator for equation labels (SVAMP), built on :mod:`ast`.

The official code scores SVAMP with Python's ``eval`` on model output, which runs whatever the
model writes. Here an equation is parsed with ``ast.parse(mode="eval")`` and walked by hand:
only number literals, ``+ - * /``, parentheses and unary minus are allowed. Anything else
(names, calls, attributes, strings, ``**``, comparisons, tuples such as ``322,775``) is "not a
number" and evaluates to None. Nothing is ever executed.
"""

from __future__ import annotations

import ast
import math
import operator

__all__ = ["evaluate", "same_value", "MAX_EQUATION_CHARS"]

#: longer text is not an equation a benchmark label would hold; refusing it bounds the work
MAX_EQUATION_CHARS = 1000

_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


class _NotANumber(Exception):
    """Raised inside the walk when the tree holds anything but plain arithmetic."""


def _walk(node: ast.AST) -> float:
    if isinstance(node, ast.Expression):
        return _walk(node.body)
    if isinstance(node, ast.Constant):
        value = node.value
        # bool is an int subclass: True + 1 is not arithmetic on numbers
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _NotANumber
        return float(value)
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _walk(node.left), _walk(node.right)
        if isinstance(node.op, ast.Div) and right == 0:
            raise _NotANumber
        return _BINARY[type(node.op)](left, right)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_walk(node.operand)
    raise _NotANumber


def evaluate(text: str | None) -> float | None:
    """The numeric value of an arithmetic expression, or None when it is not one.

    >>> evaluate("( 84.0 / 2.0 )")
    42.0
    >>> evaluate("__import__('os').system('true')") is None
    True
    """
    if not isinstance(text, str):
        return None
    text = text.strip()
    if not text or len(text) > MAX_EQUATION_CHARS:
        return None
    try:
        value = _walk(ast.parse(text, mode="eval"))
    except (_NotANumber, SyntaxError, ValueError, TypeError, OverflowError, RecursionError, MemoryError):
        return None
    return value if math.isfinite(value) else None


def same_value(a: str | None, b: str | None, rel_tol: float = 1e-9, abs_tol: float = 1e-9) -> bool:
    """True when both texts are arithmetic expressions with (numerically) the same value.

    The tolerance only absorbs float rounding (``0.1 + 0.2`` vs ``0.3``); the official code's
    exact ``==`` gives the same figures on the release files.
    """
    x, y = evaluate(a), evaluate(b)
    return x is not None and y is not None and math.isclose(x, y, rel_tol=rel_tol, abs_tol=abs_tol)
