"""Device class, browser and OS families from the User-Agent string."""

from __future__ import annotations

import pytest

from tests.core.ua_samples import BOT_UAS, BROWSER_UAS
from trackside.enrich import user_agent
from trackside.enrich.fifo_cache import S3FifoCache
from trackside.enrich.user_agent import UserAgentInfo, canonical_browser, canonical_os, parse_user_agent

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
    # An app on a phone is on a phone.
    ("Dalvik/2.1.0 (Linux; U; Android 13; Pixel 7 Build/TQ3A.230901.001)", "mobile", "Android", "Android"),
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


# Tablets whose browser says "Mobile": only the model tells.
TABLETS_SAYING_MOBILE = [
    f"Mozilla/5.0 (Linux; Android 13; SM-T220) {BLINK} Chrome/124.0.0.0 Mobile Safari/537.36",
    f"Mozilla/5.0 (Linux; Android 12; SM-X205) {BLINK} SamsungBrowser/24.0 Chrome/117.0.0.0 Mobile Safari/537.36",
    f"Mozilla/5.0 (Linux; Android 11; Lenovo TB-X606F) {BLINK} Chrome/124.0.0.0 Mobile Safari/537.36",
    f"Mozilla/5.0 (Linux; Android 10; Lenovo TB-8505F) {BLINK} Chrome/120.0.0.0 Mobile Safari/537.36",
    f"Mozilla/5.0 (Linux; Android 12; 22081283G Build/SKQ1; Xiaomi Pad 5) {BLINK} Chrome/124.0 Mobile Safari/537.36",
    f"Mozilla/5.0 (Linux; Android 9; BAH2-W19) {BLINK} Chrome/110.0.0.0 Mobile Safari/537.36",
    f"Mozilla/5.0 (Linux; Android 10; AGS3-L09) {BLINK} Chrome/110.0.0.0 Mobile Safari/537.36",
    f"Mozilla/5.0 (Linux; Android 9; KFMAWI) {BLINK} Silk/124.1.1 like Chrome/124.0.0.0 Mobile Safari/537.36",
    f"Mozilla/5.0 (Linux; Android 14; Pixel Tablet) {BLINK} Chrome/124.0.0.0 Mobile Safari/537.36",
    f"Mozilla/5.0 (Linux; Android 13; Galaxy Tab S8) {BLINK} Chrome/124.0.0.0 Mobile Safari/537.36",
]


@pytest.mark.parametrize("ua", TABLETS_SAYING_MOBILE)
def test_tablet_models_win_over_the_mobile_token(ua):
    assert parse_user_agent(ua).device == "tablet"


def test_client_hints_decide_the_device_and_platform():
    reduced = f"Mozilla/5.0 (Linux; Android 10; K) {BLINK} Chrome/124.0.0.0 Mobile Safari/537.36"
    # Chromium's reduced UA hides the model; the hints do not.
    assert parse_user_agent(reduced, mobile_hint="?1", platform_hint='"Android"').device == "mobile"
    tablet = f"Mozilla/5.0 (Linux; Android 10; K) {BLINK} Chrome/124.0.0.0 Safari/537.36"
    assert parse_user_agent(tablet, mobile_hint="?0", platform_hint='"Android"').device == "tablet"
    # A tablet model beats "?1" (some tablet browsers ask for the phone layout).
    samsung = f"Mozilla/5.0 (Linux; Android 13; SM-T220) {BLINK} Chrome/124.0.0.0 Mobile Safari/537.36"
    assert parse_user_agent(samsung, mobile_hint="?1", platform_hint='"Android"').device == "tablet"
    # "Request desktop site" on a Chromebook or a Mac keeps the platform hint.
    linux = f"Mozilla/5.0 (X11; Linux x86_64) {BLINK} Chrome/124.0.0.0 Safari/537.36"
    assert parse_user_agent(linux, mobile_hint="?0", platform_hint='"Chrome OS"') == UserAgentInfo(
        "desktop", "Chrome", "Chrome OS"
    )
    mac = f"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) {BLINK} Chrome/124.0.0.0 Safari/537.36"
    assert parse_user_agent(mac, mobile_hint="?0", platform_hint='"macOS"') == UserAgentInfo("desktop", "Chrome", "Mac")
    # Without hints, a Chromebook still says CrOS and is a desktop on Chrome OS, not Android.
    crosbook = f"Mozilla/5.0 (X11; CrOS aarch64 15633.69.0) {BLINK} Chrome/124.0.0.0 Safari/537.36"
    assert parse_user_agent(crosbook) == UserAgentInfo("desktop", "Chrome", "Chrome OS")
    # Hints are part of the cache key: the same string with other hints is parsed again.
    assert parse_user_agent(reduced).device == "mobile"
    assert parse_user_agent(reduced, mobile_hint="?0", platform_hint='"Android"').device == "tablet"


def test_ipados_saying_mac_is_a_desktop_without_hints():
    # iPadOS Safari sends a Mac string and no client hints: nothing in the request tells them apart.
    ipad = f"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) {WEBKIT} Version/17.4 Safari/605.1.15"
    assert parse_user_agent(ipad) == UserAgentInfo("desktop", "Safari", "Mac")


@pytest.mark.parametrize(
    ("ua", "device"),
    [
        (
            "Microsoft Office Word/16.78.1008 (Mac OS/14.0; Desktop; en-US; NonAppStore; Apple/Mac14,6)",
            "desktop",
        ),
        (
            "Microsoft Office OneNote/16.0.13801.20202 (Windows/10.0; Desktop x64; en-US; Desktop app; Dell/OptiPlex)",
            "desktop",
        ),
        ("SonyEricssonJ108i/R1x Browser/NetFront/3.5 Profile/MIDP-2.1 Configuration/CLDC-1.1", "mobile"),
        ("MOT-V360v/08.B7.58R MIB/2.2.1 Profile/MIDP-2.0 Configuration/CLDC-1.1", "mobile"),
        ("Opera/9.80 (Linux mips; Opera TV Store/5477) Presto/2.12.362 Version/12.10", "other"),
    ],
)
def test_strings_without_a_mozilla_prefix(ua, device):
    assert parse_user_agent(ua).device == device


def test_family_names_are_plausibles_and_old_names_map_at_read_time():
    assert [canonical_os(name) for name in ("Mac OS X", "Windows 10", "Windows Phone", "Ubuntu", "CrOS", "iOS")] == [
        "Mac",
        "Windows",
        "Windows Phone",
        "GNU/Linux",
        "Chrome OS",
        "iOS",
    ]
    assert [
        canonical_browser(name)
        for name in ("Mobile Safari", "Chrome Mobile iOS", "Samsung Internet", "Edge Mobile", "IE", "Firefox")
    ] == ["Safari", "Chrome", "Samsung Browser", "Edge", "Internet Explorer", "Firefox"]


def test_one_off_strings_cannot_flush_the_cache():
    cache: S3FifoCache[str, str] = S3FifoCache(100)
    hot = [f"browser-{i}" for i in range(50)]
    for _ in range(2):
        for key in hot:
            cache.get_or_compute(key, str.upper)
    # A flood of 10,000 strings each seen once, the hot ones still asked for now and then.
    for i in range(10_000):
        cache.get_or_compute(f"random-{i}", str.upper)
        if i % 200 == 0:
            for key in hot:
                cache.get_or_compute(key, str.upper)
    hits = cache.hits
    for key in hot:
        assert cache.get_or_compute(key, str.upper) == key.upper()
    assert cache.hits == hits + 50
    assert len(cache) <= 100


def test_tv_profile_and_code_names_are_not_browsers():
    tv = (
        f"Mozilla/5.0 (Web0S; Linux/SmartTV) {BLINK} Chrome/87.0.4280.88 Safari/537.36 HbbTV/1.6.1 "
        "(+DRM; LGE/WALTON/STILEVS; ST5; 0; 0;)"
    )
    assert parse_user_agent(tv).browser == "Chrome"
    assert parse_user_agent(tv).device == "other"
    shiretoko = "Mozilla/5.0 (Windows; U; Windows NT 5.1; zh-TW; rv:1.9.1b4pre) Gecko/20090308 Shiretoko/3.1b4pre"
    assert parse_user_agent(shiretoko) == UserAgentInfo("desktop", "Firefox", "Windows")


# Strings from the tuning part (30%) of the labelled Matomo sample (bench/ua/make_sample.py),
# each standing for a rule written from that part's misclassifications.
@pytest.mark.parametrize(
    ("ua", "device"),
    [
        # Laptops and Chromebooks running Android apps or Android x86: desktop, "Mobile" or not.
        (f"Mozilla/5.0 (Linux; Android 9; Samsung Chromebook 3) {BLINK} Chrome/104.0.0.0 Safari/537.36", "desktop"),
        (f"Mozilla/5.0 (Linux; Android 7.1.1; Inspiron 5468) {BLINK} Chrome/72.0.3626.121 Safari/537.36", "desktop"),
        (
            "Mozilla/5.0 (Linux; Android 10; Samsung Chromebook Plus Build/R74-11895.118.0) "
            f"{BLINK} Chrome/93.0.4577.62 Mobile Safari/537.36",
            "desktop",
        ),
        ("Dalvik/2.1.0 (Linux; U; Android 9; HP Chromebook x360 11 G1 EE Build/R80-12739.111.0)", "desktop"),
        # An old Mac's app: CFNetwork/Darwin reads as iOS, the Mac model says otherwise.
        ("BusyCal1.640 CFNetwork/438.16 Darwin/9.8.0 (Power%20Macintosh) (PowerMac8%2C1)", "desktop"),
        # But IdeaPad K1 is a tablet.
        (
            "Mozilla/5.0 (Linux; U; Android 4.2.2; de-de; Ideapad K1 Build/JDQ39E) AppleWebKit/534.30 "
            "(KHTML, like Gecko) Version/4.0 Safari/534.30",
            "tablet",
        ),
        # TVs and boxes that do not say "TV": panel codes, LED panels, Android TV build ids, boxes.
        (
            f"Mozilla/5.0 (Linux; Android 11; 40F660TS Build/RP1A.200720.011; wv) {BLINK} Chrome/83.0 Safari/537.36",
            "other",
        ),
        (f"Mozilla/5.0 (Linux; Android 13; SABA_42SB6000F) {BLINK} Chrome/101.0.4951.61 Safari/537.36", "other"),
        (f"Mozilla/5.0 (Linux; arm; Android 9; H-LED43EU1312) {BLINK} Chrome/104.0 Mobile Safari/537.36", "other"),
        (
            f"Mozilla/5.0 (Linux; Android 9.0; MiTV-MSSP1 Build/PTT1.181019.001) {BLINK} Chrome/57.0 Safari/537.36",
            "other",
        ),
        (
            f"Mozilla/5.0 (Linux; Android 7.1.2; Rombica Smart Box A2) {BLINK} Chrome/77.0.3865.73 Safari/537.36",
            "other",
        ),
        (
            f"Mozilla/5.0 (Linux; Android 11; NV731; wv) {BLINK} Chrome/83.0 YaBrowser/24.1.2.163 (lite) "
            "Safari/537.36 TV",
            "other",
        ),
        # Cars and watches.
        (
            f"Mozilla/5.0 (Linux; Android 7.0; ks1280x480) {BLINK} Chrome/97.0.4692.98 Mobile Safari/537.36",
            "other",
        ),
        (f"Mozilla/5.0 (Linux; Android 9; TicWatch Pro S) {BLINK} Chrome/77.0.3865.92 Mobile Safari/537.36", "other"),
        # The TV words only count inside a Linux platform comment: desktop apps named "...TV" or "...box".
        (
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_14_5) AppleWebKit/537.36 (KHTML, like Gecko) PlutoTV/0.2.0 "
            "Chrome/49.0.2623.75 Electron/0.37.2 Safari/537.36",
            "desktop",
        ),
        ("Mozilla/5.0 (Macintosh; U; Intel Mac OS X 10.6; en-US; rv:1.9.1.8) Gecko/20100317 Postbox/1.1.3", "desktop"),
        # Build ids ending in "...4K" are not 4K screens, and a phone is still a phone.
        (
            "Mozilla/5.0 (Linux; U; Android 4.1.2; fr-fr; GT-S5310 Build/JZO54K) AppleWebKit/534.30 "
            "(KHTML, like Gecko) Version/4.0 Mobile Safari/534.30",
            "mobile",
        ),
        # Tablets saying "Mobile", told by their model's name or code.
        (
            f"Mozilla/5.0 (Linux; Android 4.0.4; ImPAD 3113 Build/IMM76D) {BLINK} Chrome/31.0 Mobile Safari/537.36",
            "tablet",
        ),
        (f"Mozilla/5.0 (Linux; Android 11; Masstel_Tab_82) {BLINK} Chrome/126.0.0.0 Mobile Safari/537.36", "tablet"),
        (f"Mozilla/5.0 (Linux; Android 13; TB-Q706Z) {BLINK} Chrome/120.0.0.0 Mobile Safari/537.36", "tablet"),
        (f"Mozilla/5.0 (Linux; Android 10; 9032X_RU) {BLINK} Chrome/91.0.4472.88 Mobile Safari/537.36", "tablet"),
        (f"Mozilla/5.0 (Linux; Android 10; TZ718) {BLINK} Chrome/94.0.4606.85 Mobile Safari/537.36", "tablet"),
        (f"Mozilla/5.0 (Linux; Android 10; 7A_3G) {BLINK} Chrome/103.0.0.0 Mobile Safari/537.36", "tablet"),
        (f"Mozilla/5.0 (Linux; arm_64; Android 9; PMT4238_4G_EEA) {BLINK} Chrome/100.0 Mobile Safari/537.36", "tablet"),
        # Phones whose names hold a tablet word.
        (
            f"Mozilla/5.0 (Linux; Android 7.1.1; Coolpad E2C) {BLINK} Chrome/86.0.4240.198 Mobile Safari/537.36",
            "mobile",
        ),
        (
            "Mozilla/5.0 (Windows NT 6.2; ARM; Trident/7.0; Touch; rv:11.0; WPDesktop; Lumia 435) like Gecko",
            "mobile",
        ),
        # Android apps name no "Mobile": without a tablet model they are phones.
        ("AndroidDownloadManager/9 (Linux; U; Android 9; CPH1907 Build/PKQ1.190630.001)", "mobile"),
    ],
)
def test_device_rules_from_the_tuning_sample(ua, device):
    assert parse_user_agent(ua, ()).device == device, ua
