"""The capture path's faster forms give the same answers as the plain ones (issue 16)."""

from __future__ import annotations

import hmac
import os

from trackside.enrich.visitor import visitor_hash


def test_visitor_hash_is_hmac_sha256_on_any_input() -> None:
    # CPython's own SHA-256 (not OpenSSL's) underneath: the same HMAC, byte for byte.
    for i in range(2000):
        salt = os.urandom(i % 100 + 1)  # short, block-sized and long (hashed first) keys
        ip = f"{i % 256}.{i // 256}.0.1" if i % 3 else f"2001:db8::{i:x}"
        ua = os.urandom(i % 300).decode("latin-1")
        expected = hmac.digest(salt, f"site\x00{ip}\x00{ua}".encode("utf-8", "surrogateescape"), "sha256")[:16].hex()
        assert visitor_hash(salt, "site", ip, ua) == expected


def test_rows_packed_from_the_buffer_are_the_events_packed() -> None:
    """Redis mode packs the buffer's rows as they are (`take_rows`, `write_rows`): the same bytes as
    the batch of `Event`s packed, so the worker reads the same events."""
    import asyncio

    from trackside.buffer import EventBuffer
    from trackside.events import Event, as_row
    from trackside.metrics import Metrics
    from trackside.queue import pack_batch, unpack_batch

    def fill(buffer: EventBuffer) -> None:
        for i in range(600):  # more than a packing chunk
            buffer.put_row(
                as_row(
                    Event(
                        id=f"id{i}",
                        ts=1_760_000_000.5 + i,
                        kind="page_view",
                        nav="document",
                        method="GET",
                        path=f"/p/{i}",
                        label="/p/[post]",
                        status=200,
                        visitor=f"v{i % 7}",
                        user_id="u1" if i % 3 else None,
                        duration_ms=1.5,
                        unverified=bool(i % 2),
                    )
                )
            )
        buffer.put_alias("post", "12", "abc")

    a, b = EventBuffer(10_000, Metrics()), EventBuffer(10_000, Metrics())
    fill(a)
    fill(b)
    batch = a.take(10_000)
    rows, bare = b.take_rows(10_000)
    bare.id = batch.id
    assert bare.events == [] and len(rows) == 600
    packed = asyncio.run(pack_batch(batch))
    assert asyncio.run(pack_batch(bare, rows)) == packed
    assert unpack_batch(packed).events == batch.events


def test_a_compiled_build_records_the_same_events() -> None:
    """`bench/build_compiled.py DIR` (optional; mypyc): the compiled capture path makes the same events,
    counters, aliases and titles as the pure-Python one. Runs when `CAPTURE_COMPILED_DIR` names a build."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    import pytest

    compiled = os.environ.get("CAPTURE_COMPILED_DIR")
    if not compiled:
        pytest.skip("no compiled build (CAPTURE_COMPILED_DIR)")
    root = Path(__file__).resolve().parents[2]

    def run(path: str) -> dict[str, object]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKSIDE_")}
        out = subprocess.run(
            [sys.executable, str(Path(__file__).with_name("capture_sample.py"))],
            env={**env, "PYTHONPATH": path},
            cwd="/",
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return dict(json.loads(out))

    pure, built = run(str(root)), run(compiled)
    assert pure.pop("compiled") is False and built.pop("compiled") is True
    assert len(pure["rows"]) > 20  # type: ignore[arg-type]
    assert built == pure
