"""The arithmetic a spec may write: widths and conditions of spec-defined blocks.

`channels * expansion`, `make_divisible(in_channels * 0.25)`,
`stride != 1 or in_channels != out_channels`. A tiny grammar, parsed here
into a tree of tuples and evaluated over a mapping of names to numbers:
spec text is never handed to Python's `eval`, and only the names a block
declares can be read.

    expr    := or
    or      := and ("or" and)*
    and     := not ("and" not)*
    not     := "not" not | compare
    compare := sum (("==" | "!=" | "<" | "<=" | ">" | ">=") sum)?
    sum     := product (("+" | "-") product)*
    product := unary (("*" | "/" | "//" | "%") unary)*
    unary   := "-" unary | atom
    atom    := NUMBER | NAME | NAME "(" expr ("," expr)* ")" | "(" expr ")"
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

Number = int | float | bool
Tree = tuple

_TOKEN = re.compile(
    r"\s*(?:(?P<number>\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+)"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<op>//|==|!=|<=|>=|[-+*/%<>(),]))"
)
_WORDS = ("and", "or", "not")
_COMPARE = ("==", "!=", "<", "<=", ">", ">=")
MAX_LENGTH = 200


class ExprError(ValueError):
    """A text that is no expression of the grammar, or one that cannot be
    evaluated; `column` is 0-based in the text (None: the whole text)."""

    def __init__(self, message: str, column: int | None = None):
        super().__init__(message)
        self.column = column


def _round_half_up(value: float) -> int:
    return math.floor(value + 0.5)


# Functions a spec may call, each on numbers only. make_divisible is bound to
# the spec's rounding rule when a block is built (`Expression.evaluate`).
FUNCTIONS: dict[str, tuple[int, Callable[..., Number]]] = {
    "min": (2, min),
    "max": (2, max),
    "int": (1, math.floor),  # truncation of a width, as int(c * ratio)
    "ceil": (1, math.ceil),
    "round": (1, _round_half_up),
    "make_divisible": (1, None),  # type: ignore[dict-item]
}


def _tokens(text: str) -> list[tuple[str, str, int]]:
    tokens, at = [], 0
    while at < len(text):
        if text[at:].strip() == "":
            break
        match = _TOKEN.match(text, at)
        if match is None or match.end() == at:
            column = len(text) - len(text[at:].lstrip())
            raise ExprError(f"unexpected character {text[column]!r}", column)
        kind = match.lastgroup
        value = match.group(kind)
        start = match.start(kind)
        if kind == "name" and value in _WORDS:
            kind = "op"
        tokens.append((kind, value, start))
        at = match.end()
    tokens.append(("end", "", len(text)))
    return tokens


class _Parser:
    def __init__(self, text: str):
        self.tokens = _tokens(text)
        self.i = 0

    def peek(self) -> tuple[str, str, int]:
        return self.tokens[self.i]

    def take(self, *values: str) -> str | None:
        kind, value, _ = self.peek()
        if kind == "op" and value in values:
            self.i += 1
            return value
        return None

    def expect(self, value: str) -> None:
        if self.take(value) is None:
            _, found, column = self.peek()
            raise ExprError(
                f"expected {value!r}, found {found!r}"
                if found
                else f"expected {value!r}",
                column,
            )

    def parse(self) -> Tree:
        tree = self.or_()
        kind, value, column = self.peek()
        if kind != "end":
            raise ExprError(f"unexpected {value!r}", column)
        return tree

    def or_(self) -> Tree:
        tree = self.and_()
        while self.take("or"):
            tree = ("or", tree, self.and_())
        return tree

    def and_(self) -> Tree:
        tree = self.not_()
        while self.take("and"):
            tree = ("and", tree, self.not_())
        return tree

    def not_(self) -> Tree:
        if self.take("not"):
            return ("not", self.not_())
        return self.compare()

    def compare(self) -> Tree:
        tree = self.sum()
        op = self.take(*_COMPARE)
        if op:
            tree = (op, tree, self.sum())
        return tree

    def sum(self) -> Tree:
        tree = self.product()
        while op := self.take("+", "-"):
            tree = (op, tree, self.product())
        return tree

    def product(self) -> Tree:
        tree = self.unary()
        while op := self.take("*", "/", "//", "%"):
            tree = (op, tree, self.unary())
        return tree

    def unary(self) -> Tree:
        if self.take("-"):
            return ("neg", self.unary())
        return self.atom()

    def atom(self) -> Tree:
        kind, value, column = self.peek()
        if kind == "number":
            self.i += 1
            return ("num", int(value) if value.isdigit() else float(value))
        if kind == "name":
            self.i += 1
            if self.take("("):
                if value not in FUNCTIONS:
                    raise ExprError(
                        f"unknown function {value!r} (known: {', '.join(FUNCTIONS)})",
                        column,
                    )
                args = [self.or_()]
                while self.take(","):
                    args.append(self.or_())
                self.expect(")")
                arity = FUNCTIONS[value][0]
                if len(args) != arity:
                    raise ExprError(
                        f"{value}() takes {arity} argument(s), found {len(args)}",
                        column,
                    )
                return ("call", value, column, *args)
            return ("name", value, column)
        if self.take("("):
            tree = self.or_()
            self.expect(")")
            return tree
        raise ExprError(
            f"expected a number, a name or '(', found {value!r}"
            if value
            else "expected a number, a name or '(' at the end",
            column,
        )


@dataclass(frozen=True)
class Expression:
    """A parsed expression and the text it came from."""

    text: str
    tree: Tree

    @classmethod
    def parse(cls, text: str | int | float | bool) -> Expression:
        if isinstance(text, bool | int | float):
            return cls(str(text), ("num", text))
        if len(text) > MAX_LENGTH:
            raise ExprError(
                f"expected at most {MAX_LENGTH} characters, found {len(text)}"
            )
        return cls(text, _Parser(text).parse())

    def names(self) -> list[tuple[str, int]]:
        """Every name the expression reads, with its column."""
        found: list[tuple[str, int]] = []

        def walk(tree: Tree) -> None:
            if tree[0] == "name":
                found.append((tree[1], tree[2]))
            elif tree[0] == "call":
                for arg in tree[3:]:
                    walk(arg)
            elif tree[0] != "num":
                for arg in tree[1:]:
                    walk(arg)

        walk(self.tree)
        return found

    def evaluate(
        self,
        names: Mapping[str, Number],
        make_divisible: Callable[[float], int] | None = None,
    ) -> Number:
        def run(tree: Tree) -> Number:
            op = tree[0]
            if op == "num":
                return tree[1]
            if op == "name":
                if tree[1] not in names:
                    raise ExprError(
                        f"unknown name {tree[1]!r} (known: {', '.join(names)})",
                        tree[2],
                    )
                return names[tree[1]]
            if op == "call":
                if tree[1] == "make_divisible":
                    if make_divisible is None:
                        raise ExprError(
                            "make_divisible() is not available here", tree[2]
                        )
                    return make_divisible(run(tree[3]))
                return FUNCTIONS[tree[1]][1](*(run(arg) for arg in tree[3:]))
            if op == "neg":
                return -run(tree[1])
            if op == "not":
                return not run(tree[1])
            if op == "and":
                return bool(run(tree[1])) and bool(run(tree[2]))
            if op == "or":
                return bool(run(tree[1])) or bool(run(tree[2]))
            a, b = run(tree[1]), run(tree[2])
            if op in ("/", "//", "%") and b == 0:
                raise ExprError(f"division by zero in {self.text!r}")
            return _BINARY[op](a, b)

        return run(self.tree)


_BINARY: dict[str, Callable[[Number, Number], Number]] = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": lambda a, b: a / b,
    "//": lambda a, b: a // b,
    "%": lambda a, b: a % b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


def whole(value: Number, what: str) -> int:
    """A width or count as an integer; a fraction is an error, not rounded."""
    if isinstance(value, bool) or not float(value).is_integer():
        raise ExprError(f"{what} must be a whole number, found {value!r}")
    return int(value)
