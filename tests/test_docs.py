"""Documentation that is generated or promised: diagrams, codes the machines emit."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from machines.vocabulary import Code
from service.catalog import Catalog

ROOT = Path(__file__).resolve().parent.parent


def test_readme_diagrams_are_current():
    """The README's Mermaid diagrams equal what the machine definitions draw today."""
    spec = importlib.util.spec_from_file_location("diagrams", ROOT / "scripts" / "diagrams.py")
    assert spec is not None
    assert spec.loader is not None
    diagrams = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(diagrams)
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    for channel in diagrams.MACHINES:
        assert f"<!-- diagram:{channel} -->" in text, f"README has no diagram for {channel}"
    assert diagrams.render(text) == text, "run: python scripts/diagrams.py"


def test_every_code_the_service_emits_is_in_the_catalog():
    """Each outcome named in the code has its catalog entry (messages, status, retryability)."""
    catalog = Catalog.load()
    missing = [code.value for code in Code if code.value not in catalog]
    assert missing == []


def test_readme_starts_with_the_two_commands():
    """The README's first fenced block holds exactly two commands: run, then test."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split("```")[1].splitlines()[1:]
    commands = [line for line in block if line.strip()]
    assert len(commands) == 2
    assert "veriflow serve" in commands[0]
    assert commands[1].strip() == "./scripts/test"
