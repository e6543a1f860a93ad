"""The second error dialect through the API (contract section 2), row by row over the mapping.

`clients: {acme: {error_dialect: xsolla}}`: acme's envelopes carry in `code` the Xsolla code that
config/error_dialects.yaml maps (veriflow's own where it maps none) and always veriflow's own in
`veriflow_code`; every other field is what any client gets. globex, with no dialect, is unchanged.
Errors answered before the caller is known (401 4101) are veriflow's alone. The configuration is
validated: an unknown dialect names its key.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import cache
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import yaml

from service.api.envelope import render
from service.catalog import Catalog
from service.clock import ManualClock
from service.errors import ApiError
from service.runtime import Runtime, build_runtime
from service.settings import ConfigError, load
from service.store.client import StoreInfo
from tests.conftest import OTHER_KEY, Api, make_settings
from tests.reach import CASES, UNREACHABLE, Key

DIALECTS_PATH = Path(__file__).resolve().parent.parent / "config" / "error_dialects.yaml"


@cache
def mapping() -> dict[str, str]:
    return dict(yaml.safe_load(DIALECTS_PATH.read_text(encoding="utf-8"))["xsolla"])


def case_for(address: str) -> Key:
    """A producer of the row `address` (`code` or `code/variant`), with any detail code."""
    code, _, variant = address.partition("/")
    keys = sorted((k for k in CASES if k[0] == code and k[1] == (variant or None)),
                  key=lambda k: k[2] or "")
    catalog = Catalog.load()
    if not keys and not variant:  # a code's first row, named without its variant
        first = catalog.get(code).variant
        keys = sorted(k for k in CASES if k[0] == code and k[1] == first)
    assert keys, address
    return keys[0]


def params() -> list[Any]:
    return [pytest.param(address, xsolla,
                         marks=[pytest.mark.xfail(strict=True, reason=UNREACHABLE[case_for(address)])]
                         if case_for(address) in UNREACHABLE else [], id=address)
            for address, xsolla in mapping().items()]


@pytest.fixture
async def store_client() -> AsyncIterator[Any]:
    client = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    yield client
    await client.aclose()


@pytest.fixture
async def runtime(store_client: Any, clock: ManualClock) -> AsyncIterator[Runtime]:
    """The test runtime, with acme speaking the Xsolla dialect."""
    settings = make_settings(allow_private_callbacks=True, error_dialects={"acme": "xsolla"})
    rt = await build_runtime(settings, clock=clock, client=store_client, store_info=StoreInfo("test", durable=False))
    yield rt
    await rt.provider_sessions.close()
    await rt.callbacks.close()


class TestXsollaClient:
    @pytest.mark.parametrize(("address", "xsolla"), params())
    async def test_each_mapped_row_answers_its_xsolla_code(self, api: Api, address: str, xsolla: str):
        """Row by row: `code` is the mapped Xsolla code, `veriflow_code` veriflow's; the rest as ever."""
        key = case_for(address)
        status, body = await CASES[key].produce(api, {})
        error = body["error"]
        if key[0] == "4101":  # no client is known before the key is checked: veriflow's own
            assert (status, error["code"], "veriflow_code" in error) == (401, "4101", False)
            return
        assert (error["code"], error["veriflow_code"], error["detail_code"]) == (xsolla, key[0], key[2])
        entry = Catalog.load().get(key[0], key[1])
        assert error["message"] == entry.message("ko", key[2])
        assert error["retryable"] is entry.retryable
        assert set(error) == {"code", "veriflow_code", "detail_code", "message", "description", "retryable"}

    async def test_an_unmapped_code_keeps_veriflows_code_in_both(self, api: Api):
        """2910/subscriber has no Xsolla equivalent: its own code, in `code` and `veriflow_code`."""
        status, body = await CASES["2910", "subscriber", None].produce(api, {})
        assert (status, body["error"]["code"], body["error"]["veriflow_code"]) == (422, "2910", "2910")
        assert body["verification"]["last_code"] == "2910", "the verification keeps veriflow's codes"

    async def test_the_variant_picks_the_mapping(self, api: Api):
        """2910/code_mismatch maps (300-006), its sibling row does not."""
        status, body = await CASES["2910", "code_mismatch", None].produce(api, {})
        assert (status, body["error"]["code"], body["error"]["veriflow_code"]) == (422, "300-006", "2910")
        assert body["error"]["retryable"] is True

    async def test_a_client_without_a_dialect_is_unchanged(self, api: Api):
        """globex speaks veriflow only: no veriflow_code, the code itself in `code`."""
        status, body = await api.call("POST", "/v1/verifications/0000ffffffffffffffffffffffff/confirm",
                                      {"code": "123456"}, key=OTHER_KEY)
        assert (status, body["error"]["code"]) == (404, "4018")
        assert "veriflow_code" not in body["error"]
        status, body = await api.call("POST", "/v1/verifications/0000ffffffffffffffffffffffff/confirm",
                                      {"code": "123456"})
        assert (status, body["error"]["code"], body["error"]["veriflow_code"]) == (404, "010-014", "4018")


class TestRendering:
    def test_every_mapped_row_renders_its_dialect_code(self):
        """The renderer itself, over the whole table (4101 included, which the API answers before
        it knows the client)."""
        catalog = Catalog.load()
        for address, xsolla in mapping().items():
            code, _, variant = address.partition("/")
            response = render(ApiError(code, variant=variant or None), catalog, None, "xsolla")
            assert response.body is not None
            error = yaml.safe_load(bytes(response.body))["error"]  # JSON is YAML
            assert (error["code"], error["veriflow_code"]) == (xsolla, code), address


class TestConfiguration:
    def write(self, tmp_path: Path, text: str) -> dict[str, str]:
        path = tmp_path / "config.yaml"
        path.write_text(text, encoding="utf-8")
        return {"VERIFLOW_CONFIG": str(path)}

    def test_clients_name_their_dialect(self, tmp_path: Path):
        settings = load(self.write(tmp_path, "clients: {acme: {error_dialect: xsolla}, globex: {}}\n"))
        assert settings.error_dialects == {"acme": "xsolla"}
        assert load({}).error_dialects == {}

    @pytest.mark.parametrize(("text", "key"), [
        ("clients: {acme: {error_dialect: klingon}}", "clients.acme.error_dialect"),
        ("clients: {acme: {error_dialect: [xsolla]}}", "clients.acme.error_dialect"),
        ("clients: {acme: xsolla}", "clients.acme"),
        ("clients: [acme]", "clients"),
    ])
    def test_an_unknown_dialect_names_its_key(self, tmp_path: Path, text: str, key: str):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            load(self.write(tmp_path, text + "\n"))
