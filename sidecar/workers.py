"""`trackside serve --workers N`: the server processes, forked from one process that imported
everything, and the supervisor that replaces that process once they run.

Started as `python -m sidecar.workers --socket-fd FD --ping-fd FD --pong-fd FD`, this module is
also a replacement server process, started by the supervisor (`sidecar/supervisor.py`) on the
inherited listening socket."""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any, NoReturn

from trackside.settings import Settings

# What a server process imports after `sidecar.app` (found with `python -X importtime`): uvicorn's
# loop and WebSocket protocol, the SQLite driver, the derivation's tables, httpx's transport.
_IMPORTED_AFTER_START = (
    "uvloop",
    "uvicorn.lifespan.on",
    "uvicorn.protocols.websockets.websockets_sansio_impl",
    "sqlite3",
    "aiosqlite",
    "httpcore",
    "trackside.enrich.sources",
    "trackside.fact_paths",
)

SUPERVISOR = Path(__file__).with_name("supervisor.py")


def serve_forked(settings: Settings, options: dict[str, Any], run_dir: str) -> NoReturn:
    """Import everything here, fork the server processes (and embedded mode's deriver) from this
    process, so they share those pages (copy-on-write) instead of each importing its own copy in a
    fresh interpreter (uvicorn spawns them), then become the small supervisor.

    Measured with two workers: each spawned worker held about 100 MB (PSS) of its own. Objects made
    at import are frozen first, so the workers' garbage collections never write to (and so copy)
    the pages that hold them. The collector is off while importing and is not run before freezing,
    as CPython's `gc.freeze` documentation advises: a collection here would free objects among the
    imported ones, and the workers' new objects would then fill those holes, writing to (and so
    copying) the shared pages around them. No thread or event loop starts here before the forks."""
    import gc

    import uvicorn

    gc.disable()
    import sidecar.app  # noqa: F401 - the import itself is the point

    names: tuple[str, ...] = _IMPORTED_AFTER_START
    if settings.database_url.startswith("postgresql"):
        names += ("asyncpg", "asyncpg.pool")  # imported at the first connection
    for name in names:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    _build_once(settings)
    gc.freeze()
    gc.enable()  # from here it only ever walks objects made after the freeze

    config = uvicorn.Config("sidecar.app:create_app", factory=True, workers=settings.workers, **options)
    sock = config.bind_socket()
    deriver = None
    if settings.redis_url is None and settings.deriver == "process":
        # One deriver for every server process, stopped after them (see `SharedDeriver`).
        os.environ["TRACKSIDE_DERIVER"] = "off"
        deriver = SharedDeriver(settings)
    held = [deriver.pipe, deriver.settings_fd] if deriver is not None else []
    workers: list[tuple[int, int, int]] = []
    for _ in range(settings.workers):
        ping_r, ping_w = os.pipe()
        pong_r, pong_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            for fd in (ping_w, pong_r, *held):
                os.close(fd)  # the supervisor's ends: a server process holding them would keep them open
            _run_forked(config, sock, ping_r, pong_w)
        os.close(ping_r)
        os.close(pong_w)
        held += (ping_w, pong_r)
        workers.append((pid, ping_w, pong_r))

    from trackside.deriver import FINISH_SECONDS

    for fd in (sock.fileno(), *held):
        os.set_inheritable(fd, True)
    argv = [
        *(sys.executable, "-I", "-S", str(SUPERVISOR)),
        f"socket={sock.fileno()}",
        "workers=" + ",".join(f"{pid}:{ping}:{pong}" for pid, ping, pong in workers),
        *([f"deriver={deriver.pid}:{deriver.pipe}", f"deriver_settings={deriver.settings_fd}"] if deriver else []),
        f"finish={FINISH_SECONDS}",
        f"run_dir={run_dir}",
        f"log={settings.log_format}",
        f"level={settings.log_level}",
        "--",
        *(sys.executable, "-m", "sidecar.workers"),
    ]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, argv)


_built_in_supervisor: Any = None


def _build_once(settings: Settings) -> None:
    """Build the app once here, unused, before the fork. Building it runs code no import runs:
    on CPython 3.11 a function's first calls rewrite its bytecode in place (specialization), and
    first uses fill lazy caches, both writes that each server process would otherwise make to the
    shared pages, and so copy them. Measured: a forked process building the app made 14 MB of
    pages its own; 4.7 MB after this. The app is kept (never started: no connection, thread or
    file) so that freeing it does not leave holes among the shared pages for new objects to fill."""
    from sidecar.app import create_app
    from trackside.metric_files import SHARED_ENV

    global _built_in_supervisor
    shared = os.environ.pop(SHARED_ENV, None)  # no counter file for an app that never serves
    try:
        _built_in_supervisor = create_app(settings)
    finally:
        if shared is not None:
            os.environ[SHARED_ENV] = shared


def _run_forked(config: Any, sock: Any, ping_fd: int, pong_fd: int) -> NoReturn:
    """A forked server process: it never returns to the code that forked it."""
    code: Any = 1
    try:
        config.configure_logging()
        serve(config, sock, ping_fd, pong_fd)
        code = 0
    except SystemExit as exc:
        code = exc.code
    except KeyboardInterrupt:
        code = 0
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code if isinstance(code, int) else 1)


class _Pongs:
    """Answers the supervisor's pings from a thread: b"1" once the server serves, b"0" before. A
    process whose event loop is stuck still answers (as with uvicorn's supervisor, this finds
    processes that are gone or frozen whole); the end of the pipe means the supervisor is gone."""

    def __init__(self, ping_fd: int, pong_fd: int) -> None:
        self.server: Any = None
        self.ping_fd = ping_fd
        self.pong_fd = pong_fd
        threading.Thread(target=self._answer, name="trackside-pong", daemon=True).start()

    def _answer(self) -> None:
        while True:
            try:
                if not os.read(self.ping_fd, 64):
                    return
                server = self.server
                os.write(self.pong_fd, b"1" if server is not None and server.started else b"0")
            except OSError:
                return


def serve(config: Any, sock: Any, ping_fd: int, pong_fd: int, pongs: _Pongs | None = None) -> None:
    import uvicorn

    _on_parent_death(signal.SIGTERM)  # a supervisor killed outright leaves no server behind
    if pongs is None:
        pongs = _Pongs(ping_fd, pong_fd)
    pongs.server = server = uvicorn.Server(config)
    server.run(sockets=[sock])
    if not server.started:
        sys.exit(3)  # uvicorn's STARTUP_FAILURE: the supervisor stops rather than start another


def main() -> None:
    """A replacement server process, started by the supervisor: the settings are in the
    environment `trackside serve` left, the listening socket and the ping pipes are inherited."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m sidecar.workers")
    for name in ("--socket-fd", "--ping-fd", "--pong-fd"):
        parser.add_argument(name, type=int, required=True)
    args = parser.parse_args()
    pongs = _Pongs(args.ping_fd, args.pong_fd)  # first: the imports below take seconds
    parent = os.getppid()
    _on_parent_death(signal.SIGTERM)
    if os.getppid() != parent:
        sys.exit(0)  # the supervisor died before the line above
    import socket

    import uvicorn

    from sidecar.server import uvicorn_options
    from trackside.logs import configure_logging

    settings = Settings.from_env()
    configure_logging(settings.log_level, settings.log_format)
    options = uvicorn_options(settings)
    options["log_config"] = None
    config = uvicorn.Config("sidecar.app:create_app", factory=True, **options)
    sock = socket.socket(fileno=args.socket_fd)
    _name_process(b"trackside-serve")
    try:
        serve(config, sock, args.ping_fd, args.pong_fd, pongs)
    except KeyboardInterrupt:
        pass


class SharedDeriver:
    """Embedded mode with several server processes: one deriver for all of them, a child of the
    process that forks them, forked after everything was imported (so it shares those pages too).

    Each server process would otherwise start its own (`trackside.deriver.DeriverProcess`, a fresh
    interpreter of about 80 MB), and only one of them derives at a time anyway. The child runs
    `trackside.deriver.main()`, as `python -m trackside.deriver` does: the settings arrive on its
    standard input, a pipe from here, whose end of file (the supervisor closing it, or dying) stops
    it. The supervisor stops it after the server processes, so it derives the last events they wrote."""

    def __init__(self, settings: Settings) -> None:
        import pickle

        payload = pickle.dumps(settings)
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the deriver
            code = 1
            try:
                os.close(write_end)
                os.setsid()  # a terminal's Ctrl-C goes to the supervisor, which stops it
                _name_process(b"trackside-deriv")  # in ps and top; its command line is `trackside serve`'s
                os.dup2(read_end, 0)
                os.close(read_end)
                sys.stdin = os.fdopen(0, "r", closefd=False)
                from trackside import deriver

                deriver.main()
                code = 0
            finally:
                os._exit(code)
        os.close(read_end)
        self.pid = pid
        self.pipe = write_end
        os.write(write_end, len(payload).to_bytes(8, "big") + payload)
        # The same settings for the supervisor, which starts another deriver if this one ends: in
        # memory (never in a file: they hold the admin token), read once and closed.
        self.settings_fd = os.memfd_create("trackside-deriver-settings")
        os.write(self.settings_fd, payload)


def _on_parent_death(number: int) -> None:
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(1, number, 0, 0, 0)  # PR_SET_PDEATHSIG


def _name_process(name: bytes) -> None:
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(15, ctypes.c_char_p(name), 0, 0, 0)  # PR_SET_NAME


if __name__ == "__main__":
    main()
