"""The optional ``filter`` of a sweep spec: one Python-like boolean expression over a point's parameters,
parsed with ``ast`` and evaluated by a small walker (no ``eval``): names, numbers, strings, lists,
arithmetic, comparisons (``in`` too), ``and`` / ``or`` / ``not``. Anything else is refused."""
from __future__ import annotations

import ast
import operator

__all__ = ["Filter"]

_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_COMPARE = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
            ast.Gt: operator.gt, ast.GtE: operator.ge, ast.In: lambda a, b: a in b,
            ast.NotIn: lambda a, b: a not in b}


class Filter:
    """``Filter(text, names)``: raises ``ValueError`` for a syntax error, a construct outside the
    grammar above, or a name not in ``names``; ``Filter(...)(values)`` -> bool."""

    def __init__(self, text: str, names):
        self.text = text
        try:
            self._tree = ast.parse(text, mode="eval").body
        except SyntaxError as error:
            raise ValueError(f"filter {text!r} is not an expression: {error.msg}") from None
        self._check(self._tree, frozenset(names))

    def _check(self, node, names):
        if isinstance(node, ast.Name):
            if node.id not in names:
                raise ValueError(f"filter {self.text!r}: unknown name {node.id!r}; expected one of {sorted(names)}")
        elif isinstance(node, ast.Constant):
            if not isinstance(node.value, (int, float, str)) or isinstance(node.value, bool):
                raise ValueError(f"filter {self.text!r}: constant {node.value!r} is not a number or string")
        elif isinstance(node, (ast.BoolOp, ast.Compare, ast.BinOp, ast.UnaryOp, ast.List, ast.Tuple)):
            if isinstance(node, ast.BinOp) and type(node.op) not in _BINARY \
                    or isinstance(node, ast.UnaryOp) and not isinstance(node.op, (ast.Not, ast.USub)) \
                    or isinstance(node, ast.Compare) and any(type(op) not in _COMPARE for op in node.ops):
                raise ValueError(f"filter {self.text!r}: operator {ast.unparse(node)!r} is not allowed")
            for child in ast.iter_child_nodes(node):
                if not isinstance(child, (ast.expr_context, ast.boolop, ast.operator, ast.unaryop, ast.cmpop)):
                    self._check(child, names)
        else:
            raise ValueError(f"filter {self.text!r}: {ast.unparse(node)!r} is not allowed "
                             f"(names, numbers, strings, lists, arithmetic, comparisons, and/or/not)")

    def __call__(self, values: dict) -> bool:
        try:
            return bool(self._eval(self._tree, values))
        except (TypeError, ZeroDivisionError) as error:
            raise ValueError(f"filter {self.text!r} fails on {values}: {error}") from None

    def _eval(self, node, values):
        if isinstance(node, ast.Name):
            return values[node.id]
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, (ast.List, ast.Tuple)):
            return [self._eval(e, values) for e in node.elts]
        if isinstance(node, ast.BoolOp):
            if isinstance(node.op, ast.And):
                return all(self._eval(v, values) for v in node.values)
            return any(self._eval(v, values) for v in node.values)
        if isinstance(node, ast.UnaryOp):
            value = self._eval(node.operand, values)
            return not value if isinstance(node.op, ast.Not) else -value
        if isinstance(node, ast.BinOp):
            return _BINARY[type(node.op)](self._eval(node.left, values), self._eval(node.right, values))
        left = self._eval(node.left, values)
        for op, right_node in zip(node.ops, node.comparators):
            right = self._eval(right_node, values)
            if not _COMPARE[type(op)](left, right):
                return False
            left = right
        return True
