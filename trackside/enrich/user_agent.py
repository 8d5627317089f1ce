"""Device, browser and OS from the user agent (the `user-agents` package, cached: it is slow)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from user_agents import parse


@dataclass(frozen=True, slots=True)
class UserAgentInfo:
    device: str  # desktop | mobile | tablet | player | other
    browser: str
    os: str


@lru_cache(maxsize=8192)
def parse_user_agent(
    user_agent: str, players: tuple[str, ...] = ("Makapix-Player", "PixelFrame", "Divoom")
) -> UserAgentInfo:
    lowered = user_agent.lower()
    ua = parse(user_agent)
    browser = (ua.browser.family or "Other")[:64]
    os_name = (ua.os.family or "Other")[:64]
    if any(p.lower() in lowered for p in players):
        return UserAgentInfo("player", browser, os_name)
    if not user_agent.startswith("Mozilla/"):
        return UserAgentInfo("other", browser, os_name)
    if ua.is_tablet:
        device = "tablet"
    elif ua.is_mobile:
        device = "mobile"
    else:
        device = "desktop"
    return UserAgentInfo(device, browser, os_name)
