"""The supervisor of `trackside serve --workers N`, once the server processes are running.

`trackside serve` imports everything, forks the server processes from itself (so they share those
pages) and then replaces itself with this script, same PID, same children (`sidecar.workers`). A
supervisor that kept the imports would hold its own copy of every page the server processes
write to after the fork (reference counts touch every object they use: 17 MB measured with two),
dead weight in a process that only watches. Run as `python -I -S supervisor.py ...`, this imports
only the standard library's smallest modules (about 5 MB).

What it does, as uvicorn's supervisor did:
- a server process that ends, or does not answer a ping for HEALTH_TIMEOUT seconds once it has
  answered one (hung), is killed and replaced; one that ends with uvicorn's start-up failure code
  before it ever served stops everything (the next would fail the same way);
- embedded mode's deriver that ends is started again (`python -m trackside.deriver`, its settings
  on its standard input as the first had them); what it had not derived stays queued meanwhile;
- a process that ends within SHORT_LIFE seconds of its start is started again after a pause that
  doubles each time (1, 2, 4 ... 30 s), so a broken environment does not fork one every half second;
- SIGINT, SIGTERM, SIGQUIT: stop the server processes (each finishes its requests and flushes
  what it captured), then the embedded mode's deriver (it derives what they stored last), then
  remove the run's counter files, and exit;
- SIGHUP: replace every server process, one at a time, each only once its replacement serves;
- SIGTTIN / SIGTTOU: one server process more / fewer.

A replacement is a fresh interpreter (`python -m sidecar.workers`), started cold (2-3 s): it
shares no pages with the others. The listening socket is inherited, so the site is served by the
other processes meanwhile.

Arguments (no argparse: it would import much more than all of this):
    socket=FD  workers=PID:PING:PONG,...  [deriver=PID:FD deriver_settings=FD]  finish=SECONDS  [run_dir=PATH]
    log=text|json  level=NAME  --  COMMAND...   (a replacement: COMMAND --socket-fd FD --ping-fd
    FD --pong-fd FD)"""

from __future__ import annotations

import os
import select
import signal
import sys
import time

STARTUP_FAILURE = 3  # uvicorn's exit code for an app that could not start
PING_SECONDS = 0.5
HEALTH_TIMEOUT = 5.0  # uvicorn's default `timeout_worker_healthcheck`
READY_TIMEOUT = 60.0  # a cold replacement's imports and start, on a loaded machine
STOP_TIMEOUT = 60.0  # a server process's graceful stop is 10 s, then it flushes and closes
SHORT_LIFE = 10.0  # a process that ends sooner than this is started again only after a pause
MAX_PAUSE = 30.0  # the pause doubles with each short life in a row, up to this
HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT, signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU)
LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}


class Worker:
    __slots__ = ("pid", "ping", "pong", "pong_open", "asked", "due", "answered", "started", "born", "start")

    def __init__(self, pid: int, ping: int, pong: int) -> None:
        self.pid = pid
        self.ping = ping  # we write a byte: are you alive?
        self.pong = pong  # it answers b"1" (serving) or b"0" (starting)
        self.pong_open = True
        self.asked: float | None = None  # when the unanswered ping was sent
        self.due = 0.0  # when to send the next one
        self.answered = False
        self.started = False
        self.born = self.start = time.monotonic()

    def close(self) -> None:
        for fd in (self.ping, self.pong):
            try:
                os.close(fd)
            except OSError:
                pass


class Supervisor:
    def __init__(self, args: dict[str, str], command: list[str]) -> None:
        self.socket = int(args["socket"])
        self.command = command
        self.finish = float(args.get("finish", "30"))
        self.run_dir = args.get("run_dir")
        self.json = args.get("log") == "json"
        self.level = LEVELS.get(args.get("level", "info").lower(), 20)
        self.workers: dict[int, Worker] = {}
        for spec in filter(None, args.get("workers", "").split(",")):
            pid, ping, pong = (int(part) for part in spec.split(":"))
            self.workers[pid] = Worker(pid, ping, pong)
            os.set_inheritable(ping, False)
            os.set_inheritable(pong, False)
        self.deriver: tuple[int, int] | None = None
        self.deriver_settings = b""
        self.deriver_start = time.monotonic()
        self.deriver_due: float | None = None
        if args.get("deriver"):
            pid, fd = (int(part) for part in args["deriver"].split(":"))
            os.set_inheritable(fd, False)  # its end of file stops it: no server process may hold it
            self.deriver = (pid, fd)
            # What the deriver reads on its standard input at start, kept to start another.
            settings_fd = int(args["deriver_settings"])
            size = os.fstat(settings_fd).st_size
            self.deriver_settings = os.pread(settings_fd, size, 0)
            os.close(settings_fd)
        self.owed: list[float] = []  # when to start the server processes owed (after a pause)
        self.short_lives = {"server": 0, "deriver": 0}
        self.wanted = len(self.workers)
        self.signals: list[int] = []

    # Logging: the same two formats as the rest of Trackside, without the logging module.
    def log(self, level: str, message: str) -> None:
        if LEVELS[level] < self.level:
            return
        now = time.time()
        if self.json:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"
            text = message.replace("\\", "\\\\").replace('"', '\\"')
            line = f'{{"time": "{stamp}", "level": "{level}", "logger": "trackside.supervisor", "message": "{text}"}}'
        else:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now)) + f",{int(now % 1 * 1000):03d}"
            line = f"{stamp} {level.upper()} trackside.supervisor: {message}"
        try:
            os.write(2, (line + "\n").encode())
        except OSError:
            pass

    def run(self) -> int:
        for number in HANDLED:
            signal.signal(number, lambda number, frame: self.signals.append(number))
        while True:
            code = self.handle_signals()
            if code is None:
                code = self.reap()
            if code is not None:
                return self.stop(code)
            self.start_owed()
            self.check_health()

    def handle_signals(self) -> int | None:
        while self.signals:
            number = self.signals.pop(0)
            if number in (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT):
                self.log("info", f"received {signal.Signals(number).name}: stopping the server processes")
                return 0
            if number == signal.SIGHUP:
                self.log("info", "received SIGHUP: replacing the server processes one at a time")
                self.restart_all()
            elif number == signal.SIGTTIN:
                self.wanted += 1
                self.spawn()
            elif number == signal.SIGTTOU and self.wanted > 1:
                self.wanted -= 1
                pid = max(self.workers, key=lambda pid: self.workers[pid].start)  # the newest
                self.retire(self.workers.pop(pid))
        return None

    def reap(self) -> int | None:
        """Replace what ended; the start-up failure code from one that never served stops all."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return None
            if pid == 0:
                return None
            code = os.waitstatus_to_exitcode(status)
            worker = self.workers.pop(pid, None)
            if worker is not None:
                worker.close()
                if code == STARTUP_FAILURE and not worker.started:
                    self.log("error", f"server process {pid} could not start (exit code {code}): stopping")
                    return STARTUP_FAILURE
                pause = self.pause("server", worker.start)
                self.log("warning", f"server process {pid} ended ({_how(code)}): starting another{_after(pause)}")
                self.owed.append(time.monotonic() + pause)
            elif self.deriver is not None and pid == self.deriver[0]:
                # What it had not derived stays queued (`derive_marks`): the next one derives it.
                os.close(self.deriver[1])
                self.deriver = None
                pause = self.pause("deriver", self.deriver_start)
                self.log("error", f"the deriver ({pid}) ended ({_how(code)}): starting another{_after(pause)}")
                self.deriver_due = time.monotonic() + pause

    def pause(self, kind: str, start: float) -> float:
        """No pause for a process that ran a while; a growing one for a crash at start, again and
        again (a broken environment would otherwise start a process every half second forever)."""
        if time.monotonic() - start >= SHORT_LIFE:
            self.short_lives[kind] = 0
            return 0.0
        self.short_lives[kind] += 1
        return min(MAX_PAUSE, 2.0 ** (self.short_lives[kind] - 1))

    def start_owed(self) -> None:
        now = time.monotonic()
        for due in sorted(self.owed):
            if due <= now:
                self.owed.remove(due)
                self.spawn()
        if self.deriver_due is not None and self.deriver_due <= now:
            self.deriver_due = None
            self.spawn_deriver()

    def spawn_deriver(self) -> None:
        """`python -m trackside.deriver`, its settings on its standard input, as the first one had."""
        made: list[int] = []
        try:
            made += os.pipe()
            read_end, write_end = made
            pid = os.fork()
        except OSError as exc:
            for fd in made:
                os.close(fd)
            self.log("error", f"cannot start the deriver now ({exc}): trying again in 5 s")
            self.deriver_due = time.monotonic() + 5.0
            return
        if pid == 0:  # pragma: no cover - replaced by exec
            try:
                os.close(write_end)
                os.setsid()  # as the first: a terminal's Ctrl-C goes to the supervisor
                os.dup2(read_end, 0)
                for number in HANDLED:
                    signal.signal(number, signal.SIG_DFL)
                argv = [self.command[0], "-m", "trackside.deriver"]
                os.execv(argv[0], argv)
            finally:
                os._exit(127)
        os.close(read_end)
        os.write(write_end, len(self.deriver_settings).to_bytes(8, "big") + self.deriver_settings)
        self.deriver = (pid, write_end)
        self.deriver_start = time.monotonic()
        self.log("info", f"started the deriver {pid}")

    def check_health(self) -> None:
        """Ping each server process every PING_SECONDS and wait (at most that long) for answers."""
        now = time.monotonic()
        for worker in self.workers.values():
            if worker.asked is None and now >= worker.due:
                try:
                    os.write(worker.ping, b"?")
                    worker.asked = now
                except OSError:
                    pass  # it ended: reaped next round
        due = [worker.due for worker in self.workers.values() if worker.asked is None]
        timeout = min(PING_SECONDS, max(0.0, min(due, default=now + PING_SECONDS) - now))
        by_fd = {worker.pong: worker for worker in self.workers.values() if worker.pong_open}
        try:
            ready, _, _ = select.select(list(by_fd), [], [], timeout)
        except OSError:
            ready = []
        now = time.monotonic()
        for fd in ready:
            worker = by_fd[fd]
            try:
                answer = os.read(fd, 64)
            except OSError:
                answer = b""
            if not answer:
                worker.pong_open = False  # its answering thread is gone: it counts as not answering
                continue
            worker.asked = None
            worker.due = now + PING_SECONDS
            worker.answered = True
            worker.started = worker.started or answer.endswith(b"1")
        for worker in self.workers.values():
            limit = HEALTH_TIMEOUT if worker.answered else READY_TIMEOUT
            since = worker.asked if worker.answered else worker.born
            if worker.asked is not None and since is not None and now - since > limit:
                self.log("error", f"server process {worker.pid} did not answer for {limit:.0f} s: killing it")
                _kill(worker.pid, signal.SIGKILL)  # reaped and replaced next round
                worker.asked = None
                worker.answered = False
                worker.born = worker.due = now + 3600  # not killed twice while it dies

    def spawn(self) -> Worker | None:
        """A fresh server process on the inherited socket (None if none could be made now: it is
        owed, and tried again in a few seconds)."""
        made: list[int] = []
        try:
            made += os.pipe()
            made += os.pipe()
            ping_r, ping_w, pong_r, pong_w = made
            pid = os.fork()
        except OSError as exc:
            for fd in made:
                os.close(fd)
            self.owe(exc)
            return None
        if pid == 0:  # pragma: no cover - replaced by exec
            try:
                os.close(ping_w)
                os.close(pong_r)
                os.set_inheritable(ping_r, True)
                os.set_inheritable(pong_w, True)
                for number in HANDLED:
                    signal.signal(number, signal.SIG_DFL)
                fds = ("--socket-fd", str(self.socket), "--ping-fd", str(ping_r), "--pong-fd", str(pong_w))
                argv = [*self.command, *fds]
                os.execv(argv[0], argv)
            finally:
                os._exit(127)
        os.close(ping_r)
        os.close(pong_w)
        worker = self.workers[pid] = Worker(pid, ping_w, pong_r)
        self.log("info", f"started server process {pid}")
        return worker

    def owe(self, exc: OSError) -> None:
        self.log("error", f"cannot start a server process now ({exc}): trying again in 5 s")
        self.owed.append(time.monotonic() + 5.0)

    def restart_all(self) -> None:
        for old in list(self.workers.values()):
            new = self.spawn()
            if new is None or not self.wait_ready(new):
                return
            self.workers.pop(old.pid, None)
            self.retire(old)

    def wait_ready(self, worker: Worker) -> bool:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if any(number in (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT) for number in self.signals):
                return False  # the stop comes first
            try:
                pid, _ = os.waitpid(worker.pid, os.WNOHANG)
            except ChildProcessError:
                pid = worker.pid
            if pid:
                self.workers.pop(worker.pid, None)
                worker.close()
                self.log("error", f"replacement {worker.pid} ended before it served: keeping the others")
                return False
            try:
                os.write(worker.ping, b"?")
                ready, _, _ = select.select([worker.pong], [], [], PING_SECONDS)
                if ready and os.read(worker.pong, 64).endswith(b"1"):
                    worker.started = worker.answered = True
                    return True
            except OSError:
                pass
            time.sleep(0.1)
        self.log("error", f"replacement {worker.pid} did not serve within {READY_TIMEOUT:.0f} s: keeping the others")
        return False

    def retire(self, worker: Worker) -> None:
        _kill(worker.pid, signal.SIGTERM)
        _wait([worker.pid], STOP_TIMEOUT)
        worker.close()

    def stop(self, code: int) -> int:
        pids = list(self.workers)
        for pid in pids:
            _kill(pid, signal.SIGTERM)
        _wait(pids, STOP_TIMEOUT)
        for worker in self.workers.values():
            worker.close()
        self.workers.clear()
        if self.deriver is not None:
            # Its pipe's end of file stops it, once it derived what the server processes stored.
            pid, fd = self.deriver
            os.close(fd)
            _wait([pid], self.finish + 10.0)
        if self.run_dir:
            _remove_tree(self.run_dir)
        return code


def _after(pause: float) -> str:
    return f" in {pause:.0f} s" if pause else ""


def _how(code: int) -> str:
    return f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"


def _kill(pid: int, number: int) -> None:
    try:
        os.kill(pid, number)
    except ProcessLookupError:
        pass


def _wait(pids: list[int], timeout: float) -> None:
    """Wait for these children to end; kill what is left at the deadline."""
    left = set(pids)
    deadline = time.monotonic() + timeout
    while left:
        for pid in list(left):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                left.discard(pid)
        if not left:
            return
        if time.monotonic() > deadline:
            for pid in left:
                _kill(pid, signal.SIGKILL)
                try:
                    os.waitpid(pid, 0)
                except ChildProcessError:
                    pass
            return
        time.sleep(0.05)


def _remove_tree(path: str) -> None:
    try:
        for root, dirs, files in os.walk(path, topdown=False):
            for name in files:
                os.unlink(os.path.join(root, name))
            for name in dirs:
                os.rmdir(os.path.join(root, name))
        os.rmdir(path)
    except OSError:
        pass


def parse(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    split = argv.index("--")
    args = dict(item.split("=", 1) for item in argv[:split])
    return args, argv[split + 1 :]


def main() -> None:
    args, command = parse(sys.argv[1:])
    sys.exit(Supervisor(args, command).run())


if __name__ == "__main__":
    main()
