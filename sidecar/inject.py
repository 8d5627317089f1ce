"""Snippet injection (`TRACKSIDE_INJECT_SNIPPET=1`, off by default): HTML documents the sidecar
serves get `<script src="/_trackside/s.<hash>.js" data-token="..." defer></script>` before `</head>`
(or `</body>` when there is no `</head>`), so that client-side navigations that reach no server are
counted too, once each. Prefetched and prerendered documents get it as well: the snippet reports a
page only once it is shown, which the proxy, seeing only the prefetch, cannot tell.

Streaming: the body is never held whole; only the last six bytes of a chunk wait for the next one,
in case the anchor tag is split between them. Compression: a document request asks the upstream for
gzip or nothing (its `Accept-Encoding` is narrowed to what we can rewrite); a gzip body is inflated
and deflated again as it streams (zlib, flushed per chunk). Any other encoding the upstream sends
anyway (br, zstd, deflate) passes untouched, uninjected, and is counted (`snippet_skipped_encoding`).
An injected response loses `Content-Length` (the server chunks it) and its validators (`ETag`,
`Last-Modified`): the body now differs per visitor, by its token."""

from __future__ import annotations

import time
import zlib

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from trackside.capture import Capturer
from trackside.page_token import PageTokens, request_identity

_ANCHORS = (b"</head>", b"</body>")
_KEEP = max(len(a) for a in _ANCHORS) - 1
_DROPPED = frozenset({b"content-length", b"etag", b"last-modified", b"content-md5"})


class SnippetInjector:
    """ASGI wrapper of the proxy: rewrites HTML document answers, passes everything else as it is."""

    def __init__(self, app: ASGIApp, snippet_url: str, tokens: PageTokens, capturer: Capturer) -> None:
        self.app = app
        self.snippet_url = snippet_url
        self.tokens = tokens
        self.capturer = capturer
        self.metrics = capturer.metrics
        self.honor_dnt = capturer.settings.honor_dnt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET" or not _is_document(scope["headers"]):
            await self.app(scope, receive, send)
            return
        scope = {**scope, "headers": _narrow_encoding(scope["headers"])}
        rewrite: _Splice | _GzipSplice | None = None

        async def send_wrapper(message: Message) -> None:
            nonlocal rewrite
            if message["type"] == "http.response.start":
                rewrite, message = self._start(scope, message)
            elif rewrite is not None and message["type"] == "http.response.body":
                more = message.get("more_body", False)
                body = rewrite.feed(message.get("body", b""))
                if not more:
                    body += rewrite.finish()
                elif not body:
                    return  # all of it waits in the tail for the next chunk
                message = {**message, "body": body}
            await send(message)

        await self.app(scope, receive, send_wrapper)

    def _start(self, scope: Scope, message: Message) -> tuple[_Splice | _GzipSplice | None, Message]:
        if message["status"] != 200:
            return None, message
        headers = message.get("headers") or []
        content_type = encoding = b""
        for name, value in headers:
            lname = name.lower()
            if lname == b"content-type":
                content_type = value.lower()
            elif lname == b"content-encoding":
                encoding = value.strip().lower()
            elif lname == b"content-range":
                return None, message
        if not content_type.startswith(b"text/html"):
            return None, message
        if encoding not in (b"", b"identity", b"gzip"):
            self.metrics.inc("snippet_skipped_encoding")
            return None, message
        ip, user_agent = request_identity(scope, self.capturer.client_ip)
        tag = self.tag(self.tokens.issue(ip, user_agent, time.time()))
        kept = [(name, value) for name, value in headers if name.lower() not in _DROPPED]
        self.metrics.inc("snippet_injected")
        splice = _Splice(tag)
        return (_GzipSplice(splice) if encoding == b"gzip" else splice), {**message, "headers": kept}

    def tag(self, token: str | None) -> bytes:
        attributes = f' data-token="{token}"' if token else ""
        if self.honor_dnt:
            attributes += " data-honor-dnt"
        return f'<script src="{self.snippet_url}"{attributes} defer></script>'.encode()


class _Splice:
    """Puts `tag` before the first `</head>` or `</body>` (any case) of a streamed document."""

    def __init__(self, tag: bytes) -> None:
        self.tag = tag
        self.tail = b""
        self.done = False

    def feed(self, chunk: bytes) -> bytes:
        if self.done:
            return chunk
        data = self.tail + chunk
        lower = data.lower()
        found = [i for i in (lower.find(a) for a in _ANCHORS) if i >= 0]
        if found:
            at = min(found)
            self.done = True
            self.tail = b""
            return data[:at] + self.tag + data[at:]
        cut = max(len(data) - _KEEP, 0)
        self.tail = data[cut:]
        return data[:cut]

    def finish(self) -> bytes:
        # No anchor at all (a fragment, not a page): it goes out as it came.
        tail, self.tail = self.tail, b""
        return tail


class _GzipSplice:
    """The same on a gzip body: inflate, splice, deflate, flushing each chunk so streaming stays streaming."""

    def __init__(self, inner: _Splice) -> None:
        self.inner = inner
        self.inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self.deflate = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)

    def feed(self, chunk: bytes) -> bytes:
        out = self.inner.feed(self._plain(chunk))
        if not out:
            return b""
        return self.deflate.compress(out) + self.deflate.flush(zlib.Z_SYNC_FLUSH)

    def finish(self) -> bytes:
        out = self.inner.feed(self.inflate.flush()) + self.inner.finish()
        return self.deflate.compress(out) + self.deflate.flush(zlib.Z_FINISH)

    def _plain(self, chunk: bytes) -> bytes:
        plain = self.inflate.decompress(chunk)
        # A body of several gzip members (concatenated by some servers): inflate each in turn.
        while self.inflate.eof and self.inflate.unused_data:
            rest = self.inflate.unused_data
            self.inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
            plain += self.inflate.decompress(rest)
        return plain


def _is_document(headers: list[tuple[bytes, bytes]]) -> bool:
    dest = accept = None
    for name, value in headers:
        if name == b"sec-fetch-dest":
            dest = value
        elif name == b"accept":
            accept = value
    if dest is not None:
        return dest in (b"document", b"iframe")
    return accept is not None and b"text/html" in accept


def _narrow_encoding(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Ask the upstream for gzip or nothing, the encodings the splice can rewrite."""
    out = []
    for name, value in headers:
        if name == b"accept-encoding":
            value = b"gzip" if b"gzip" in value.lower() else b"identity"
        out.append((name, value))
    return out
