"""The README's "Try it" runs as written: its shell blocks (between the try-it markers), pasted
into one bash, top to bottom, against the `veriflow serve` the first block starts itself, on a
free port (PORT), with this tree's code as the `veriflow` on PATH."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import free_port

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- try-it:begin -->", "<!-- try-it:end -->"
BLOCK = re.compile(r"^```sh\n(.*?)^```$", re.DOTALL | re.MULTILINE)


def try_it_blocks() -> list[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert readme.count(BEGIN) == 1, "one try-it section"
    assert readme.count(END) == 1, "one try-it section"
    section = readme.split(BEGIN, 1)[1].split(END, 1)[0]
    return BLOCK.findall(section)


def test_the_section_is_marked_and_has_no_placeholders():
    blocks = try_it_blocks()
    assert len(blocks) >= 5
    text = "\n".join(blocks)
    assert "$ID" in text
    assert '…"' not in text, "no placeholder value is sent"
    assert "localhost:8080" not in text, "every URL follows $PORT"
    assert "Accept-Language: en" in text
    assert blocks[0].count("veriflow serve") == 1
    assert all("veriflow serve" not in block for block in blocks[1:]), "one server, started once"


def test_the_snippets_run_top_to_bottom_in_one_shell(tmp_path):
    shim = tmp_path / "bin" / "veriflow"
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m service "$@"\n', encoding="utf-8")
    shim.chmod(0o755)
    script = tmp_path / "try-it.sh"
    script.write_text("\n".join(try_it_blocks()), encoding="utf-8")
    env = {key: value for key, value in os.environ.items() if not key.startswith("VERIFLOW_")}
    env.update(PORT=str(free_port()), PATH=f"{shim.parent}{os.pathsep}{env['PATH']}",
               PYTHONPATH=str(ROOT))
    process = subprocess.Popen(["bash", "-e", "-o", "pipefail", str(script)], cwd=tmp_path, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # a server the script left behind
    assert process.returncode == 0, f"stdout:\n{out}\nstderr:\n{err}"
    lines = out.splitlines()
    assert re.search(r"^verification \w+, code [0-9]{6}$", out, re.MULTILINE), out
    assert any("홍길동" in line for line in lines), "the redeemed result names the person"
    assert any(line.startswith("4000 ") for line in lines), "the spent token, in English"
    assert re.search(r"^verified \S{20,}$", out, re.MULTILINE), "ARS: verified with a key token"
    assert "approved" in lines
    assert "verified" in lines, "PASS"
    assert "6707 6036 ['sms']" in lines
    assert "sms pending" in lines
    assert "sms verified" in lines
    assert "dev-key-change-me" in err, "the development key is printed at start-up"
