"""Build the labelled User-Agent samples that bench/ua_bench.py scores the parser on.

Two sources, both real strings labelled by someone else, both from packages on PyPI:

* ``matomo``: the test fixtures of Matomo's Device Detector, shipped in the ``device-detector``
  wheel (``device_detector/tests/fixtures/upstream/*.yml``).  Each string is labelled by
  Matomo's maintainers with a device type, an OS family and a client; some carry the client
  hints the browser sent.  It is a test set for a device-model database: heavy on odd Android
  devices (TV boxes, car units, no-name tablets), light on ordinary desktops.
* ``intoli``: the real-traffic strings ``fake-useragent`` ships (``data/browsers.jsonl``,
  collected by Intoli from real browsers), whose device type was set from the browser itself
  (screen and platform), not from the string.  Its browser and OS names come from ua-parser,
  so only its device label is scored.

Labels mapped to ours: desktop -> desktop; smartphone, phablet, feature phone, mobile ->
mobile; tablet -> tablet; every other Matomo type (TV, console, car, camera, wearable, ...) ->
other.  Each distinct string goes to "tune" (30%, by a hash of the string: the only part looked
at while writing the device rules) or "heldout" (70%, only scored); only held-out rows are
written.  The Matomo set is cut to at most 1,500 rows per device class (by the same hash) to
keep the file small.  Run::

    pip download --no-deps device-detector==6.5.1 fake-useragent==2.2.0 -d /tmp/ua
    cd /tmp/ua && unzip -q -o device_detector-*.whl && unzip -q -o fake_useragent-*.whl
    python bench/ua/make_sample.py /tmp/ua/device_detector/tests/fixtures/upstream \
        /tmp/ua/fake_useragent/data/browsers.jsonl

Add ``--tune DIR`` to also write the tuning part (same cap, same order) as
``DIR/matomo_tune.jsonl`` and ``DIR/intoli_tune.jsonl``, the strings to study when changing
the rules; it is not kept in the repository.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).parent
DEVICE = {
    "desktop": "desktop",
    "smartphone": "mobile",
    "phablet": "mobile",
    "feature phone": "mobile",
    "mobile": "mobile",
    "tablet": "tablet",
}
# Not people's browsing devices, or bots (scored by the bot tests instead).
SKIP_FILES = {
    "bots.yml",
    "feed_reader.yml",
    "podcasting.yml",
    "mediaplayer.yml",
    "mobile_apps.yml",
    "clienthints-app.yml",
}
PER_CLASS = 1500


def _bucket(ua: str) -> int:
    return int(hashlib.sha1(ua.encode()).hexdigest()[:8], 16)


def _split(ua: str) -> str:
    return "tune" if _bucket(ua) % 10 < 3 else "heldout"


def matomo_rows(folder: Path) -> Iterator[dict[str, Any]]:
    for path in sorted(folder.glob("*.yml")):
        if path.name in SKIP_FILES:
            continue
        for case in yaml.load(path.read_text(), Loader=yaml.CSafeLoader) or []:
            ua = case.get("user_agent")
            device = (case.get("device") or {}).get("type") or ""
            if not ua or not device:
                continue
            headers = {k.lower(): str(v) for k, v in (case.get("headers") or {}).items()}
            client = case.get("client") or {}
            yield {
                "ua": ua,
                "mobile_hint": headers.get("sec-ch-ua-mobile"),
                "platform_hint": headers.get("sec-ch-ua-platform"),
                "device": DEVICE.get(device, "other"),
                "os": case.get("os_family") or "",
                "browser": client.get("name") if client.get("type") == "browser" else "",
            }


def intoli_rows(path: Path) -> Iterator[dict[str, Any]]:
    for line in path.read_text().splitlines():
        row = json.loads(line)
        yield {"ua": row["useragent"], "mobile_hint": None, "platform_hint": None, "device": row["type"]}


def write(
    name: str, rows: Iterator[dict[str, Any]], cap: int | None, part: str = "heldout", out_dir: Path = HERE
) -> None:
    seen: set[tuple[str, str | None, str | None]] = set()
    per_class: Counter[str] = Counter()
    kept = []
    for row in sorted(rows, key=lambda r: (_bucket(r["ua"]), r["ua"])):
        key = (row["ua"], row["mobile_hint"], row["platform_hint"])
        if key in seen or _split(row["ua"]) != part:
            continue
        seen.add(key)
        if cap is not None and per_class[row["device"]] >= cap and not row["mobile_hint"]:
            continue
        per_class[row["device"]] += 1
        kept.append(row)
    out = out_dir / f"{name}_{part}.jsonl"
    with out.open("w") as f:
        for row in kept:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"{out.name}: {len(kept)} rows {dict(per_class)}")


def main() -> None:
    write("matomo", matomo_rows(Path(sys.argv[1])), PER_CLASS)
    write("intoli", intoli_rows(Path(sys.argv[2])), None)
    if len(sys.argv) > 4 and sys.argv[3] == "--tune":
        tune_dir = Path(sys.argv[4])
        tune_dir.mkdir(parents=True, exist_ok=True)
        write("matomo", matomo_rows(Path(sys.argv[1])), PER_CLASS, "tune", tune_dir)
        write("intoli", intoli_rows(Path(sys.argv[2])), None, "tune", tune_dir)


if __name__ == "__main__":
    main()
