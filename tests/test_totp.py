"""TOTP as the service computes it: RFC 6238 Appendix B (SHA1 rows), the window, the URI."""

from __future__ import annotations

import pyotp
import pytest

from service.motp import totp

RFC_KEY = b"12345678901234567890"  # the SHA1 seed of RFC 6238 Appendix B


@pytest.mark.parametrize(("unix_time", "expected"), [
    (59, "94287082"),
    (1111111109, "07081804"),
    (1111111111, "14050471"),
    (1234567890, "89005924"),
    (2000000000, "69279037"),
    (20000000000, "65353130"),
])
def test_rfc6238_appendix_b_sha1(unix_time, expected):
    """The reference values: 30-second steps, 8 digits, HMAC-SHA1."""
    step = totp.time_step(unix_time * 1000, 30)
    assert totp.hotp(RFC_KEY, step, digits=8) == expected


def test_six_digit_codes_are_the_last_six_of_the_reference():
    """The service's 6 digits are the same truncation, modulo 10^6 (RFC 4226 Appendix D)."""
    assert totp.hotp(RFC_KEY, totp.time_step(59_000, 30)) == "287082"


class TestWindow:
    NOW_MS = 1_700_000_000_000

    def test_codes_within_the_window_match_their_step(self):
        """One step either side is accepted (phone clock drift), and the match names its step."""
        current = totp.time_step(self.NOW_MS, 60)
        for offset in (-1, 0, 1):
            code = totp.hotp(RFC_KEY, current + offset)
            assert totp.matching_step(RFC_KEY, code, self.NOW_MS, 60, window=1) == current + offset

    def test_codes_outside_the_window_or_malformed_do_not_match(self):
        """Two steps away, a shorter code, or another key: no step."""
        current = totp.time_step(self.NOW_MS, 60)
        assert totp.matching_step(RFC_KEY, totp.hotp(RFC_KEY, current + 2), self.NOW_MS, 60, window=1) is None
        assert totp.matching_step(RFC_KEY, totp.hotp(RFC_KEY, current)[:5], self.NOW_MS, 60, window=1) is None
        assert totp.matching_step(b"another key 12345678", totp.hotp(RFC_KEY, current), self.NOW_MS, 60, 0) is None

    def test_a_standard_library_agrees(self):
        """pyotp, as authenticator apps compute it, gives the code the service expects."""
        key = bytes(range(20))
        uri = totp.otpauth_uri(key, "veriflow", "trainee 1", 60)
        app = pyotp.parse_uri(uri)
        assert isinstance(app, pyotp.TOTP)
        assert (app.interval, app.digits, app.issuer, app.name) == (60, 6, "veriflow", "trainee 1")
        assert app.byte_secret() == key
        code = app.at(self.NOW_MS // 1000)
        assert totp.matching_step(key, code, self.NOW_MS, 60, 0) == totp.time_step(self.NOW_MS, 60)
