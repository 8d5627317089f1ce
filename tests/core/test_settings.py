from __future__ import annotations

import ipaddress

import pytest

from trackside.errors import ConfigError
from trackside.settings import RouteRule, Settings


def test_defaults_are_the_embedded_mode():
    s = Settings.from_env({})
    assert s.redis_url is None
    assert s.database_url == "sqlite+aiosqlite:///./trackside.db"


def test_from_env_parses_every_kind():
    s = Settings.from_env(
        {
            "TRACKSIDE_FRONTEND_URL": "http://web:3000",
            "TRACKSIDE_API_URL": "http://api:8000",
            "TRACKSIDE_PORT": "9000",
            "TRACKSIDE_TRUSTED_PROXIES": "10.0.0.0/8, 127.0.0.1",
            "TRACKSIDE_ROUTES": "/media=http://cdn:9000 strip; /ws=http://ws:9001",
            "TRACKSIDE_CAPTURE": "false",
            "TRACKSIDE_BOT_ALLOWLIST": "Makapix-Player, okhttp",
            "TRACKSIDE_CONTENT_RULES": "artwork=/p/[id]|/api/p/[id];clip=/c/[id]",
        }
    )
    assert s.port == 9000
    assert s.trusted_proxies == (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("127.0.0.1/32"))
    assert s.routes == (RouteRule("/media", "http://cdn:9000", True), RouteRule("/ws", "http://ws:9001", False))
    assert s.capture is False
    assert s.bot_allowlist == ("Makapix-Player", "okhttp")
    assert s.content_rules == {"artwork": ("/p/[id]", "/api/p/[id]"), "clip": ("/c/[id]",)}
    assert Settings.from_env(s.to_env()) == s


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"TRACKSIDE_PORT": "eighty"}, "TRACKSIDE_PORT"),
        ({"TRACKSIDE_PORT": "70000"}, "TRACKSIDE_PORT"),
        ({"TRACKSIDE_FRONTEND_URL": "localhost:3000"}, "TRACKSIDE_FRONTEND_URL"),
        ({"TRACKSIDE_DATABASE_URL": "mysql://x"}, "TRACKSIDE_DATABASE_URL"),
        ({"TRACKSIDE_REDIS_URL": "http://x"}, "TRACKSIDE_REDIS_URL"),
        ({"TRACKSIDE_TRUSTED_PROXIES": "10.0.0.0/33"}, "TRACKSIDE_TRUSTED_PROXIES"),
        ({"TRACKSIDE_GEOIP_DB": "/nope.mmdb"}, "TRACKSIDE_GEOIP_DB"),
        ({"TRACKSIDE_CAPTURE": "maybe"}, "TRACKSIDE_CAPTURE"),
        ({"TRACKSIDE_DERIVER": "cron"}, "TRACKSIDE_DERIVER"),
        ({"TRACKSIDE_ROUTES": "media=http://x"}, "TRACKSIDE_ROUTES"),
        ({"TRACKSIDE_FLUSH_INTERVAL": "-1"}, "TRACKSIDE_FLUSH_INTERVAL"),
        ({"TRACKSIDE_EVENT_RULES": "register=signup"}, "TRACKSIDE_EVENT_RULES"),
    ],
)
def test_bad_values_name_the_variable(env, named):
    with pytest.raises(ConfigError, match=named):
        Settings.from_env(env)


def test_repr_hides_the_secret():
    assert "topsecret" not in repr(Settings(jwt_secret="topsecret"))


def test_repr_and_errors_hide_the_passwords_in_urls():
    shown = repr(
        Settings(
            database_url="postgresql+asyncpg://trackside:hunter2@db.internal:5432/trackside",
            redis_url="redis://:s3cret@redis.internal:6379/0",
        )
    )
    assert "hunter2" not in shown and "s3cret" not in shown
    assert "database_url='postgresql+asyncpg://trackside:***@db.internal:5432/trackside'" in shown
    assert "redis_url='redis://:***@redis.internal:6379/0'" in shown
    with pytest.raises(ConfigError) as wrong_scheme:
        Settings.from_env({"TRACKSIDE_DATABASE_URL": "postgresql://trackside:hunter2@db.internal/trackside"})
    assert "hunter2" not in str(wrong_scheme.value)
    assert "postgresql://trackside:***@db.internal/trackside" in str(wrong_scheme.value)
