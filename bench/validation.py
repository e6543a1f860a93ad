"""The cost of request validation per request, before and after the msgspec definitions.

    python -m bench.validation [--rounds N]

"before" is the hand-written validation of the commit before the definitions existed, loaded
from git history (`BEFORE`); "after" is `service.api.validation` as it is now (the msgspec types,
then the rules a type cannot state); "types" is the msgspec step alone. Each is timed on the same
bodies (an SMS start, an mOTP start, a confirm), best of five runs, in one process, so the ratio
is the figure to read. Without git history the "before" column is left out.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import timeit
from pathlib import Path
from types import ModuleType
from typing import Any

from service.api import schemas, validation

BEFORE = "60027ca"  # the last commit whose validation.py was only hand-written
ROOT = Path(__file__).resolve().parent.parent

START = {"channel": "sms", "tx_id": "order-1001", "callback_url": "https://merchant.example.com/veriflow",
         "end_user_ip": "203.0.113.7",
         "subject": {"name": "홍길동", "birth": "19900101", "gender_digit": "1", "phone": "010-1234-5678",
                     "carrier": "SKT"}}
MOTP = {"channel": "motp", "motp_user_id": "trainee-1", "subject": {"name": "홍길동", "phone": "010-1234-5678"}}
CONFIRM = {"code": "123456"}


def before_module() -> ModuleType | None:
    try:
        source = subprocess.run(["git", "show", f"{BEFORE}:service/api/validation.py"], cwd=ROOT,
                                capture_output=True, check=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False, encoding="utf-8") as file:
        file.write(source)
    spec = importlib.util.spec_from_file_location("validation_before", file.name)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def per_call_us(fn: Any, rounds: int) -> float:
    return min(timeit.repeat(fn, number=rounds, repeat=5)) / rounds * 1e6


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=20_000)
    rounds = parser.parse_args(argv).rounds
    old = before_module()
    cases: dict[str, dict[str, Any]] = {
        "SMS start": {
            "after": lambda: validation.start_request(START, allow_private=False),
            "types": lambda: schemas.decode(START, schemas.PersonStart),
            "before": old and (lambda: old.start_request(START, allow_private=False)),
        },
        "mOTP start": {
            "after": lambda: validation.motp_start_request(MOTP, allow_private=False),
            "types": lambda: schemas.decode(MOTP, schemas.MotpStart),
            "before": old and (lambda: old.motp_start_request(MOTP, allow_private=False)),
        },
        "confirm": {
            "after": lambda: validation.code(validation.confirm_body(CONFIRM)),
            "types": lambda: schemas.decode(CONFIRM, schemas.Confirm),
            "before": old and (lambda: old.code(CONFIRM)),
        },
    }
    print(f"{'body':<12}{'before µs':>11}{'after µs':>11}{'types µs':>11}{'after/before':>14}")
    for name, fns in cases.items():
        after = per_call_us(fns["after"], rounds)
        types = per_call_us(fns["types"], rounds)
        if fns["before"]:
            before = per_call_us(fns["before"], rounds)
            print(f"{name:<12}{before:>11.2f}{after:>11.2f}{types:>11.2f}{after / before:>14.2f}")
        else:
            print(f"{name:<12}{'-':>11}{after:>11.2f}{types:>11.2f}{'-':>14}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
