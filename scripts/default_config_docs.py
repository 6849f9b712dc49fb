"""Rewrite the copies of the default config in the docs from ``python -m sim.run
--print-default-config``: ``.venv/bin/python scripts/default_config_docs.py`` (``--check``: only
say which copies differ, exit 1 if any). A copy is a ```toml block that starts with the default
file's first line; tests/test_project.py checks that every copy is current."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COPIES = (ROOT / "docs" / "config.md", ROOT / "docs" / "index.md")
FIRST_LINE = "# QuantPipe configuration: every field at its default"
BLOCK = re.compile(r"(```toml\n)(" + re.escape(FIRST_LINE) + r".*?)(```)", re.S)


def printed_default() -> str:
    """What the command prints."""
    return subprocess.run([sys.executable, "-m", "sim.run", "--print-default-config"],
                          cwd=ROOT, capture_output=True, text=True, check=True).stdout


def copies(text: str) -> list[str]:
    """The default-config blocks of a page."""
    return [match.group(2) for match in BLOCK.finditer(text)]


def main(argv: list[str]) -> int:
    default = printed_default()
    stale = []
    for page in COPIES:
        text = page.read_text()
        if not copies(text):
            raise SystemExit(f"{page}: no copy of the default config (a ```toml block starting "
                             f"{FIRST_LINE!r})")
        current = BLOCK.sub(lambda m: m.group(1) + default + m.group(3), text)
        if current != text:
            stale.append(page)
            if "--check" not in argv:
                page.write_text(current)
    verb = "differs" if "--check" in argv else "rewritten"
    for page in stale:
        print(f"{page.relative_to(ROOT)}: {verb}")
    return 1 if stale and "--check" in argv else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
