"""Upstream byte streams, well-formed and malformed, for the upstream client's differential test.

Each case is what a (possibly broken or hostile) upstream sends back to one request, and what the
client must make of it: the status and body it hands on (None: the exchange fails, a 502), and
whether the connection may carry another request. `h11` judges the same bytes as a reference
(`tests/sidecar/test_upstream_client.py`); the expectations here are the client's own, at least as
strict as the reference."""

from __future__ import annotations

from dataclasses import dataclass

OK5 = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
# What an attacker (or a confused upstream) appends: an answer nobody asked for, with a redirect
# and a cookie meant for the next visitor.
SECOND = (
    b"HTTP/1.1 302 Found\r\nLocation: https://evil.example/\r\nSet-Cookie: session=stolen\r\nContent-Length: 0\r\n\r\n"
)
HEAD_CAP = 8 * 1024  # the client's response head cap in the differential test


@dataclass(frozen=True)
class Case:
    name: str
    stream: bytes
    status: int | None  # None: the client must fail the exchange
    body: bytes = b""
    reuse: bool = False
    method: str = "GET"
    closes: bool = False  # the upstream closes the connection after sending `stream`


def _chunked(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body


CASES: tuple[Case, ...] = (
    # Well-formed answers: handed on whole, and the connection is kept.
    Case("content-length", OK5, 200, b"hello", reuse=True),
    Case("no-reason-phrase", b"HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok", 200, b"ok", reuse=True),
    Case("empty-body", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 200, reuse=True),
    Case("chunked", _chunked(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"), 200, b"hello world", reuse=True),
    Case("chunk-extension", _chunked(b"5;a=b\r\nhello\r\n0\r\n\r\n"), 200, b"hello", reuse=True),
    Case("chunked-trailer", _chunked(b"5\r\nhello\r\n0\r\nX-Sum: 1\r\n\r\n"), 200, b"hello", reuse=True),
    Case("body-ends-in-crlf", b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab\r\n", 200, b"ab\r\n", reuse=True),
    Case("body-all-crlf", b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n\r\n\r\n", 200, b"\r\n\r\n", reuse=True),
    Case("chunk-of-crlf", _chunked(b"2\r\n\r\n\r\n0\r\n\r\n"), 200, b"\r\n", reuse=True),
    Case("204", b"HTTP/1.1 204 No Content\r\n\r\n", 204, reuse=True),
    Case("304-with-length-header", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 6\r\n\r\n", 304, reuse=True),
    Case("100-then-200", b"HTTP/1.1 100 Continue\r\n\r\n" + OK5, 200, b"hello", reuse=True),
    Case("103-then-200", b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n" + OK5, 200, b"hello", reuse=True),
    Case("599", b"HTTP/1.1 599 Odd\r\nContent-Length: 0\r\n\r\n", 599, reuse=True),
    Case("keep-alive-header", b"HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5\r\nContent-Length: 1\r\n\r\nx", 200, b"x",
         reuse=True),
    # Well-formed, but the connection ends with the answer.
    Case("connection-close", b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", 200, b"ok"),
    Case("http-1.0", b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", 200, b"ok"),
    Case("http-1.0-keep-alive", b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok", 200,
         b"ok"),
    Case("until-close", b"HTTP/1.1 200 OK\r\n\r\nall of it", 200, b"all of it", closes=True),
    Case("head", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", 200, method="HEAD"),
    # Bytes after a whole answer: the answer stands, the bytes reach nobody, the connection closes.
    Case("unsolicited-second-answer", OK5 + SECOND, 200, b"hello"),
    Case("short-content-length", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhello", 200, b"he"),
    Case("204-with-body", b"HTTP/1.1 204 No Content\r\n\r\nsecret", 204),
    Case("304-with-body", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 6\r\n\r\nsecret", 304),
    Case("head-with-body", b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecret", 200, method="HEAD"),
    Case("trailing-crlf", OK5 + b"\r\n", 200, b"hello"),
    Case("trailing-lf", OK5 + b"\n", 200, b"hello"),
    Case("trailing-crlf-after-head", b"HTTP/1.1 204 No Content\r\n\r\n\r\n", 204),
    Case("trailing-crlf-after-chunked", _chunked(b"1\r\na\r\n0\r\n\r\n\r\n"), 200, b"a"),
    Case("trailing-crlf-after-crlf-body", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n\r\n\r\n", 200, b"\r\n"),
    Case("second-answer-after-chunked", _chunked(b"1\r\na\r\n0\r\n\r\n") + SECOND, 200, b"a"),
    Case("bytes-after-close-header", b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nokXY", 200,
         b"ok"),
    # Malformed: the exchange fails (at most the part of the body the reference accepts went out).
    Case("1xx-with-body", b"HTTP/1.1 100 Continue\r\nContent-Length: 3\r\n\r\nabc" + OK5, None),
    Case("bad-chunk-size", _chunked(b"zz\r\nhello\r\n0\r\n\r\n"), None),
    Case("bad-second-chunk-size", _chunked(b"5\r\nhello\r\nq\r\n0\r\n\r\n"), None),
    Case("huge-chunk-size", _chunked(b"fffffffffffffffffffff\r\nhello\r\n0\r\n\r\n"), None),
    Case("negative-chunk-size", _chunked(b"-5\r\nhello\r\n0\r\n\r\n"), None),
    Case("chunk-without-crlf", _chunked(b"5\r\nhelloXX0\r\n\r\n"), None),
    Case("duplicate-content-length", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
         None),
    Case("conflicting-content-length", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
         None),
    Case("content-length-list", b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello", None),
    Case("content-length-sign", b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello", None),
    Case("content-length-and-chunked",
         b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", None),
    Case("transfer-encoding-gzip", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nabc", None, closes=True),
    Case("transfer-encoding-gzip-chunked",
         b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", None),
    Case("obs-fold", b"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 2\r\n\r\nok", None),
    Case("bare-lf", b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok", None),
    Case("space-before-colon", b"HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nok", None),
    Case("status-99", b"HTTP/1.1 99 Odd\r\nContent-Length: 0\r\n\r\n", None),
    Case("status-099", b"HTTP/1.1 099 Odd\r\nContent-Length: 0\r\n\r\n", None),
    Case("status-600", b"HTTP/1.1 600 Odd\r\nContent-Length: 2\r\n\r\nok", None),
    Case("status-999", b"HTTP/1.1 999 Odd\r\nContent-Length: 2\r\n\r\nok", None),
    Case("status-1000", b"HTTP/1.1 1000 Odd\r\nContent-Length: 2\r\n\r\nok", None),
    Case("status-101-unasked", b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\nraw",
         None),
    Case("not-http", b"SSH-2.0-OpenSSH_9.6\r\n", None, closes=True),
    # What llhttp lets through and h11 does not, found by `test_client_never_accepts_more_than_h11_fuzzed`.
    Case("nul-in-reason", b"HTTP/1.1 200 O\x00K\r\nContent-Length: 2\r\n\r\nok", None),
    Case("vertical-tab-in-reason", b"HTTP/1.1 200 \x0bOK\r\nContent-Length: 2\r\n\r\nok", None),
    Case("blank-line-before-answer", b"\r\n" + OK5, None),
    Case("blank-line-after-100", b"HTTP/1.1 100 Continue\r\n\r\n\r\n" + OK5, None),
    Case("chunked-with-trailing-tab", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\t\r\n\r\n2\r\nok\r\n0\r\n\r\n",
         None, closes=True),
    Case("oversized-head", b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (HEAD_CAP + 100) + b"\r\nContent-Length: 2\r\n\r\nok",
         None),
    # Each early-hints head is under the cap, together they are over: the cap is the answer's.
    Case("oversized-1xx-heads", (b"HTTP/1.1 103 Early Hints\r\nLink: " + b"b" * 5000 + b"\r\n\r\n") * 2 + OK5, None),
    Case("early-close-in-head", b"HTTP/1.1 200 OK\r\nContent-Le", None, closes=True),
    Case("early-close-in-body", b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello", None, closes=True),
    Case("early-close-in-chunk", _chunked(b"a\r\nhello"), None, closes=True),
    Case("early-close-before-last-chunk", _chunked(b"5\r\nhello\r\n"), None, closes=True),
    Case("close-without-answer", b"", None, closes=True),
)
