"""Upload benchmark: 1 MB and 50 MB request bodies through nginx-as-proxy, the Trackside sidecar, and direct.

Run from the repository root:

    .venv/bin/python bench/upload_bench.py [--quick] [--phase-seconds 3] [--pin-one-core] \
        [--targets direct,nginx-proxy,sidecar,sidecar-stream] [--out bench/results/uploads-latest.json]

The upstream is a small asyncio server (this file, run with --serve-upstream PORT) that reads each request
body (Content-Length or chunked), discards it and answers {"bytes": N}; every answer's N is checked against
the bytes sent. Process handling, nginx settings, the sidecar's command line, CPU and memory sampling come
from proxy_bench.py beside this file. Standard library only; needs nginx (and taskset for --pin-one-core).
See bench/README.md ("Upload benchmark") for what is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import proxy_bench as pb  # noqa: E402  (a sibling script, not a package)

MIB = 1024 * 1024
SIZES = {"1MB": 1 * MIB, "50MB": 50 * MIB}
UPLOAD_PATH = "/api/upload"
ALL_TARGETS = ["direct", "nginx-proxy", "sidecar", "sidecar-stream"]
BASELINE = "nginx-proxy"
CHUNK = 64 * 1024  # chunk size of the chunked variant


# --------------------------------------------------------------------------------------------------------------
# The upstream: reads and discards each body, answers its byte count.
# --------------------------------------------------------------------------------------------------------------


async def _discard(reader: asyncio.StreamReader, n: int) -> None:
    while n > 0:
        data = await reader.read(min(n, MIB))
        if not data:
            raise asyncio.IncompleteReadError(b"", n)
        n -= len(data)


async def _serve_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            lines = head.split("\r\n")
            method = lines[0].split(" ", 1)[0]
            headers: dict[str, str] = {}
            for line in lines[1:]:
                if line:
                    key, _, value = line.partition(":")
                    headers[key.strip().lower()] = value.strip()
            received = 0
            if "chunked" in headers.get("transfer-encoding", "").lower():
                while True:
                    size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
                    if size == 0:
                        while await reader.readuntil(b"\r\n") != b"\r\n":  # trailer fields, if any
                            pass
                        break
                    await _discard(reader, size)
                    received += size
                    await reader.readexactly(2)
            else:
                length = int(headers.get("content-length", "0"))
                await _discard(reader, length)
                received = length
            body = json.dumps({"bytes": received, "method": method}).encode()
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body
            )
            await writer.drain()
            if headers.get("connection", "").lower() == "close":
                break
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
        pass
    finally:
        writer.close()


def serve_upstream(port: int) -> None:
    async def main() -> None:
        server = await asyncio.start_server(_serve_connection, "127.0.0.1", port, limit=MIB, backlog=1024)
        async with server:
            await server.serve_forever()

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    asyncio.run(main())


# --------------------------------------------------------------------------------------------------------------
# The client: N threads, each one kept-alive connection, uploading until the phase's deadline.
# --------------------------------------------------------------------------------------------------------------


def chunked(body: bytes) -> bytes:
    parts = [b"%x\r\n%s\r\n" % (len(body[i : i + CHUNK]), body[i : i + CHUNK]) for i in range(0, len(body), CHUNK)]
    return b"".join(parts) + b"0\r\n\r\n"


class Conn:
    def __init__(self, port: int, timeout: float) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def _more(self) -> None:
        data = self.sock.recv(256 * 1024)
        if not data:
            raise ConnectionError("connection closed by the server")
        self.buf += data

    def _take(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._more()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._more()
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def response(self) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buf:
            self._more()
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = b""
            while size := int(self._line().split(b";")[0], 16):
                body += self._take(size)
                self._take(2)
            while self._line():
                pass
        else:
            body = self._take(int(headers.get("content-length", "0")))
        return status, headers, body

    def close(self) -> None:
        self.sock.close()


@dataclass
class Upload:
    size: int
    head: bytes
    body: bytes


def make_upload(port: int, size: int, body: bytes, is_chunked: bool) -> Upload:
    framing = "Transfer-Encoding: chunked" if is_chunked else f"Content-Length: {size}"
    head = (
        f"POST {UPLOAD_PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: {pb.BROWSER_UA}\r\n"
        f"Accept: application/json\r\nContent-Type: application/octet-stream\r\n{framing}\r\n\r\n"
    ).encode()
    return Upload(size, head, chunked(body) if is_chunked else body)


def client_loop(port: int, upload: Upload, deadline: float, timeout: float, out: dict[str, Any]) -> None:
    conn: Conn | None = None
    while time.monotonic() < deadline:
        started = time.monotonic()
        try:
            if conn is None:
                conn = Conn(port, timeout)
            conn.sock.sendall(upload.head)
            conn.sock.sendall(upload.body)
            status, headers, body = conn.response()
            elapsed = time.monotonic() - started
            got = json.loads(body).get("bytes") if status == 200 else None
            if status == 200 and got == upload.size:
                out["latencies"].append(elapsed)
            else:
                out["bad"].append(f"HTTP {status}, bytes {got!r} for {upload.size}: {body[:120]!r}")
            if headers.get("connection", "").lower() == "close":
                conn.close()
                conn = None
        except (OSError, ValueError) as exc:
            out["bad"].append(f"{type(exc).__name__}: {exc}")
            if conn is not None:
                conn.close()
            conn = None
            time.sleep(0.05)
    if conn is not None:
        conn.close()


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_phase(target_root: int, port: int, upload: Upload, clients: int, seconds: float) -> dict[str, Any]:
    results: list[dict[str, Any]] = [{"latencies": [], "bad": []} for _ in range(clients)]
    deadline = time.monotonic() + seconds
    sampler = pb.RssSampler(target_root, interval=0.1)
    cpu0 = pb.cpu_seconds(sampler.pids)
    started = time.monotonic()
    threads = [
        threading.Thread(target=client_loop, args=(port, upload, deadline, 60.0, res), daemon=True) for res in results
    ]
    sampler.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    peak_kb = sampler.stop()
    cpu = pb.cpu_seconds(sampler.pids) - cpu0
    latencies = [x for r in results for x in r["latencies"]]
    bad = [x for r in results for x in r["bad"]]
    ok = len(latencies)
    p50, p99 = percentile(latencies, 0.50), percentile(latencies, 0.99)
    return {
        "clients": clients,
        "seconds": round(elapsed, 2),
        "uploads": ok,
        "errors": len(bad),
        "error_examples": sorted(set(bad))[:3],
        "uploads_per_s": round(ok / elapsed, 2),
        "mb_per_s": round(ok * upload.size / MIB / elapsed, 1),
        "p50_ms": round(p50 * 1000, 2) if p50 is not None else None,
        "p99_ms": round(p99 * 1000, 2) if p99 is not None else None,
        "peak_rss_mb": round(peak_kb / 1024, 1),
        "cpu_ms_per_upload": round(cpu / ok * 1000, 2) if ok else None,
    }


# --------------------------------------------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------------------------------------------


def proxy_conf(d: Path, port: int, upstream_port: int, workers: int) -> str:
    # nginx's request-body defaults stand (proxy_request_buffering on, client_body_buffer_size 16k, bodies
    # beyond it in client_body_temp_path, a temp dir of ours); only the 1m body cap is raised, to the
    # sidecar's own default cap (TRACKSIDE_MAX_BODY_BYTES, 100 MiB).
    return f"""
worker_processes {workers};
{pb.nginx_common(d)}
http {{
    {pb.nginx_http_common(d)}
    access_log {d}/access.log combined;
    client_max_body_size 100m;
    upstream app {{
        server 127.0.0.1:{upstream_port};
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }}
    }}
}}
"""


def sidecar_env(variant: str) -> dict[str, str]:
    env = pb.bench_env()
    env["TRACKSIDE_FLOOD_PER_ADDRESS"] = "1000000000"  # one client address; lift the per-address limit too
    if variant == "sidecar-stream":
        env["TRACKSIDE_STREAM_UPLOADS"] = UPLOAD_PATH  # the per-route opt-out (ignored by a sidecar without it)
    return env


def start_sidecar(variant: str, tmp: Path, upstream_url: str, args: argparse.Namespace, prefix: list[str]):
    d = tmp / variant
    d.mkdir()
    port = pb.free_port()
    db = d / "bench.db"
    argv = [*prefix, *pb.sidecar_argv("sidecar", port, upstream_url, db, args)]
    proc = pb.REGISTRY.start(argv, d / "sidecar.log", cwd=d, env=sidecar_env(variant))
    return pb.Server(variant, proc, f"http://127.0.0.1:{port}", d / "sidecar.log", d), db


def phases(args: argparse.Namespace) -> list[tuple[str, bool, int]]:
    """(size name, chunked, clients): Content-Length at 1 and 4 clients, chunked at 1 client."""
    out = [(name, False, c) for name in SIZES for c in (1, 4)]
    if not args.no_chunked:
        out += [(name, True, 1) for name in SIZES]
    return out


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    target_prefix = ["taskset", "-c", "0"] if args.pin_one_core else []
    other_prefix = ["taskset", "-c", "1"] if args.pin_one_core else []
    if args.pin_one_core:
        os.sched_setaffinity(0, {1})  # the harness's client threads share CPU 1 with the upstream

    up_port = pb.free_port()
    up_dir = tmp / "upstream"
    up_dir.mkdir()
    up_argv = [*other_prefix, sys.executable, str(Path(__file__).resolve()), "--serve-upstream", str(up_port)]
    up_proc = pb.REGISTRY.start(up_argv, up_dir / "upstream.log", cwd=up_dir)
    upstream = pb.Server("upstream", up_proc, f"http://127.0.0.1:{up_port}", up_dir / "upstream.log", up_dir)
    reason = pb.wait_ready(up_proc, upstream.base_url + "/", 10)
    if reason:
        raise SystemExit(f"upstream did not start: {reason}\n{pb.tail(upstream.log_path)}")

    bodies = {name: bytes(range(256)) * (size // 256) for name, size in SIZES.items()}
    report: dict[str, Any] = {"targets": {}}
    for name in args.targets:
        pb.log(f"[{name}]")
        entry: dict[str, Any] = {"phases": []}
        report["targets"][name] = entry
        db: Path | None = None
        if name == "direct":
            server = upstream
            if args.pin_one_core:
                pb.set_affinity(up_proc.pid, {0})
            ready = None
        elif name == "nginx-proxy":
            port = pb.free_port()
            conf = proxy_conf(tmp / name, port, up_port, args.workers)
            server = pb.start_nginx(name, tmp, conf, port, target_prefix)
            ready = pb.wait_ready(server.proc, server.base_url + "/", args.ready_timeout)
        else:
            server, db = start_sidecar(name, tmp, upstream.base_url, args, target_prefix)
            ready = pb.wait_ready(server.proc, server.base_url + "/_trackside/health", args.ready_timeout)
        if ready:
            entry["skipped"] = f"{ready}\n{pb.tail(server.log_path)}"
            pb.log(f"  skipped: {entry['skipped']}")
            pb.REGISTRY.stop(server.proc)
            continue
        port = int(server.base_url.rsplit(":", 1)[1])
        for size_name, is_chunked, clients in phases(args):
            upload = make_upload(port, SIZES[size_name], bodies[size_name], is_chunked)
            res = run_phase(server.proc.pid, port, upload, clients, args.phase_seconds)
            res.update(size=size_name, chunked=is_chunked)
            entry["phases"].append(res)
            pb.log(
                f"  {size_name:>4} {'chunked' if is_chunked else 'length '} c={clients}: {res['uploads_per_s']:8.2f}/s "
                f"{res['mb_per_s']:7.1f} MB/s p50 {res['p50_ms']} p99 {res['p99_ms']} ms, "
                f"errors {res['errors']}, RSS {res['peak_rss_mb']} MB"
            )
        entry["peak_rss_mb"] = max((p["peak_rss_mb"] for p in entry["phases"]), default=0)
        entry["uploads_sent"] = sum(p["uploads"] + p["errors"] for p in entry["phases"])
        if name == "direct":
            if args.pin_one_core:
                pb.set_affinity(up_proc.pid, {1})
            continue
        if name == "nginx-proxy":
            # nginx says so (at warn level) each time a body goes to a temporary file.
            entry["bodies_to_temp_file"] = server.log_path.read_text(errors="replace").count(
                "buffered to a temporary file"
            )
        pb.REGISTRY.stop(server.proc, timeout=args.stop_timeout)
        if db is not None:
            entry["stored"] = pb.count_sidecar_rows(db)
    pb.REGISTRY.stop(up_proc)
    return report


def _key(p: dict[str, Any]) -> tuple[str, bool, int]:
    return (p["size"], p["chunked"], p["clients"])


def markdown_table(report: dict[str, Any]) -> str:
    base = {_key(p): p for p in report["targets"].get(BASELINE, {}).get("phases", [])}
    lines = [
        "| target | body | clients | uploads/s | MB/s | p50 / p99 ms | vs nginx-proxy | CPU ms/upload "
        "| peak RSS MB | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    notes = []
    for name, entry in report["targets"].items():
        if "skipped" in entry:
            notes.append(f"- {name}: skipped ({entry['skipped'].splitlines()[0]})")
            continue
        for p in entry["phases"]:
            b = base.get(_key(p))
            ratio = f"{p['uploads_per_s'] / b['uploads_per_s']:.2f}x" if b and b["uploads_per_s"] else "-"
            body = f"{p['size']}{' chunked' if p['chunked'] else ''}"
            lines.append(
                f"| {name} | {body} | {p['clients']} | {p['uploads_per_s']:,.1f} | {p['mb_per_s']:,.0f} | "
                f"{p['p50_ms']} / {p['p99_ms']} | {ratio} | {p['cpu_ms_per_upload']} | {p['peak_rss_mb']} | "
                f"{p['errors']} |"
            )
        extra = []
        if "bodies_to_temp_file" in entry:
            extra.append(f"{entry['bodies_to_temp_file']} bodies written to nginx's temp dir")
        if "stored" in entry:
            extra.append(f"events stored {entry['stored'].get('events')} for {entry['uploads_sent']} uploads sent")
        if extra:
            notes.append(f"- {name}: peak RSS {entry['peak_rss_mb']} MB over the run; " + "; ".join(extra))
    return "\n".join(lines + ([""] + notes if notes else []))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--phase-seconds", type=float, default=3.0, help="seconds of uploads per phase (default 3)")
    p.add_argument("--quick", action="store_true", help="1 s phases (whole run under a minute)")
    p.add_argument("--workers", type=int, default=1, help="worker processes of nginx-proxy and the sidecar")
    p.add_argument("--pin-one-core", action="store_true", help="target on CPU 0; upstream and clients on CPU 1")
    p.add_argument("--no-chunked", action="store_true", help="skip the chunked-upload phases")
    p.add_argument("--targets", default=",".join(ALL_TARGETS), help=f"subset of {','.join(ALL_TARGETS)}")
    p.add_argument("--out", type=Path, default=pb.REPO / "bench" / "results" / "uploads-latest.json")
    p.add_argument("--ready-timeout", type=float, default=20)
    p.add_argument("--stop-timeout", type=float, default=30)
    p.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (configs, logs, sqlite db)")
    p.add_argument("--serve-upstream", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.phase_seconds = 1.0
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = set(args.targets) - set(ALL_TARGETS)
    if unknown:
        p.error(f"unknown targets {sorted(unknown)}; choose from {ALL_TARGETS}")
    if args.pin_one_core and (os.cpu_count() or 1) < 2:
        p.error("--pin-one-core needs at least 2 CPUs")
    # What proxy_bench's sidecar command line reads.
    args.sidecar_module, args.sidecar_arg = "sidecar", []
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_upstream:
        serve_upstream(args.serve_upstream)
        return 0
    atexit.register(pb.cleanup)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, pb._on_signal)
    tmp = Path(tempfile.mkdtemp(prefix="trackside-upload-bench-"))
    pb._tmp_dirs.append((tmp, args.keep_tmp))
    # Run as root, nginx's workers are "nobody": they must get through to the body temp dir inside.
    tmp.chmod(0o711)
    info = pb.machine_info(args)
    for key in ("page_bytes", "request_headers", "sidecar_variants", "wrk"):
        info.pop(key, None)
    started = time.monotonic()
    try:
        report = run(args, tmp)
    finally:
        pb.cleanup()
    info["loadavg_at_end"] = os.getloadavg()
    info["run_seconds"] = round(time.monotonic() - started, 1)
    report["meta"] = info
    report["markdown"] = markdown_table(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"\nTrackside upload bench — {info['cpus']} CPUs, commit {str(info['git_commit'])[:7]}, "
        f"{args.phase_seconds:g} s a phase, workers {args.workers}, pin-one-core {args.pin_one_core}, "
        f"load {info['loadavg_at_start'][0]:.2f} at start / {info['loadavg_at_end'][0]:.2f} at end, "
        f"{info['run_seconds']} s\n"
    )
    print(report["markdown"])
    print(f"\nJSON: {args.out}")
    return 0


if __name__ == "__main__":
    if shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists():
        raise SystemExit("nginx not found")
    sys.exit(main())
