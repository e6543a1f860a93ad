"""Configuration: defaults, VERIFLOW_CONFIG merge, VERIFLOW_* variables, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from machines.vocabulary import Channel
from service.settings import ConfigError, load


class TestSettings:
    def test_defaults_carry_the_source_caps(self):
        """Without any configuration: 3 attempts, 3 resends, 10-minute SMS window, 10-minute token."""
        settings = load({})
        policy = settings.policy(Channel.SMS)
        assert (policy.max_verify_attempts, policy.max_resends, policy.session_ttl_s) == (3, 3, 600)
        assert (settings.result_ttl_s, settings.record_ttl_s) == (600, 3600)
        assert settings.allow_private_callbacks is False
        assert settings.redis_url is None
        assert not settings.api_keys_from_env

    def test_config_file_and_environment_override(self, tmp_path: Path):
        """VERIFLOW_CONFIG merges over the defaults key by key; variables set the rest."""
        path = tmp_path / "veriflow.yaml"
        path.write_text("channels:\n  sms: {max_resends: 5}\nresult_ttl_s: 60\n", encoding="utf-8")
        settings = load({"VERIFLOW_CONFIG": str(path), "VERIFLOW_REDIS_URL": "redis://127.0.0.1:1/2",
                         "VERIFLOW_API_KEYS": "a:aaaaaaaa, b:bbbbbbbb"})
        assert settings.sms.max_resends == 5
        assert settings.sms.max_verify_attempts == 3, "untouched keys keep their default"
        assert settings.result_ttl_s == 60
        assert settings.redis_url == "redis://127.0.0.1:1/2"
        assert settings.api_keys == {"a": "aaaaaaaa", "b": "bbbbbbbb"}

    @pytest.mark.parametrize(("yaml_text", "message"), [
        ("result_ttl_s: 0\n", "result_ttl_s must be at least 1"),
        ("channels:\n  sms: {code_length: 3}\n", "channels.sms.code_length must be between 4 and 10"),
        ("callbacks: {allow_private_networks: 'yes'}\n", "callbacks.allow_private_networks must be true or false"),
        ("channels:\n  sms: {max_verify_attempts: three}\n", "must be a whole number"),
        ("- a list\n", "must hold a mapping"),
        ("key: [unclosed\n", "cannot read configuration file"),
    ])
    def test_bad_values_name_the_key(self, tmp_path: Path, yaml_text: str, message: str):
        """A bad value stops start-up with a message naming the key."""
        path = tmp_path / "bad.yaml"
        path.write_text(yaml_text, encoding="utf-8")
        with pytest.raises(ConfigError, match=message):
            load({"VERIFLOW_CONFIG": str(path)})

    @pytest.mark.parametrize(("name", "value"), [
        ("VERIFLOW_REDIS_URL", "http://localhost"),
        ("VERIFLOW_API_KEYS", "no-colon"),
        ("VERIFLOW_API_KEYS", "a:short"),
        ("VERIFLOW_API_KEYS", "a:aaaaaaaa,a:bbbbbbbb"),
    ])
    def test_bad_variables_are_refused(self, name: str, value: str):
        """Variables are validated too."""
        with pytest.raises(ConfigError, match=name):
            load({name: value})
