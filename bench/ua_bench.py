"""User-agent benchmark (issue 14): the cost of a string never seen before, old parser against
new, side by side; how the new parser changes the answers; how it scores on labelled samples.

Run from the repository root (a git checkout: the old code is read from git history):

    .venv/bin/python bench/ua_bench.py                  # everything, about a minute
    .venv/bin/python bench/ua_bench.py --rounds 1       # quicker, noisier

Parts:

1. Speed.  "old" is ``parse_user_agent`` and ``bot_name`` as of commit OLD_COMMIT (the
   ``user-agents`` package on ua-parser's pure-Python regexes; ``re`` scans for every bot rule),
   "new" is this tree's (ua-parser's regexes run by ``ua-parser-rs``; bot rules behind a native
   prefilter).  Both are called through their uncached functions, so every call is a miss, over
   every string of tests/core/ua_samples.py and the labelled samples, ``--rounds`` times
   (after one warm-up round, which also pays ua-parser-rs's lazy regex compilation).
   Reported: median, p99 and max per call, and the worst over 512-byte strings (the length both
   parsers cut at): real UAs padded, random printable text, and strings built to make regexes
   backtrack.  Then the cache-hit path of the public functions.
2. Answers.  Every string of tests/core/ua_samples.py through the old and the new functions:
   how many device / browser / OS / bot answers changed, and the most common changes.  Browser
   and OS names are compared after mapping the old names with ``canonical_browser`` /
   ``canonical_os`` (a renaming is not a changed answer).
3. Quality on the held-out labelled samples (bench/ua/*_heldout.jsonl, built by
   bench/ua/make_sample.py): precision and recall of desktop, mobile and tablet; browser and OS
   family right (Matomo labels, for the families both name); bot recall on the bot samples and
   browsers flagged among every labelled browser string.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import subprocess
import sys
import time
import types
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.core.ua_samples import BOT_UAS, BROWSER_UAS  # noqa: E402
from trackside.enrich import bots, user_agent  # noqa: E402
from trackside.enrich.user_agent import canonical_browser, canonical_os  # noqa: E402

# The last commit with the user-agents parser and the un-prefiltered bot rules.
OLD_COMMIT = "3b8d708"
SAMPLES = Path(__file__).parent / "ua"

# Matomo's client names -> ours, for the browsers both name (others are not scored).
MATOMO_BROWSERS = {
    "Chrome": "Chrome",
    "Chrome Mobile": "Chrome",
    "Chrome Mobile iOS": "Chrome",
    "Mobile Safari": "Safari",
    "Safari": "Safari",
    "Firefox": "Firefox",
    "Firefox Mobile": "Firefox",
    "Firefox iOS": "Firefox",
    "Microsoft Edge": "Edge",
    "Opera": "Opera",
    "Opera Mobile": "Opera",
    "Opera Mini": "Opera Mini",
    "Samsung Browser": "Samsung Browser",
    "Internet Explorer": "Internet Explorer",
    "Yandex Browser": "Yandex Browser",
    "UC Browser": "UC Browser",
}
MATOMO_OS = {"Android", "iOS", "Windows", "Mac", "GNU/Linux", "Chrome OS"}


def old_modules() -> tuple[types.ModuleType, types.ModuleType]:
    loaded = []
    for name in ("user_agent", "bots"):
        source = subprocess.run(
            ["git", "show", f"{OLD_COMMIT}:trackside/enrich/{name}.py"],
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        module = types.ModuleType(f"old_{name}")
        sys.modules[module.__name__] = module  # dataclasses look their module up
        exec(compile(source, f"old_{name}.py", "exec"), module.__dict__)  # noqa: S102 - our own history
        loaded.append(module)
    return loaded[0], loaded[1]


def load(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (SAMPLES / name).read_text().splitlines()]


def adversarial_512(rng: random.Random, real: list[str]) -> list[str]:
    printable = [chr(c) for c in range(32, 127)]
    out = []
    for ua in rng.sample(real, 40):
        out.append((ua + " " + ua + " " + ua)[:512].ljust(512, "x"))
    for _ in range(40):
        out.append("".join(rng.choice(printable) for _ in range(512)))
    # Long runs that make backtracking engines try every split.
    out += [
        "A" * 512,
        "Mozilla/5.0 (" + "a;" * 249 + ")",
        "Mozilla/5.0 (Linux; Android 13; " + "x" * 478 + ")",
        "Mozilla/5.0 (compatible; " + "b" * 487,
        ("botbot " * 80)[:512],
        ("http://" + "w." * 260)[:512],
        ("a@" * 256)[:512],
        ("Mozilla/5.0 " + "(KHTML, like Gecko; " * 30)[:512],
        (" at " * 128)[:512],
        "Mozilla/5.0 (Windows NT 10.0) " + "Chrome/1.0 " * 44,
    ]
    return [s[:512].ljust(512, "z") for s in out]


def timed(fn: Callable[[str], object], uas: list[str], rounds: int) -> list[float]:
    # The collector is paused while timing: a full collection over this process's millions of
    # objects (both parsers, the samples) costs milliseconds and would land on whichever call
    # happens to trigger it.
    out: list[float] = []
    gc.collect()
    gc.disable()
    try:
        for _ in range(rounds):
            for ua in uas:
                start = time.perf_counter_ns()
                fn(ua)
                out.append((time.perf_counter_ns() - start) / 1000)
    finally:
        gc.enable()
    return out


def summary(samples: list[float]) -> str:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"median {statistics.median(ordered):8.1f} us   p99 {p99:8.1f} us   max {ordered[-1]:8.1f} us"


def speed(old_ua: types.ModuleType, old_bots: types.ModuleType, rounds: int) -> None:
    rng = random.Random(14)
    real = BROWSER_UAS + BOT_UAS + [r["ua"] for r in load("matomo_heldout.jsonl") + load("intoli_heldout.jsonl")]
    real = [ua for ua in real if len(ua) <= 512]
    long = adversarial_512(rng, real)
    players = user_agent.DEFAULT_PLAYERS

    def old_parse(ua: str) -> object:
        return old_ua._parse_cached.__wrapped__(ua, players)

    def new_parse(ua: str) -> object:
        return user_agent._parse((ua, players, "", ""))

    def old_bot(ua: str) -> object:
        return old_bots._bot_name_cached.__wrapped__(ua, ())

    def new_bot(ua: str) -> object:
        return bots._bot_name_uncached((ua, ()))

    def old_both(ua: str) -> object:
        return old_bot(ua) or old_parse(ua)

    def new_both(ua: str) -> object:
        # What capture does per request: the bot test, then (for people) the parse.
        return new_bot(ua) or new_parse(ua)

    def new_both_always(ua: str) -> object:
        return new_bot(ua), new_parse(ua)

    def old_both_always(ua: str) -> object:
        return old_bot(ua), old_parse(ua)

    for fn in (old_parse, new_parse, old_bot, new_bot):
        timed(fn, real, 1)  # warm-up: lazy regex compilation, caches of re
    print(f"\n## Speed: uncached, {len(real)} real strings x {rounds} rounds; {len(long)} strings of 512 bytes\n")
    rows = [
        ("parse_user_agent", old_parse, new_parse),
        ("bot_name", old_bot, new_bot),
        ("both (bot_name and parse_user_agent)", old_both_always, new_both_always),
    ]
    for label, old_fn, new_fn in rows:
        print(f"{label}")
        print(f"  old  {summary(timed(old_fn, real, rounds))}")
        print(f"  new  {summary(timed(new_fn, real, rounds))}")
        print(f"  old, 512 B  {summary(timed(old_fn, long, rounds))}")
        print(f"  new, 512 B  {summary(timed(new_fn, long, rounds))}")
    print("browsers only, both calls (what a person's first request costs)")
    print(f"  old  {summary(timed(old_both_always, BROWSER_UAS, rounds))}")
    print(f"  new  {summary(timed(new_both_always, BROWSER_UAS, rounds))}")

    print("\ncache hits (public functions, strings already seen)")
    hot = BROWSER_UAS[:200]
    for ua in hot:
        user_agent.parse_user_agent(ua)
        bots.bot_name(ua)
        old_ua.parse_user_agent(ua)
        old_bots.bot_name(ua)
    print(f"  old parse_user_agent  {summary(timed(old_ua.parse_user_agent, hot, rounds * 5))}")
    print(f"  new parse_user_agent  {summary(timed(user_agent.parse_user_agent, hot, rounds * 5))}")
    print(f"  old bot_name          {summary(timed(old_bots.bot_name, hot, rounds * 5))}")
    print(f"  new bot_name          {summary(timed(bots.bot_name, hot, rounds * 5))}")


def answers(old_ua: types.ModuleType, old_bots: types.ModuleType) -> None:
    uas = BROWSER_UAS + BOT_UAS
    changes: dict[str, Counter[str]] = {"device": Counter(), "browser": Counter(), "os": Counter(), "bot": Counter()}
    renamed: Counter[str] = Counter()
    for ua in uas:
        old = old_ua.parse_user_agent(ua)
        new = user_agent.parse_user_agent(ua)
        if old.device != new.device:
            changes["device"][f"{old.device} -> {new.device}"] += 1
        if canonical_browser(old.browser) != new.browser:
            changes["browser"][f"{old.browser} -> {new.browser}"] += 1
        elif old.browser != new.browser:
            renamed[f"{old.browser} -> {new.browser}"] += 1
        if canonical_os(old.os) != new.os:
            changes["os"][f"{old.os} -> {new.os}"] += 1
        elif old.os != new.os:
            renamed[f"{old.os} -> {new.os}"] += 1
        old_bot, new_bot = old_bots.bot_name(ua), bots.bot_name(ua)
        if old_bot != new_bot:
            changes["bot"][f"{old_bot} -> {new_bot}"] += 1
    print(f"\n## Answers changed on tests/core/ua_samples.py ({len(uas)} strings)\n")
    for what, counter in changes.items():
        print(f"{what}: {sum(counter.values())} changed")
        for change, n in counter.most_common(12):
            print(f"    {n:4d}  {change}")
    print(f"renamed only (same family, Plausible's spelling): {sum(renamed.values())}")
    for change, n in renamed.most_common(12):
        print(f"    {n:4d}  {change}")


def quality(old_ua: types.ModuleType, old_bots: types.ModuleType) -> None:
    print("\n## Quality on the held-out labelled samples\n")
    for name in ("intoli_heldout.jsonl", "matomo_heldout.jsonl"):
        rows = load(name)
        for label, parse in (
            (
                "new",
                lambda r: user_agent.parse_user_agent(
                    r["ua"], (), mobile_hint=r["mobile_hint"], platform_hint=r["platform_hint"]
                ),
            ),
            ("old", lambda r: old_ua.parse_user_agent(r["ua"], ())),
        ):
            got = [parse(r) for r in rows]
            print(f"{name} ({len(rows)} strings, {dict(Counter(r['device'] for r in rows))}), {label} parser:")
            pairs = [(r["device"], g.device) for r, g in zip(rows, got, strict=True)]
            # Second view: people's devices only (Matomo's TVs, cars, cameras... left out).
            own = [(a, b) for a, b in pairs if a != "other"]
            for cls in ("desktop", "mobile", "tablet"):
                scores = []
                for subset in (pairs, own):
                    tp = sum(1 for a, b in subset if a == cls and b == cls)
                    predicted = sum(1 for _, b in subset if b == cls)
                    actual = sum(1 for a, _ in subset if a == cls)
                    scores.append(f"precision {tp / max(predicted, 1):.3f}  recall {tp / max(actual, 1):.3f}")
                extra = f"   | without 'other' rows: {scores[1]}" if len(own) < len(pairs) else ""
                print(f"    {cls:8s} {scores[0]}{extra}")
            if name.startswith("matomo"):
                browsers = [
                    (MATOMO_BROWSERS[r["browser"]], canonical_browser(g.browser))
                    for r, g in zip(rows, got, strict=True)
                    if r.get("browser") in MATOMO_BROWSERS
                ]
                oses = [(r["os"], canonical_os(g.os)) for r, g in zip(rows, got, strict=True) if r["os"] in MATOMO_OS]
                print(
                    f"    browser family right {sum(a == b for a, b in browsers) / len(browsers):.3f} "
                    f"({len(browsers)} strings), OS family right {sum(a == b for a, b in oses) / len(oses):.3f} "
                    f"({len(oses)} strings)"
                )
    people = [r["ua"] for name in ("intoli_heldout.jsonl", "matomo_heldout.jsonl") for r in load(name)]
    import crawleruseragents

    instances = [i for e in crawleruseragents.CRAWLER_USER_AGENTS_DATA for i in e.get("instances", [])]
    for label, fn in (("new", bots.bot_name), ("old", old_bots.bot_name)):
        recall = sum(fn(ua) is not None for ua in BOT_UAS) / len(BOT_UAS)
        community = sum(fn(ua) is not None for ua in instances) / len(instances)
        flagged = sum(fn(ua) is not None for ua in BROWSER_UAS) / len(BROWSER_UAS)
        flagged_people = sum(fn(ua) is not None for ua in people) / len(people)
        print(
            f"bots, {label}: recall {recall:.3f} on BOT_UAS ({len(BOT_UAS)}), {community:.3f} on crawler-user-agents "
            f"examples ({len(instances)}); browsers flagged {flagged:.4f} of BROWSER_UAS ({len(BROWSER_UAS)}), "
            f"{flagged_people:.4f} of the labelled samples ({len(people)}, TVs, apps and consoles included)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    old_ua, old_bots = old_modules()
    speed(old_ua, old_bots, args.rounds)
    answers(old_ua, old_bots)
    quality(old_ua, old_bots)


if __name__ == "__main__":
    main()
