"""Device class, browser and OS families from the User-Agent string."""

from __future__ import annotations

import pytest

from tests.core.ua_samples import BOT_UAS, BROWSER_UAS
from trackside.enrich import user_agent
from trackside.enrich.user_agent import UserAgentInfo, parse_user_agent

WEBKIT = "AppleWebKit/605.1.15 (KHTML, like Gecko)"
BLINK = "AppleWebKit/537.36 (KHTML, like Gecko)"
CHROME_WIN = f"Mozilla/5.0 (Windows NT 10.0; Win64; x64) {BLINK} Chrome/124.0.0.0 Safari/537.36"

CASES = [
    # Desktop
    (CHROME_WIN, "desktop", "Chrome", "Windows"),
    (CHROME_WIN + " Edg/124.0.2478.80", "desktop", "Edge", "Windows"),
    (CHROME_WIN + " OPR/110.0.0.0", "desktop", "Opera", "Windows"),
    (
        f"Mozilla/5.0 (Windows NT 10.0; Win64; x64) {BLINK} Chrome/122.0.0.0 YaBrowser/24.4.0.0 Safari/537.36",
        "desktop",
        "Yandex Browser",
        "Windows",
    ),
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0",
        "desktop",
        "Firefox",
        "Windows",
    ),
    (
        "Mozilla/5.0 (Windows NT 10.0; WOW64; Trident/7.0; rv:11.0) like Gecko",
        "desktop",
        "Internet Explorer",
        "Windows",
    ),
    (
        f"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) {WEBKIT} Version/17.4.1 Safari/605.1.15",
        "desktop",
        "Safari",
        "Mac",
    ),
    (f"Mozilla/5.0 (X11; Linux x86_64) {BLINK} Chrome/124.0.0.0 Safari/537.36", "desktop", "Chrome", "GNU/Linux"),
    (
        "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
        "desktop",
        "Firefox",
        "GNU/Linux",
    ),
    (
        f"Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) {BLINK} Chrome/124.0.0.0 Safari/537.36",
        "desktop",
        "Chrome",
        "Chrome OS",
    ),
    # Phones
    (
        f"Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) {WEBKIT} Version/17.4.1 Mobile/15E148 Safari/604.1",
        "mobile",
        "Safari",
        "iOS",
    ),
    (
        f"Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) {WEBKIT} CriOS/124.0.6367.88 Mobile/15E148 "
        "Safari/604.1",
        "mobile",
        "Chrome",
        "iOS",
    ),
    (
        f"Mozilla/5.0 (Linux; Android 14; Pixel 8) {BLINK} Chrome/124.0.6367.82 Mobile Safari/537.36",
        "mobile",
        "Chrome",
        "Android",
    ),
    (
        f"Mozilla/5.0 (Linux; Android 14; SAMSUNG SM-S921B) {BLINK} SamsungBrowser/24.0 Chrome/117.0.0.0 "
        "Mobile Safari/537.36",
        "mobile",
        "Samsung Browser",
        "Android",
    ),
    ("Mozilla/5.0 (Android 14; Mobile; rv:125.0) Gecko/125.0 Firefox/125.0", "mobile", "Firefox", "Android"),
    (
        f"Mozilla/5.0 (Linux; Android 13; SM-A536B Build/TP1A.220624.014; wv) {BLINK} Version/4.0 "
        "Chrome/124.0.6367.82 Mobile Safari/537.36 [FB_IAB/FB4A;FBAV/461.0.0.44.106;]",
        "mobile",
        "Facebook",
        "Android",
    ),
    (
        "Opera/9.80 (Android; Opera Mini/36.2.2254/119.132; U; id) Presto/2.12.423 Version/12.16",
        "mobile",
        "Opera Mini",
        "Android",
    ),
    # Tablets
    (
        f"Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) {WEBKIT} Version/17.4 Mobile/15E148 Safari/604.1",
        "tablet",
        "Safari",
        "iOS",
    ),
    (f"Mozilla/5.0 (Linux; Android 13; SM-X700) {BLINK} Chrome/124.0.0.0 Safari/537.36", "tablet", "Chrome", "Android"),
    (
        f"Mozilla/5.0 (Linux; Android 11; KFTRWI) {BLINK} Silk/124.2.1 like Chrome/124.0.6367.82 Safari/537.36",
        "tablet",
        "Silk",
        "Android",
    ),
    # The site's own players, whatever they look like
    ("Makapix-Player/1.4.2 (ESP32-S3; fw 2024.05)", "player", "Other", "Other"),
    ("PixelFrame/2.0 CFNetwork/1490.0.4 Darwin/23.2.0", "player", "PixelFrame", "iOS"),
    ("divoom-pixoo/64", "player", "Other", "Other"),
    # Apps, libraries, bots, TVs and consoles
    ("okhttp/4.12.0", "other", "okhttp", "Other"),
    ("curl/8.4.0", "other", "curl", "Other"),
    ("python-requests/2.31.0", "other", "Python Requests", "Other"),
    ("Dalvik/2.1.0 (Linux; U; Android 13; Pixel 7 Build/TQ3A.230901.001)", "other", "Android", "Android"),
    ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", "other", "Googlebot", "Other"),
    (
        f"Mozilla/5.0 (SMART-TV; Linux; Tizen 6.0) {BLINK} 76.0.3809.146/6.0 TV Safari/537.36",
        "other",
        "Safari",
        "Tizen",
    ),
    (
        f"Mozilla/5.0 (Windows NT 10.0; Win64; x64; Xbox; Xbox Series X) {BLINK} Chrome/48.0.2564.82 Safari/537.36 "
        "Edge/20.02",
        "other",
        "Edge",
        "Windows",
    ),
    ("", "other", "Other", "Other"),
]


@pytest.mark.parametrize(
    ("ua", "device", "browser", "os"),
    [pytest.param(*case, id=f"{case[1]}-{case[2]}-{i:02d}") for i, case in enumerate(CASES)],
)
def test_exact_device_browser_os(ua, device, browser, os):
    assert parse_user_agent(ua) == UserAgentInfo(device=device, browser=browser, os=os)


def test_players_are_configurable():
    ua = "Makapix-Player/1.4.2 (ESP32-S3; fw 2024.05)"
    assert parse_user_agent(ua, ("Some-Other-Frame",)).device == "other"
    assert parse_user_agent(CHROME_WIN + " KioskFrame/3", ("kioskframe",)).device == "player"
    assert parse_user_agent(CHROME_WIN, ("",)).device == "desktop"


def test_every_sample_gives_short_families_and_a_known_device():
    devices = {"desktop", "mobile", "tablet", "player", "other"}
    for ua in BROWSER_UAS + BOT_UAS:
        info = parse_user_agent(ua)
        assert info.device in devices, ua
        assert 0 < len(info.browser) <= 64, ua
        assert 0 < len(info.os) <= 64, ua


def test_families_are_truncated():
    info = parse_user_agent("Mozilla/5.0 (compatible; " + "Z" * 200 + "/1.0)")
    assert len(info.browser) <= 64
    assert len(info.os) <= 64


def test_non_browser_apps_are_never_desktop():
    for ua in ("Java/17.0.2", "Go-http-client/2.0", "Wget/1.21.4", "WhatsApp/2.23.20.0"):
        assert parse_user_agent(ua).device == "other", ua


def test_info_is_immutable():
    info = parse_user_agent(CHROME_WIN)
    with pytest.raises(AttributeError):
        info.device = "mobile"  # type: ignore[misc]


def test_results_are_cached():
    ua = CHROME_WIN + " CacheProbe/1"
    parse_user_agent(ua)
    hits = user_agent._CACHE.hits
    assert parse_user_agent(ua) == parse_user_agent(ua)
    assert user_agent._CACHE.hits == hits + 2
