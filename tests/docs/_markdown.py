"""Fenced code examples of the project's markdown, and the markers that steer them.

An example is a fenced block whose info string starts with ``python`` or
``sh``; any other fence (output, diagrams, URL grammars) is prose. An HTML
comment on the line right before a fence steers it (invisible when rendered):

- ``<!-- example: skip REASON -->``: not run; the reason is required.
- ``<!-- example: wsgi GET /path => EXPECTED | EXPECTED ... -->`` after the
  fence (on the line right after it): the block must define a WSGI ``app``;
  one request per expected text is sent through a WSGI client that carries
  the cookies, and each answer must be 200 and contain its text.

Python blocks of one file run in order in one namespace, as a reader reads
them; shell blocks run in ``bash -euo pipefail``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Example", "WsgiCheck", "parse_examples"]

_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
_MARKER = re.compile(r"^\s*<!--\s*example:\s*(?P<body>.*?)\s*-->\s*$")
_WSGI = re.compile(r"^wsgi\s+GET\s+(?P<path>\S+)\s*=>\s*(?P<expect>.+)$")
RUNNABLE = ("python", "sh")


@dataclass(frozen=True, slots=True)
class WsgiCheck:
    """Requests to send to the block's ``app``, one per expected text."""

    path: str
    expected: tuple[str, ...]


@dataclass(slots=True)
class Example:
    """One fenced block: where it is, its language and what to do with it."""

    path: Path
    line: int  # 1-based line of the opening fence
    language: str
    code: str
    skip: str | None = None
    wsgi: WsgiCheck | None = None

    @property
    def where(self) -> str:
        return f"{self.path.name}:{self.line}"


class MarkerError(ValueError):
    """A marker that cannot be understood: a typo must not silently skip checks."""


def _marker(line: str) -> str | None:
    found = _MARKER.match(line)
    return found.group("body") if found else None


def parse_examples(path: Path, text: str | None = None) -> list[Example]:
    """Every runnable fenced block of ``path`` (or of ``text``), in order."""
    lines = (path.read_text(encoding="utf-8") if text is None else text).splitlines()
    examples: list[Example] = []
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        fence, info = opening.group("fence"), opening.group("info").strip()
        end = index + 1
        while end < len(lines) and not lines[end].strip().startswith(fence):
            end += 1
        if end >= len(lines):
            raise MarkerError(f"{path.name}:{index + 1}: fence never closed")
        language = info.split()[0] if info else ""
        before = _marker(lines[index - 1]) if index else None
        after = _marker(lines[end + 1]) if end + 1 < len(lines) else None
        if language in RUNNABLE:
            example = Example(
                path=path,
                line=index + 1,
                language=language,
                code="\n".join(lines[index + 1 : end]) + "\n",
            )
            _apply(example, before, after)
            examples.append(example)
        elif before is not None or after is not None:
            raise MarkerError(f"{path.name}:{index + 1}: marker on a {language or 'plain'} fence")
        index = end + 1
    return examples


def _apply(example: Example, before: str | None, after: str | None) -> None:
    if before is not None:
        if not before.startswith("skip"):
            raise MarkerError(f"{example.where}: unknown marker before the fence: {before!r}")
        reason = before[len("skip") :].strip(" -—:")
        if not reason:
            raise MarkerError(f"{example.where}: a skipped example needs a reason")
        example.skip = reason
    if after is not None:
        found = _WSGI.match(after)
        if found is None or example.language != "python":
            raise MarkerError(f"{example.where}: unknown marker after the fence: {after!r}")
        expected = tuple(part.strip() for part in found.group("expect").split("|"))
        if not all(expected):
            raise MarkerError(f"{example.where}: an empty expected text")
        example.wsgi = WsgiCheck(found.group("path"), expected)
