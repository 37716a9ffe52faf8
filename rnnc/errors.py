"""Source spans, diagnostics and the one error type a bad spec produces.

Every stage (parser, resolver, checks) reports mistakes as `Diagnostic`s carrying a `Span`;
`SpecError` bundles all of them into one report:

    digits.rnn:4:12: error: unknown cell 'lstn'
    cell rnn = lstn(150)
               ^~~~
      hint: did you mean 'lstm'?
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Iterable

EXIT_SPEC_ERROR = 3
"""Exit code of the command line for a bad spec (usage errors are click's 2; data and
checkpoint errors 4)."""


@dataclass(frozen=True)
class Span:
    """A range of source text: 1-based line and column, the end exclusive.

    `file` is the path shown to the user.
    """

    file: str
    line: int
    column: int
    end_line: int
    end_column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True)
class Diagnostic:
    """One error: what is wrong, where, and optionally how to fix it."""

    message: str
    span: Span | None = None
    hint: str | None = None

    def render(self, source: str | None = None) -> str:
        """`file:line:col: error: message`, the source line, a caret line, the hint."""
        if self.span is None:
            lines = [f"error: {self.message}"]
        else:
            lines = [f"{self.span}: error: {self.message}"]
            lines += _excerpt(self.span, source)
        if self.hint:
            lines.append(f"  hint: {self.hint}")
        return "\n".join(lines)


def _excerpt(span: Span, source: str | None) -> list[str]:
    """The span's first source line and a caret line under it ('^~~~' for several chars)."""
    if source is None:
        return []
    source_lines = source.splitlines()
    if not 1 <= span.line <= len(source_lines):
        return []
    text = source_lines[span.line - 1]
    start = max(span.column - 1, 0)
    if span.end_line == span.line:
        width = max(span.end_column - span.column, 1)
    else:  # a span over several lines: underline to the end of its first line
        width = max(len(text.rstrip()) - start, 1)
    # keep tabs so that the caret lines up with the text above it
    pad = "".join("\t" if ch == "\t" else " " for ch in text[:start])
    return [text, pad + "^" + "~" * (width - 1)]


def _position(diagnostic: Diagnostic) -> tuple:
    span = diagnostic.span
    if span is None:  # errors about the spec as a whole come after the located ones
        return (1, "", 0, 0)
    return (0, span.file, span.line, span.column)


class SpecError(Exception):
    """One report listing every error of a spec."""

    def __init__(self, diagnostics: list[Diagnostic], source: str | None = None):
        self.diagnostics = sorted(diagnostics, key=_position)
        self.source = source
        super().__init__(self.report())

    def report(self) -> str:
        """Every diagnostic, sorted by position, each with its source line and caret."""
        return "\n".join(d.render(self.source) for d in self.diagnostics)

    __str__ = report


class ErrorCollector:
    """Gathers diagnostics during a pass; `raise_if_any` ends the pass with one report."""

    def __init__(self) -> None:
        self.diagnostics: list[Diagnostic] = []

    def error(self, message: str, span: Span | None, hint: str | None = None) -> None:
        self.diagnostics.append(Diagnostic(message, span, hint))

    def add(self, diagnostic: Diagnostic) -> None:
        self.diagnostics.append(diagnostic)

    def __bool__(self) -> bool:
        return bool(self.diagnostics)

    def __len__(self) -> int:
        return len(self.diagnostics)

    def raise_if_any(self, source: str | None = None) -> None:
        if self.diagnostics:
            raise SpecError(list(self.diagnostics), source)


def did_you_mean(name: str, candidates: Iterable[str]) -> str | None:
    """`"did you mean 'lstm'?"` for the closest candidate, or None when none is close."""
    close = difflib.get_close_matches(name, sorted(set(candidates)), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else None
