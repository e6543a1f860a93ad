"""The baseline: a bare aiohttp app that sends Redis exactly the commands veriflow sends for each
step (the record's HGETALL, one EVALSHA of veriflow's own COMMIT script with arguments of the
same shape and size, the same timer and outbox writes) and does nothing else: no validation,
no state machine, no crypto, no provider calls. It is the limit of this stack: the same
aiohttp server, redis-py client (with hiredis) and asyncio event loop as veriflow.

  python -m bench.baseline --port P --redis URL

Routes: POST /start, GET /inbox?id=, POST /confirm/{id}/{wrong|right}, POST /redeem, GET /healthz.
"""

from __future__ import annotations

import argparse
import os
import secrets
import time
from typing import Any

import orjson
import redis.asyncio as aioredis
from aiohttp import web

from service.store.keys import Keys
from service.store.scripts import COMMIT

REDIS = web.AppKey("redis", Any)
KEYS = Keys(16)
SESSION_MS = 600_000
RESULT_MS = 600_000
KEEP_MS = 3_600_000
SUBJECT_CHARS = 171  # the size of a sealed subject
CODE_HASH_CHARS = 32
DEFINITION = "0123456789ab"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def commit_args(version: int, ttl_ms: int, fields: dict[str, str], deleted: tuple[str, ...] = (),
                zadd: tuple[tuple[int, str], ...] = (), zrem: tuple[str, ...] = (),
                outbox: tuple[bytes, ...] = (), counts: tuple[tuple[str, int, int], ...] = ()) -> list[Any]:
    """COMMIT's arguments in its counted-group layout (see service/scripts.py), for `keys_of`'s keys
    (one live-counter key per entry of `counts` after the first three)."""
    args: list[Any] = [version, version + 1, ttl_ms, len(fields)]
    for name, value in fields.items():
        args += [name, value]
    args += [len(deleted), *deleted, len(zadd)]
    for score, member in zadd:
        args += [score, member]
    args += [len(zrem), *zrem, len(outbox), *outbox, 0, 0]  # no claims, releases
    args += [0, len(counts)]  # no linked keys, the client's counters
    for index, (name, delta, ttl) in enumerate(counts):
        args += [4 + index, name, delta, ttl]
    return [*args, 0, secrets.token_hex(6)]  # no companion; the commit's token


def keys_of(verification_id: str, counters: int = 0) -> list[str]:
    """The record, the shard's timer set, an outbox stream of the same slot that veriflow's
    dispatcher does not read (its entries are the baseline's, not real SMS), and `counters` times
    the client's live counter of the shard."""
    shard = int(verification_id[:4], 16)
    return [KEYS.record(verification_id), KEYS.timers(shard), f"vf:{{{shard}}}:baseline-outbox",
            *[KEYS.live(shard, "bench")] * counters]


def audit_field(version: int, source: str, dest: str, trigger: str, code: str = "") -> dict[str, str]:
    """The audit trail's field of the size veriflow writes for the step (service/store/audit.py)."""
    return {f"@{version}": f"{now_ms()}|{source}|{dest}|{trigger}|client|{code}|"}


class Baseline:
    def __init__(self, client: Any) -> None:
        self.redis = client
        self.commit = client.register_script(COMMIT)
        self.codes: dict[str, str] = {}

    async def start(self, request: web.Request) -> web.Response:
        await request.read()
        shard = secrets.randbelow(16)
        vid = KEYS.new_id(shard)
        now = now_ms()
        deadline = now + SESSION_MS
        fields = {
            "id": vid, "client_id": "bench", "channel": "sms", "state": "code_sent", "status": "pending",
            "definition": DEFINITION, "created_at": str(now), "expires_at": str(deadline),
            "subject": secrets.token_urlsafe(128)[:SUBJECT_CHARS], "attempts_left": "3",
            "resends_left": "3", "code_generation": "1", "code_hash": secrets.token_hex(CODE_HASH_CHARS // 2),
            **audit_field(1, "", "code_sent", "start"),
        }
        entry = orjson.dumps({"kind": "sms", "id": vid, "gen": 1, "code": secrets.token_urlsafe(34)})
        await self.commit(keys=keys_of(vid, 1), args=commit_args(
            0, SESSION_MS + KEEP_MS, fields, zadd=((deadline, f"{vid}|session|{deadline}"),), outbox=(entry,),
            counts=(("sms|code_sent", 1, 0),)))
        self.codes[vid] = f"{secrets.randbelow(10**6):06d}"
        return web.json_response({"id": vid}, status=201, dumps=_dumps)

    async def inbox(self, request: web.Request) -> web.Response:
        code = self.codes.pop(request.query["id"], None)
        return web.json_response({"messages": [{"code": code}] if code else []}, dumps=_dumps)

    async def confirm(self, request: web.Request) -> web.Response:
        await request.read()
        vid = request.match_info["id"]
        raw = await self.redis.hgetall(KEYS.record(vid))
        version = int(raw[b"version"])
        now = now_ms()
        if request.match_info["outcome"] == "wrong":
            fields = {"last_code": "4013", "attempts_left": str(int(raw[b"attempts_left"]) - 1),
                      **audit_field(version + 1, "code_sent", "code_sent", "confirm", "4013")}
            await self.commit(keys=keys_of(vid), args=commit_args(
                version, int(raw[b"expires_at"]) - now + KEEP_MS, fields))
            return web.json_response({"id": vid, "code": "4013"}, status=422, dumps=_dumps)
        session_due = int(raw[b"expires_at"])
        deadline = now + RESULT_MS
        fields = {"state": "verified", "status": "verified", "last_code": "2000",
                  "verified_at": str(now), "result_expires_at": str(deadline),
                  **audit_field(version + 1, "code_sent", "verified", "confirm", "2000")}
        await self.commit(keys=keys_of(vid, 2), args=commit_args(
            version, RESULT_MS + KEEP_MS, fields, deleted=("code_hash",),
            zadd=((deadline, f"{vid}|result|{deadline}"),), zrem=(f"{vid}|session|{session_due}",),
            counts=(("sms|code_sent", -1, 0), ("sms|verified", 1, 0))))
        return web.json_response({"id": vid, "key_token": vid}, dumps=_dumps)

    async def redeem(self, request: web.Request) -> web.Response:
        vid = orjson.loads(await request.read())["key_token"]
        raw = await self.redis.hgetall(KEYS.record(vid))
        version = int(raw[b"version"])
        fields = {"state": "completed", "status": "completed", "ended_at": str(now_ms()),
                  **audit_field(version + 1, "verified", "completed", "redeem")}
        await self.commit(keys=keys_of(vid, 1), args=commit_args(
            version, KEEP_MS, fields, deleted=("subject",),
            zrem=(f"{vid}|result|{int(raw[b'result_expires_at'])}",), counts=(("sms|verified", -1, 0),)))
        return web.json_response({"result": {"id": vid}}, dumps=_dumps)


async def healthz(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def build_app(redis_url: str) -> web.Application:
    app = web.Application()
    baseline = Baseline(aioredis.Redis.from_url(redis_url))
    app.router.add_post("/start", baseline.start)
    app.router.add_get("/inbox", baseline.inbox)
    app.router.add_post("/confirm/{id}/{outcome}", baseline.confirm)
    app.router.add_post("/redeem", baseline.redeem)
    app.router.add_get("/healthz", healthz)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.baseline")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis", default=os.environ.get("VERIFLOW_REDIS_URL"))
    parser.add_argument("--reuse-port", action="store_true", help="share the port with other baseline processes")
    args = parser.parse_args()
    web.run_app(build_app(args.redis), host="127.0.0.1", port=args.port, print=None, access_log=None,
                reuse_port=args.reuse_port or None)


if __name__ == "__main__":
    main()
