"""Reduce a User-Agent string to the three coarse dimensions the dashboards group by.

Parsing is delegated to the ``user-agents`` package (ua-parser regexes underneath), which costs
tens to hundreds of microseconds per string; results are memoised because a site sees the same
few hundred UAs over and over.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import user_agents

__all__ = ["DEFAULT_PLAYERS", "UserAgentInfo", "parse_user_agent"]

DEFAULT_PLAYERS: tuple[str, ...] = ("Makapix-Player", "PixelFrame", "Divoom")

_MAX_LEN = 64
# ua-parser's regexes take ~20 ms on an 8 KB header; real UAs stay well under this length.
_MAX_UA = 512
_OTHER = "Other"

# TVs, set-top boxes and game consoles run real browsers, but counting them as "desktop" (what
# ua-parser's is_pc says for an Xbox) would skew the device split; they go to "other".
_LIVING_ROOM = re.compile(
    r"xbox|playstation|nintendo|smart-?tv|tizen|web0s|webos|hbbtv|netcast|crkey|roku|appletv|"
    r"apple tv|googletv|android tv|\baft[a-z]|bravia|viera|philipstv|\btv safari",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class UserAgentInfo:
    device: str  # "desktop" | "mobile" | "tablet" | "player" | "other"
    browser: str  # family name, e.g. "Chrome", "Mobile Safari", "Edge", "Other"
    os: str  # family name, e.g. "Windows", "Mac OS X", "iOS", "Android", "Other"


def _family(value: str | None) -> str:
    # ua-parser returns free text taken from the UA itself; keep DB columns short and non-empty.
    value = (value or "").strip()
    return value[:_MAX_LEN] if value else _OTHER


def _device(ua: str, parsed: user_agents.parsers.UserAgent) -> str:
    if _LIVING_ROOM.search(ua):
        return "other"
    # Apps and scripts that do not claim to be a browser ("okhttp/4.12", "Dalvik/2.1.0 (Linux;
    # ...)") are not someone at a desktop; old Opera ("Opera/9.80 (...)") is the one real browser
    # family that never sent a "Mozilla/" prefix.
    if not ua.startswith(("Mozilla/", "Opera/")):
        return "other"
    if parsed.is_bot:
        return "other"
    # ua-parser calls any Android UA without "Mobile" a tablet; Opera Mini never says "Mobile"
    # but runs on phones.
    if "Opera Mini" in ua:
        return "mobile"
    if parsed.is_tablet:
        return "tablet"
    if parsed.is_mobile:
        return "mobile"
    if parsed.is_pc:
        return "desktop"
    return "other"


@lru_cache(maxsize=8192)
def _parse_cached(user_agent: str, players: tuple[str, ...]) -> UserAgentInfo:
    ua = user_agent.strip()[:_MAX_UA]
    parsed = user_agents.parse(ua)
    browser = _family(parsed.browser.family)
    os = _family(parsed.os.family)
    lowered = ua.lower()
    # The site's own display clients are counted as their own device class whatever they send.
    if any(player and player.lower() in lowered for player in players):
        return UserAgentInfo(device="player", browser=browser, os=os)
    return UserAgentInfo(device=_device(ua, parsed), browser=browser, os=os)


def parse_user_agent(user_agent: str, players: tuple[str, ...] = DEFAULT_PLAYERS) -> UserAgentInfo:
    """Return the device class and the browser and OS families of a User-Agent string.

    ``players`` are case-insensitive substrings that identify the site's own player clients;
    they are reported as device ``"player"``.  Anything that does not claim to be a browser
    (no ``Mozilla/`` prefix) is device ``"other"``.
    """
    return _parse_cached(user_agent or "", players)
