"""A batch's wire form on the queue: packed a chunk at a time by the sidecar, unpacked by the worker."""

from __future__ import annotations

from collections import Counter
from datetime import date

import msgpack

from trackside.batch import Batch
from trackside.events import Event
from trackside.queue import PACK_CHUNK, deserialize, pack_batch, unpack_batch


def _batch(n: int) -> Batch:
    events = [
        Event(
            id=f"id-{i}",
            ts=1_764_000_000.0 + i,
            kind="page_view",
            nav="document",
            method="GET",
            path=f"/p/a{i}",
            label="/p/{sqid}",
            status=200,
            visitor=f"{i:032x}",
            user_id="u1" if i % 3 == 0 else None,
            content_kind="artwork",
            content_id=f"a{i}",
            duration_ms=1.25,
        )
        for i in range(n)
    ]
    return Batch(
        id="batch-1",
        events=events,
        bots=Counter({(date(2025, 11, 24), "Googlebot", "/p/{sqid}"): 3}),
        aliases={("artwork", "17"): "a1"},
    )


async def test_packed_batch_is_the_wire_form_and_unpacks_whole():
    batch = _batch(2 * PACK_CHUNK + 7)  # several chunks and a partial one
    packed = await pack_batch(batch)
    assert deserialize(packed) == msgpack.unpackb(msgpack.packb(batch.to_wire()), raw=False)
    back = unpack_batch(packed)
    assert back.id == "batch-1"
    assert back.events == batch.events
    assert back.bots == batch.bots
    assert back.aliases == batch.aliases


async def test_an_empty_batch_and_the_plain_dict_of_earlier_versions():
    empty = Batch(id="empty")
    assert unpack_batch(await pack_batch(empty)).events == []
    batch = _batch(3)
    assert unpack_batch(batch.to_wire()).events == batch.events
