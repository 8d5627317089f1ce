"""Plausible's spellings of browser and OS families: `canonical_browser` and `canonical_os` map
ua-parser's names, and those stored by older versions, at capture and at read time.

Apart from `trackside.enrich.user_agent` so that what only reads or derives stored events (the
deriver, `trackside worker`, the stats reads) does not build ua-parser's resolver: importing that
module compiles its regexes (about 30 MB and a quarter of a second of each process)."""

from __future__ import annotations

# ua-parser's names (and the ones stored before this version) -> Plausible's.
_OS_NAMES = {
    "Mac OS X": "Mac",
    "Mac OS": "Mac",
    "macOS": "Mac",
    "Linux": "GNU/Linux",
    "Ubuntu": "GNU/Linux",
    "Kubuntu": "GNU/Linux",
    "Xubuntu": "GNU/Linux",
    "Debian": "GNU/Linux",
    "Fedora": "GNU/Linux",
    "Red Hat": "GNU/Linux",
    "CentOS": "GNU/Linux",
    "Mint": "GNU/Linux",
    "Linux Mint": "GNU/Linux",
    "Arch Linux": "GNU/Linux",
    "Gentoo": "GNU/Linux",
    "SUSE": "GNU/Linux",
    "openSUSE": "GNU/Linux",
    "Slackware": "GNU/Linux",
    "Mandriva": "GNU/Linux",
    "Mageia": "GNU/Linux",
    "Chromecast": "Chrome OS",
    "ChromeOS": "Chrome OS",
    "CrOS": "Chrome OS",
    "iPadOS": "iOS",
    "ATV OS X": "tvOS",
}
_BROWSER_NAMES = {
    "Mobile Safari": "Safari",
    "Mobile Safari UI/WKWebView": "Safari",
    "Chrome Mobile": "Chrome",
    "Chrome Mobile iOS": "Chrome",
    "Chrome Mobile WebView": "Chrome Webview",
    "Chrome Frame": "Chrome",
    "HeadlessChrome": "Chrome",
    "Firefox Mobile": "Firefox",
    "Firefox iOS": "Firefox",
    "Firefox Beta": "Firefox",
    "Edge Mobile": "Edge",
    "Microsoft Edge": "Edge",
    "Opera Mobile": "Opera",
    "Opera Touch": "Opera",
    "Opera GX": "Opera",
    "Opera Tablet": "Opera",
    "GranParadiso": "Firefox",
    "YandexSearch": "Yandex Browser",
    "Samsung Internet": "Samsung Browser",
    "IE": "Internet Explorer",
    "IE Mobile": "Internet Explorer",
    "Yandex Browser": "Yandex Browser",
    "YaBrowser": "Yandex Browser",
    "UC Browser": "UC Browser",
    "DuckDuckGo Mobile": "DuckDuckGo Privacy Browser",
    "MiuiBrowser": "MIUI Browser",
    "Amazon Silk": "Silk",
}

def canonical_os(name: str) -> str:
    """Map an OS family name (ua-parser's, or one stored by an older version) to Plausible's."""
    if name.startswith("Windows") and not name.startswith("Windows Phone"):
        # ua-parser before 1.0 said "Windows 10", "Windows 7", ...
        return "Windows"
    return _OS_NAMES.get(name, name)


def canonical_browser(name: str) -> str:
    """Map a browser family name (ua-parser's, or one stored by an older version) to Plausible's."""
    if name.startswith("Firefox ("):
        # Pre-release code names: "Firefox (Shiretoko)", "Firefox (Minefield)".
        return "Firefox"
    return _BROWSER_NAMES.get(name, name)
