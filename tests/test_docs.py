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


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_magic_numbers_are_current():
    """The README's magic-number tables equal what the catalog and the simulator's rule give today."""
    table = load_script("magic_table")
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert text.count(table.BEGIN) == text.count(table.END) == 1
    assert table.render(text) == text, "run: python scripts/magic_table.py"


def test_the_magic_tables_name_every_row_and_detail_code():
    """Every catalog row and detail code is asked by a magic number or answered by a named rule."""
    from service.simulator.magic import magic_rows  # noqa: PLC0415

    table = load_script("magic_table")
    catalog = Catalog.load()
    documented = ({(r.code, r.variant, r.detail_code) for r in magic_rows(catalog)} | set(table.RULES)
                  | set(table.ROUTING))
    for entry in catalog.entries:
        keys = [(entry.code, entry.variant, d) for d in entry.detail_codes] or [(entry.code, entry.variant, None)]
        for key in keys:
            first_row = (entry.code, None, key[2])  # a code's first row, named without its variant
            assert key in documented or (entry.variant == catalog.get(entry.code).variant
                                         and first_row in documented), key
