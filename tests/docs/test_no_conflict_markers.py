"""No file of the project keeps the markers of an unresolved merge.

A conflict block committed by mistake reads as two contradicting tables in a
document and as a syntax error in code; neither is caught by running the
examples when it sits outside a code block.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TEXT_SUFFIXES = {".md", ".py", ".toml", ".cfg", ".txt", ".sh", ".yml", ".yaml", ".html", ".js", ".css"}
SKIPPED_PARTS = {".git", ".venv", "node_modules", "__pycache__", "build", "dist"}
MARKER = re.compile(r"^(<{7} |>{7} |={7}$)", re.MULTILINE)


def _project_files() -> list[Path]:
    return sorted(
        path
        for path in ROOT.rglob("*")
        if path.is_file()
        and path.suffix in TEXT_SUFFIXES
        and not SKIPPED_PARTS.intersection(path.relative_to(ROOT).parts)
        and not any(part.endswith(".egg-info") for part in path.relative_to(ROOT).parts)
    )


def test_no_file_keeps_unresolved_merge_markers() -> None:
    files = _project_files()
    assert any(path.name == "README.md" for path in files)
    found = {}
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        lines = [text.count("\n", 0, match.start()) + 1 for match in MARKER.finditer(text)]
        if lines:
            found[str(path.relative_to(ROOT))] = lines
    assert not found, f"merge conflict markers (file: lines): {found}"
