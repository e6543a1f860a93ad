"""Age from a Korean resident number's birth date and 7th (gender) digit, with no I/O.

The 7th digit names the century of birth: 9/0 the 1800s, 1/2 (and 5/6 for foreign residents) the
1900s, 3/4 (7/8) the 2000s. A birth given as YYMMDD takes its century from that digit; a full
YYYYMMDD is taken as written. Ages are counted in full years ("만 나이") on the Korean calendar
date of `now_ms`.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

KST = timedelta(hours=9)
CENTURY = {"9": 1800, "0": 1800, "1": 1900, "2": 1900, "5": 1900, "6": 1900,
           "3": 2000, "4": 2000, "7": 2000, "8": 2000}


def birth_date(birth: str, gender_digit: str) -> date | None:
    """The date of birth, or None when the digits do not name one."""
    digits = "".join(ch for ch in birth if "0" <= ch <= "9")  # ASCII digits only
    try:
        if len(digits) == 6 and gender_digit in CENTURY:  # noqa: PLR2004 - YYMMDD
            return date(CENTURY[gender_digit] + int(digits[:2]), int(digits[2:4]), int(digits[4:6]))
        if len(digits) == 8:  # noqa: PLR2004 - YYYYMMDD
            return date(int(digits[:4]), int(digits[4:6]), int(digits[6:8]))
    except ValueError:
        return None
    return None


def age_in_years(born: date, now_ms: int) -> int:
    today = (datetime.fromtimestamp(now_ms / 1000, tz=UTC) + KST).date()
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


def is_younger_than(years: int, birth: str, gender_digit: str, now_ms: int) -> bool:
    """True when the subject is younger than `years` on the Korean date of `now_ms`."""
    born = birth_date(birth, gender_digit)
    return born is not None and age_in_years(born, now_ms) < years
