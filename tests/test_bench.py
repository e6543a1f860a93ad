"""The benchmark's pure parts, so that it cannot rot: its arithmetic, its command lines, and the
baseline's COMMIT arguments, which must keep the layout of veriflow's own (CommitOps)."""

from __future__ import annotations

import pytest

from bench import baseline, cli, phases, procs, seed, stats
from service.store.store import CommitOps


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert stats.percentile(values, 0.5) == 50.0
    assert stats.percentile(values, 0.99) == 99.0
    assert stats.percentile(values, 1.0) == 100.0
    assert stats.percentile([3.0, 1.0, 2.0], 0.0) == 1.0
    assert stats.percentile([], 0.5) == 0.0


def test_summary_and_ratios() -> None:
    result = stats.summary([0.001] * 99 + [0.010], elapsed_s=0.5, errors=2)
    assert result["requests"] == 100
    assert result["rps"] == 200.0
    assert result["p50_ms"] == 1.0
    assert result["p99_ms"] == 1.0
    assert result["max_ms"] == 10.0
    assert result["errors"] == 2
    assert stats.ratio(1, 4) == 0.25
    assert stats.ratio(1, 0) is None
    ours = {"rps": 800.0, "p50_ms": 2.0, "p99_ms": 6.0}
    theirs = {"rps": 1000.0, "p50_ms": 1.0, "p99_ms": 4.0}
    assert stats.compare(ours, theirs) == {"rps": 0.8, "p50": 2.0, "p99": 1.5}


def test_table_aligns_columns() -> None:
    text = stats.table([["a", 1.5, None], ["long name", 1234.5, 7]], ["name", "value", "n"])
    lines = text.splitlines()
    assert lines[0].startswith("name")
    assert set(lines[1]) <= {"-", " "}
    assert "1,234.5" in lines[3]
    assert lines[2].rstrip().endswith("-")  # None shows as a dash
    assert len({len(line.rstrip()) for line in lines[2:]}) == 1


def test_quick_and_full_defaults() -> None:
    quick = cli.parse(["run", "--quick"])
    full = cli.parse(["run", "--timers", "500", "--api-processes", "2", "--skip", "memory"])
    assert quick.timers == 10_000
    assert quick.repeat == 1
    assert (quick.warmup, full.warmup) == (250, 1000)
    assert full.timers == 500
    assert full.timer_spread == 50.0
    assert full.api_counts == [2]
    assert full.skip == {"memory"}
    assert full.scenarios == list(cli.SCENARIOS)
    with pytest.raises(SystemExit):
        cli.parse(["run", "--scenarios", "nonsense"])


def test_command_lines_stay_on_loopback() -> None:
    assert procs.service_args("api", 8123) == [
        procs.sys.executable, "-m", "service", "api", "--host", "127.0.0.1", "--port", "8123"]
    redis = procs.redis_args(6399, procs.ROOT)
    assert redis[redis.index("--bind") + 1] == "127.0.0.1"
    assert redis[redis.index("--appendonly") + 1] == "no"
    env = procs.service_env("redis://127.0.0.1:1/0", "http://127.0.0.1:2/sim")
    assert env["VERIFLOW_API_KEYS"] == f"{procs.CLIENT}:{procs.API_KEY}"
    assert env["VERIFLOW_SIMULATOR_URL"] == "http://127.0.0.1:2/sim"


def test_confirm_items_spend_each_verification_as_documented() -> None:
    made = [("a" * 28, "000999"), ("b" * 28, "999999")]
    wrong = phases.confirm_items(made, "wrong")
    assert [item["id"][0] for item in wrong] == ["a", "b", "a", "b"]  # 3 -> 2 -> 1 attempts left
    assert [item["code"] for item in wrong[:2]] == ["001000", "000000"]  # never the right code
    right = phases.confirm_items(made, "right")
    assert [(item["code"], item["outcome"]) for item in right] == [("000999", "right"), ("999999", "right")]


def test_client_commands_leave_out_idle_timer_claims() -> None:
    before = {"hgetall": 10, "evalsha": 50, "zrangebyscore": 40}
    after = {"hgetall": 30, "evalsha": 110, "zrangebyscore": 60, "xack": 10}
    assert phases.client_commands(before, after, requests=20) == {
        "hgetall": 1.0, "evalsha": 2.0, "xreadgroup": 0.0, "xack": 0.5, "xdel": 0.0}


def test_baseline_commit_arguments_match_veriflows_layout() -> None:
    """The baseline sends the same COMMIT arguments veriflow's CommitOps builds for the step."""
    wrong = CommitOps("r", "t", "o", expected_version=1, new_version=2, ttl_ms=5000,
                      fields={"last_code": "4013", "attempts_left": "2", "@2": "e"})
    sent = baseline.commit_args(1, 5000, {"last_code": "4013", "attempts_left": "2", "@2": "e"})
    assert sent[:-1] == wrong.script_args()[1][:-1]  # the last argument is each commit's own token
    assert len(sent[-1]) == len(wrong.token)
    right = CommitOps("r", "t", "o", expected_version=2, new_version=3, ttl_ms=9000,
                      fields={"state": "verified"}, deleted=["code_hash"],
                      timers_add=[(77, "id|result|77")], timers_remove=["id|session|55"], outbox=[b"{}"],
                      counts=[("l", "sms|code_sent", -1, 0), ("l", "sms|verified", 1, 0)])
    assert baseline.commit_args(2, 9000, {"state": "verified"}, deleted=("code_hash",),
                                zadd=((77, "id|result|77"),), zrem=("id|session|55",),
                                outbox=(b"{}",),
                                counts=(("sms|code_sent", -1, 0), ("sms|verified", 1, 0)))[:-1] == right.script_args()[1][:-1]


def test_load_spec_names_everything_the_generator_needs() -> None:
    options = cli.parse(["run", "--quick"])
    spec = phases.load_spec("veriflow", "confirm", ["http://127.0.0.1:1"], [{"id": "x"}], 8, options)
    assert spec["max_requests"] == 1
    assert spec["max_seconds"] == options.seconds
    assert spec["concurrency"] == 8
    assert spec["api_key"] == procs.API_KEY


def test_benchmark_phones_are_never_magic() -> None:
    """A magic number would make the simulator refuse a step (4022 at confirm, 2910 at start)."""
    assert seed.is_magic("01000004022")
    assert seed.is_magic("01000002910")
    phones = [seed.plain_phone(n) for n in range(12_000)]
    assert not any(seed.is_magic(phone) for phone in phones)
    assert len(set(phones)) == len(phones)
    assert all(len(phone) == 11 and phone.startswith("010") for phone in phones)


def load_row(scenario: str, concurrency: int, vf_cpu: float, base_cpu: float) -> dict[str, object]:
    return {"scenario": scenario, "api_processes": 1, "concurrency": concurrency,
            "veriflow": {"api_cpu_ms_per_request": vf_cpu}, "baseline": {"api_cpu_ms_per_request": base_cpu}}


def test_steps_without_calls_take_off_each_steps_own_provider_calls() -> None:
    load = [load_row("start", 1, 9.0, 9.0), load_row("start", 64, 0.9, 0.25),
            load_row("confirm-wrong", 64, 0.36, 0.27), load_row("flow", 64, 2.0, 0.9)]
    calls = {"subscriber_check_cpu_ms": 0.15, "addon_check_cpu_ms": 0.17}
    rows = {r["step"]: r for r in phases.steps_without_calls(load, calls)}
    assert set(rows) == {"start", "confirm-wrong", "flow"}  # saturated rows only
    assert (rows["start"]["cpu_ms_in_calls"], rows["start"]["cpu_ms_without_calls"]) == (0.15, 0.75)
    assert rows["confirm-wrong"]["cpu_ms_without_calls"] == 0.36
    assert rows["flow"]["provider_calls"] == ["subscriber_check", "addon_check"]
    assert rows["flow"]["cpu_ms_without_calls"] == pytest.approx(1.68)


def test_every_channels_memory_is_held_to_a_kibibyte() -> None:
    def measured(usage: int, growth: float) -> dict[str, float]:
        return {"memory_usage_total": usage, "used_memory_growth": growth, "sample": 20_000}

    report = {"memory": {"sms": measured(890, 1049.0), "ars": measured(716, 777.0), "pass": measured(917, 1100.0),
                         "sms_with_redis_defaults": measured(1461, 1656.0)},
              "timers": {"verifications": 100_000, "used_memory_growth_per_verification": 900.0,
                         "lag_ms": {"p99": 50}, "exactly_once": True}}
    out = cli.targets(report)
    assert (out["memory_sms"]["used_memory_growth"], out["memory_sms"]["over"]) == (900.0, 100_000)
    assert out["memory_sms"]["met"]
    assert out["memory_ars"]["met"]
    assert not out["memory_pass"]["met"]
    assert "memory_sms_with_redis_defaults" not in out
