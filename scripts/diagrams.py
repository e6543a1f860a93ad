"""Rewrite the Mermaid diagrams in README.md from the machine definitions.

Run `python scripts/diagrams.py` after changing a machine; a test fails while they are stale.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from machines.channels import MACHINES
from machines.diagram import mermaid

README = Path(__file__).resolve().parent.parent / "README.md"


def block(channel: str) -> str:
    return f"<!-- diagram:{channel} -->\n```mermaid\n{mermaid(MACHINES[channel])}\n```\n<!-- /diagram:{channel} -->"  # type: ignore[index]


def render(text: str) -> str:
    for channel in MACHINES:
        pattern = re.compile(rf"<!-- diagram:{channel} -->.*?<!-- /diagram:{channel} -->", re.DOTALL)
        text = pattern.sub(lambda _, c=channel: block(c), text)
    return text


if __name__ == "__main__":
    README.write_text(render(README.read_text(encoding="utf-8")), encoding="utf-8")
