"""A client's tx_id is unique among its live verifications, whatever their channels and slots."""

from __future__ import annotations

from service.store.keys import Keys
from service.store.store import Store
from tests.conftest import Api, start_body
from tests.test_api_motp import enrol, start


class TestAcrossChannels:
    async def test_sms_then_motp_with_the_same_tx_id_is_4007(self, api: Api):
        """An mOTP verification lives in its user's slot, yet shares the tx_id space of SMS."""
        await enrol(api, "trainee-1")
        status, _ = await api.call("POST", "/v1/verifications", start_body(tx_id="order-42"))
        assert status == 201
        status, second = await start(api, "trainee-1", tx_id="order-42")
        assert (status, second["error"]["code"]) == (409, "4007")

    async def test_two_motp_users_with_the_same_tx_id_is_4007(self, api: Api):
        """Two users' verifications are in different slots; their tx_ids still collide."""
        await enrol(api, "trainee-1")
        await enrol(api, "trainee-2")
        status, first = await start(api, "trainee-1", tx_id="order-43")
        assert status == 201
        status, second = await start(api, "trainee-2", tx_id="order-43")
        assert (status, second["error"]["code"]) == (409, "4007")
        await api.call("POST", f"/v1/verifications/{first['id']}/cancel")
        status, third = await start(api, "trainee-2", tx_id="order-43")
        assert status == 201, "the tx_id is free again once its verification ended"
        claim = api.rt.transactor.plan.tx_claim(await api.rt.store.load(third["id"]))  # type: ignore[arg-type]
        assert claim is not None
        assert await api.rt.store.redis.get(claim.key) == third["id"].encode()


class TestRelease:
    async def test_a_release_only_deletes_its_own_claim(self, store_client):
        """After a claim expired and another verification took it, the first one's release
        leaves the new holder's claim in place."""
        store = Store(store_client, Keys(4))
        await store_client.set("vf:{1}:tx:abc", "new-holder")
        await store.release_claim("vf:{1}:tx:abc", "old-holder")
        assert await store_client.get("vf:{1}:tx:abc") == b"new-holder"
        await store.release_claim("vf:{1}:tx:abc", "new-holder")
        assert await store_client.exists("vf:{1}:tx:abc") == 0
