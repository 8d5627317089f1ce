"""Regex searches run by Rust's linear-time engine, through ua-parser-rs.

``NativeSearch``: an exact "does this pattern occur?" for patterns written in the syntax both
engines share (no look-arounds), several times to a hundred times cheaper than ``re`` with
``IGNORECASE`` on long alternations.

``NativeFirst``: which of several named patterns is the first (in list order) found in a text,
for rules tried in order of precedence, all in one pass.

``Prefilter``: a native "could this regex match?" test, to skip CPython ``re`` scans that
cannot succeed.

The bot rules are big alternations that CPython's backtracking engine tries at every position
of every User-Agent: tens of microseconds per string even when nothing matches, which is the
case for almost every browser.  ``ua-parser-rs`` (the native accelerator of ua-parser) wraps
Rust's linear-time regex engine behind its extractor objects; given a loosened copy of a
pattern it answers in about a microsecond whether the exact pattern *might* match.

The loosened copy matches a superset of what the original does, so a "no" is certain and the
exact ``re`` pattern still decides every "maybe": answers are identical, only cheaper.
Loosening drops what Rust's engine lacks or treats differently:

* look-arounds (``(?=``, ``(?!``, ``(?<=``, ``(?<!``) become empty: a condition removed;
* ``\\b`` and ``\\B`` are removed for the same reason;
* ``(?ims)``: case-insensitive (the Python patterns run on lower-cased text, sometimes
  partly masked), ``^``/``$`` at any line edge, ``.`` matching newlines: each only widens.
"""

from __future__ import annotations

import re

import ua_parser_rs

__all__ = ["NativeFirst", "NativeSearch", "Prefilter", "loosen"]

_LOOKAROUNDS = ("(?=", "(?!", "(?<=", "(?<!")


def _group_end(pattern: str, start: int) -> int:
    """Return the index just past the group opening at ``start`` (escapes and classes skipped)."""
    depth = 0
    in_class = False
    i = start
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            i += 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise ValueError(f"unbalanced group at {start} in {pattern[:80]!r}")


def loosen(pattern: str) -> str:
    """Rewrite a Python regex as a Rust regex that matches at least everything it matches."""
    out: list[str] = []
    i = 0
    in_class = False
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            escaped = pattern[i : i + 2]
            if not (not in_class and escaped in ("\\b", "\\B")):
                out.append(escaped)
            i += 2
            continue
        if in_class:
            in_class = char != "]"
            out.append(char)
            i += 1
            continue
        if char == "[":
            in_class = True
            out.append(char)
            i += 1
            if pattern.startswith("^", i):
                out.append("^")
                i += 1
            if pattern.startswith("]", i):
                # A leading "]" is literal in Python; Rust wants it escaped.
                out.append("\\]")
                i += 1
            continue
        if pattern.startswith(_LOOKAROUNDS, i):
            i = _group_end(pattern, i)
            continue
        out.append(char)
        i += 1
    return "(?ims)" + "".join(out)


def _loose(pattern: str | re.Pattern[str], anchored: bool) -> str:
    loose = loosen(pattern.pattern if isinstance(pattern, re.Pattern) else pattern)
    if anchored:
        # For ``re.match``: the original only matches at the start of the text.
        loose = "(?ims)^(?:" + loose[len("(?ims)") :] + ")"
    return loose


class Prefilter:
    """``maybe(text)`` is False only when none of ``patterns`` can match anywhere in ``text``."""

    __slots__ = ("_extractor",)

    def __init__(self, *patterns: str | re.Pattern[str], anchored: bool = False) -> None:
        # The extractor searches for the first of its regexes that matches, all at once; the
        # other fields are the replacement texts ua-parser uses for browser names, unused here.
        self._extractor = ua_parser_rs.UserAgentExtractor(
            [(_loose(pattern, anchored), "x", None, None, None, None) for pattern in patterns]
        )

    def maybe(self, text: str) -> bool:
        return self._extractor.extract(text) is not None


class NativeSearch:
    """``search(text)``: whether ``pattern`` occurs anywhere in ``text`` (``^`` is its start).

    For the patterns of this package, written in the syntax Python's ``re`` and Rust's regex
    share; ``ignore_case`` is Unicode simple case folding, as ``re.IGNORECASE``.
    """

    __slots__ = ("_extractor",)

    def __init__(self, pattern: str, *, ignore_case: bool = True) -> None:
        source = f"(?i){pattern}" if ignore_case else pattern
        self._extractor = ua_parser_rs.UserAgentExtractor([(source, "x", None, None, None, None)])

    def search(self, text: str) -> bool:
        return self._extractor.extract(text) is not None


class NativeFirst:
    """``first(text)``: the name of the first of ``rules`` (in order) whose pattern occurs."""

    __slots__ = ("_extractor",)

    def __init__(self, rules: list[tuple[str, str]], *, ignore_case: bool = True) -> None:
        flag = "(?i)" if ignore_case else ""
        # ua-parser's "family" replacement is returned as given when it holds no "$1".
        self._extractor = ua_parser_rs.UserAgentExtractor(
            [(flag + pattern, name, None, None, None, None) for name, pattern in rules]
        )

    def first(self, text: str) -> str | None:
        found = self._extractor.extract(text)
        return None if found is None else found.family
