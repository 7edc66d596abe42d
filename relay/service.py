"""`mailx-relayd`: the local submission service.

Users who cannot read the relay's configuration (a stock `/etc/ssmtp` is 0750 and
`ssmtp.conf` 0640 root:mail, with the password inside) hand their message to this service
over a Unix socket; it delivers with the same code as root's in-process path. The trust
boundary, in short (mailx-relayd(8) has the whole of it):

- who is sending comes from the kernel (`SO_PEERCRED`), never from the request; the
  sender policy of the configuration (`FromLineOverride`, `revaliases`) is applied to that
  uid, and a `Received: by HOST (mailx-relay, from userid UID)` trace header goes first;
- the request (`relay.handoff`) is a wish: recipients, -t, -f, -F, -v. The service never
  opens a path, runs a command or reads a file the client names;
- a message is delivered or queued only once it was read to the client's end-of-input
  (a half-close), within the size limit, from a client that is still there to hear the
  answer; anything else is dropped or refused and the next client is served;
- the client keeps the message on failure (its own dead.letter): the service never
  writes into a home. Queue entries record the sender's uid.

One thread per connection, at most MAX_CLIENTS at a time; more wait in the listen backlog.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time

from relay.errors import ConfigError, DataError, RelayError, TempFailError, UnavailableError

# Annotations only (`typing` at run time is start-up cost: docs/architecture.md, "Start-up time").
TYPE_CHECKING = False
if TYPE_CHECKING:
    import io
    from collections.abc import Callable, Sequence

    from relay.config import Config
    from relay.handoff import Request
    from relay.message import Spooled

PROG = "mailx-relayd"
MAX_CLIENTS = 32
BACKLOG = 128
#: A client that sends nothing for this long is dropped (its slot is someone else's).
READ_TIMEOUT = 30.0
#: And one that trickles: the whole message must come within SLOW_GRACE seconds plus one
#: second per SLOW_RATE bytes, or it is dropped (a byte every 29 s would hold a slot
#: for ever otherwise).
SLOW_GRACE = 60.0
SLOW_RATE = 64 * 1024
#: One user may hold at most this many of the MAX_CLIENTS slots at once; the others are
#: answered "busy" (75: the client keeps the message), so that nobody can take them all.
PER_UID = 24
SOCKET_ACTIVATED_IDLE = 60.0
CHUNK = 1 << 16
SPOOL_AT = 1 << 20

EX_ALREADY = os.EX_UNAVAILABLE  # 69: another instance serves this socket


def log(text: str) -> None:
    """One line on stderr: the journal under systemd."""
    try:
        sys.stderr.write(f"{PROG}: {text}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


# -- the listening socket -----------------------------------------------------------------


def activated_socket() -> socket.socket | None:
    """The socket systemd passed (fd 3), when it was passed to us; the variables are
    removed so that nothing we start believes it was passed one too."""
    pid, fds = os.environ.get("LISTEN_PID"), os.environ.get("LISTEN_FDS")
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)
    if pid is None or fds is None or pid != str(os.getpid()):
        return None
    if fds != "1":
        raise ConfigError(f"socket activation passed {fds} sockets; expected exactly one")
    listener = socket.socket(fileno=3)
    if listener.family != socket.AF_UNIX or listener.type != socket.SOCK_STREAM:
        raise ConfigError("socket activation passed a socket that is not a Unix stream socket")
    return listener


class Bound:
    """A socket this process bound itself, with the lock that makes it ours alone."""

    def __init__(self, path: str, offline_dir: str | None) -> None:
        self.path = path
        directory = os.path.dirname(path) or "."
        _make_dir(directory, 0o755)
        if offline_dir:
            _make_offline_dir(offline_dir)
        if _answers(path):
            raise UnavailableError(f"already running: another {PROG} answers on {path}")
        self.lock_fd = _lock(path + ".lock")
        try:
            try:
                os.unlink(path)  # nobody answers on it: a stale socket from a killed instance
            except FileNotFoundError:
                pass
            except OSError as err:
                raise ConfigError(
                    f"cannot remove the stale socket: {err.strerror}", path=path
                ) from None
            self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                self.listener.bind(path)
                # Every local user may submit; SO_PEERCRED says who they are.
                os.chmod(path, 0o666)  # noqa: S103
                self.listener.listen(BACKLOG)
            except OSError as err:
                self.listener.close()
                raise ConfigError(f"cannot listen: {err.strerror or err}", path=path) from None
            self.inode = os.stat(path).st_ino
        except BaseException:
            os.close(self.lock_fd)
            raise

    def close(self) -> None:
        self.listener.close()
        try:  # remove the socket only if it is still ours (not a successor's)
            if os.stat(self.path).st_ino == self.inode:
                os.unlink(self.path)
        except OSError:
            pass
        os.close(self.lock_fd)


def _make_dir(path: str, mode: int) -> None:
    if os.path.isdir(path):
        return
    try:
        os.makedirs(path, mode=0o755, exist_ok=True)
        os.chmod(path, mode)  # makedirs' mode is filtered by the umask
    except OSError as err:
        raise ConfigError(
            f"cannot create the directory: {err.strerror or err}", path=path
        ) from None


def _make_offline_dir(path: str) -> None:
    """The offline drop (mode 1733, root's), when it is missing; an existing one is left
    as the admin made it (the pickup checks every file it takes anyway)."""
    if os.path.isdir(path):
        return
    parent = os.path.dirname(path.rstrip("/")) or "."
    try:
        if not os.path.isdir(parent):
            # 0755 so users can reach the drop inside; the queue's own subdirectories are
            # 0700, so this shows nobody anything.
            os.makedirs(parent, mode=0o755, exist_ok=True)
            os.chmod(parent, 0o755)  # noqa: S103
        os.mkdir(path, 0o700)
        os.chmod(path, 0o1733)  # noqa: S103 (a drop directory: sticky, not listable)
    except FileExistsError:
        pass
    except OSError as err:
        log(f"warning: {path}: cannot create the offline drop: {err.strerror or err}")


def _answers(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(2.0)
    try:
        probe.connect(path)
    except OSError:
        return False
    finally:
        probe.close()
    return True


def _lock(path: str) -> int:
    import fcntl

    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as err:
        raise ConfigError(f"cannot open the lock file: {err.strerror or err}", path=path) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise UnavailableError(
            f"already running: another {PROG} holds {path} (starting on this socket)"
        ) from None
    return fd


# -- one connection ------------------------------------------------------------------------


def peer_credentials(conn: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process that connected, as the kernel saw it."""
    import struct

    raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return pid, uid, gid


class Dropped(Exception):
    """The client went away or stalled: nobody to answer, nothing to deliver."""


class ListWanted(Exception):
    """The client asked for its listing (`handoff.LIST_LINE`), not to submit."""


def listing(config: Config, uid: int) -> bytes:
    """The answer to a listing request: the peer's entries in the system queue (their
    sidecars, as `relay.queue.Entry.to_json` writes them) and in the spool's dead area.
    Nothing of anyone else's, and no message content."""
    import json

    from relay import deadletter
    from relay.queue import Entry, Queue, queue_dir

    path = queue_dir(config.queue_dir)
    entries: list[object] = []
    try:
        with Queue.open(path, create=False) as queue:
            # Streamed: the peer's entries are held, not the whole system queue's.
            entries = [
                json.loads(e.to_json())
                for e in queue.entries()
                if isinstance(e, Entry) and e.uid == uid
            ]
    except FileNotFoundError:
        pass
    dead = [
        {
            "name": d.name,
            "path": d.path,
            "owner": d.owner,
            "size": d.size,
            "kept_at": d.kept_at,
            "reason": d.reason,
        }
        for d in deadletter.spool_entries(path, owner=uid)
    ]
    answer = {"status": 0, "queue": path, "entries": entries, "dead": dead}
    return json.dumps(answer).encode("ascii") + b"\n"


def receive(conn: socket.socket, limit: int) -> tuple[Request, bytes | Spooled]:
    """Read the request line and the message to the client's half-close.

    Raises DataError (answered) for a malformed request or an oversized message, Dropped
    for a client that stalled, vanished, or closed without a half-close (a client that
    died midway: its message may be cut short, so it is not sent).
    """
    from relay import handoff
    from relay.message import Spooled

    started = time.monotonic()
    buffer = b""
    while b"\n" not in buffer:
        if len(buffer) > handoff.MAX_REQUEST_LINE:
            raise DataError(f"request line too long (more than {handoff.MAX_REQUEST_LINE} bytes)")
        block = _recv(conn, started, len(buffer))
        if not block:
            raise Dropped("closed before the request line ended")
        buffer += block
    line, _, rest = buffer.partition(b"\n")
    if line == handoff.LIST_LINE:
        raise ListWanted
    request = handoff.decode(line)
    del buffer
    held: bytes | Spooled = rest
    size = len(rest)
    if size > limit:
        raise DataError(f"message too large (more than {limit} bytes)")
    while True:
        try:
            block = _recv(conn, started, size)
        except Dropped:
            if isinstance(held, Spooled):
                held.close()
            raise
        if not block:
            break
        size += len(block)
        if size > limit:
            if isinstance(held, Spooled):
                held.close()
            raise DataError(f"message too large (more than {limit} bytes)")
        if isinstance(held, bytes):
            held += block
            if len(held) > SPOOL_AT:
                spool = Spooled()
                spool.write(held)
                held = spool
        else:
            held.write(block)
    if _hung_up(conn):
        if isinstance(held, Spooled):
            held.close()
        raise Dropped("closed the connection without finishing the message")
    return request, held


def _recv(conn: socket.socket, started: float, received: int) -> bytes:
    if time.monotonic() - started > SLOW_GRACE + received / SLOW_RATE:
        raise Dropped(f"too slow ({received} bytes in {time.monotonic() - started:.0f} s)")
    try:
        return conn.recv(CHUNK)
    except TimeoutError:
        raise Dropped(f"sent nothing for {READ_TIMEOUT:.0f} s") from None
    except OSError as err:
        raise Dropped(f"connection lost: {err.strerror or err}") from None


def _hung_up(conn: socket.socket) -> bool:
    """True when the peer closed its socket entirely (it died, or gave up) rather than
    shutting down its write side and waiting for our answer, as a client does."""
    import select

    poller = select.poll()
    poller.register(conn.fileno(), select.POLLHUP)
    return any(event & (select.POLLHUP | select.POLLERR) for _fd, event in poller.poll(0))


def with_trace(raw: bytes | Spooled, header_for: bytes) -> bytes | Spooled:
    """The message with `header_for` (built for its line ending) first."""
    from relay.message import Spooled

    if isinstance(raw, bytes):
        return header_for + raw
    spool = Spooled()
    try:
        spool.write(header_for)
        for block in raw.blocks():
            spool.write(block)
    except BaseException:
        spool.close()
        raise
    finally:
        raw.close()
    return spool


class Answer:
    def __init__(self, status: int, lines: list[str], transcript: str = "") -> None:
        self.status = status
        self.lines = lines
        self.transcript = transcript

    def encode(self) -> bytes:
        import json

        data: dict[str, object] = {"status": self.status, "lines": self.lines}
        if self.transcript:
            data["transcript"] = self.transcript
        return json.dumps(data, ensure_ascii=True).encode("ascii") + b"\n"


def deliver(config: Config, request: Request, raw: bytes | Spooled, uid: int, host: str) -> Answer:
    """Submit one received message for `uid` as root's in-process `sendmail` would."""
    import io

    from relay import credentials, submission
    from relay.envelope import identity_of
    from relay.handoff import line_ending, trace_header

    head = raw[:4096] if isinstance(raw, bytes) else raw.pread(0, 4096)
    message = with_trace(raw, trace_header(host, uid, line_ending(head)))
    transcript = io.StringIO() if request.verbose else None
    try:
        # The admin's AuthPassCommand runs here, as in root's in-process path.
        password = credentials.resolve(config) if config.auth_user else None
        result = submission.submit(
            message,
            request.envelope(identity_of(uid)),
            config=config,
            password=password,
            verbose=transcript,
            keep_on_failure=False,
        )
    except RelayError as err:
        return Answer(err.exit_code, [str(err)], _text(transcript))
    finally:
        from relay.message import Spooled

        if isinstance(message, Spooled):
            message.close()
    lines = []
    if request.verbose and result.recipients:
        lines.append(
            f"delivered to {', '.join(result.recipients)} via {result.mailhub}: {result.reply}"
        )
    if result.queued_id and (request.verbose or config.queue != "always"):
        lines.append(f"queued as {result.queued_id}: {result.queued_reason}")
    return Answer(os.EX_OK, lines, _text(transcript))


def _text(transcript: io.StringIO | None) -> str:
    return transcript.getvalue() if transcript is not None else ""


def _summary(answer: Answer, request: Request | None) -> str:
    if answer.status == os.EX_OK:
        queued = [line for line in answer.lines if line.startswith("queued as ")]
        if queued:
            return queued[0].split(":", 1)[0]
        return "delivered" + (f" ({len(request.recipients)} recipients given)" if request else "")
    return f"failed with status {answer.status}: {answer.lines[-1] if answer.lines else ''}"


# -- the service ---------------------------------------------------------------------------


class Service:
    def __init__(
        self,
        listener: socket.socket,
        config_path: str | None,
        config: Config,
        idle_timeout: float,
        max_message: int | None = None,
    ) -> None:
        self.listener = listener
        self.config_path = config_path
        self.config = config
        self.idle_timeout = idle_timeout
        self.max_message = max_message
        self.slots = threading.BoundedSemaphore(MAX_CLIENTS)
        self.active = 0
        self.active_lock = threading.Lock()
        self.per_uid: dict[int, int] = {}
        self.last_activity = time.monotonic()
        self.stopping = False
        self.reload_wanted = False
        self.host = socket.gethostname()

    def limit(self) -> int:
        from relay.handoff import DEFAULT_MAX_MESSAGE, configured_limit

        return configured_limit(self.config) or self.max_message or DEFAULT_MAX_MESSAGE

    def reload(self) -> None:
        from relay.config import load

        try:
            self.config = load(self.config_path)
        except RelayError as err:
            log(f"reload failed, keeping the previous configuration: {err}")
            return
        for warning in self.config.warnings:
            log(warning)
        log(f"configuration reloaded from {self.config.path}")

    def serve(self) -> None:
        self.listener.settimeout(1.0)
        while not self.stopping:
            if self.reload_wanted:
                self.reload_wanted = False
                self.reload()
            if not self.slots.acquire(timeout=1.0):
                continue
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                self.slots.release()
                if self._idle():
                    log(f"idle for {self.idle_timeout:g} s, exiting")
                    return
                continue
            except InterruptedError:
                self.slots.release()
                continue
            except OSError as err:
                self.slots.release()
                log(f"accept failed: {err.strerror or err}")
                time.sleep(0.1)
                continue
            if self.reload_wanted:  # SIGHUP while accept() waited: this client gets the new one
                self.reload_wanted = False
                self.reload()
            with self.active_lock:
                self.active += 1
                self.last_activity = time.monotonic()
            thread = threading.Thread(target=self.handle, args=(conn,), daemon=False)
            try:
                thread.start()
            except RuntimeError:
                self._done(conn)
                log("cannot start a thread for a client; it was dropped")

    def _idle(self) -> bool:
        if self.idle_timeout <= 0:
            return False
        with self.active_lock:
            quiet = time.monotonic() - self.last_activity
            return self.active == 0 and quiet >= self.idle_timeout

    def _done(self, conn: socket.socket) -> None:
        try:
            conn.close()
        finally:
            with self.active_lock:
                self.active -= 1
                self.last_activity = time.monotonic()
            self.slots.release()

    def handle(self, conn: socket.socket) -> None:
        try:
            self._handle(conn)
        except Exception as err:  # never let one client take the service down
            log(f"internal error serving a client: {type(err).__name__}: {err}")
        finally:
            self._done(conn)

    def _handle(self, conn: socket.socket) -> None:
        pid, uid, _gid = peer_credentials(conn)
        who = f"uid={uid} pid={pid}"
        with self.active_lock:
            mine = self.per_uid.get(uid, 0)
            if mine < PER_UID:
                self.per_uid[uid] = mine + 1
        if mine >= PER_UID:
            log(f"{who}: busy: {mine} submissions of this user in progress")
            busy = TempFailError(f"the submission service is busy with {mine} of your messages")
            self._answer(conn, Answer(busy.exit_code, [str(busy)]), who, None)
            return
        try:
            self._serve(conn, uid, who)
        finally:
            with self.active_lock:
                self.per_uid[uid] -= 1
                if not self.per_uid[uid]:
                    del self.per_uid[uid]

    def _serve(self, conn: socket.socket, uid: int, who: str) -> None:
        config = self.config
        conn.settimeout(READ_TIMEOUT)
        request: Request | None = None
        try:
            request, raw = receive(conn, self.limit())
        except ListWanted:
            try:
                conn.sendall(listing(config, uid))
            except OSError as err:
                log(f"{who}: listing not sent ({err.strerror or err})")
            return
        except Dropped as err:
            log(f"{who}: dropped: {err}")
            return
        except DataError as err:
            self._answer(conn, Answer(err.exit_code, [str(err)]), who, None)
            return
        if request.claimed_uid not in (-1, uid):
            log(f"{who}: the request claims uid {request.claimed_uid}; using the kernel's {uid}")
        try:
            answer = deliver(config, request, raw, uid, config.hostname or self.host)
        except Exception as err:  # a bug: the client keeps the message, we go on
            answer = Answer(os.EX_SOFTWARE, [f"internal error: {type(err).__name__}: {err}"])
        finally:
            from relay.message import Spooled

            if isinstance(raw, Spooled):
                raw.close()
        self._answer(conn, answer, who, request)

    def _answer(
        self, conn: socket.socket, answer: Answer, who: str, request: Request | None
    ) -> None:
        try:
            conn.sendall(answer.encode())
        except OSError as err:
            log(
                f"{who}: {_summary(answer, request)}; the client went away before the answer "
                f"({err.strerror or err})"
            )
            return
        log(f"{who}: {_summary(answer, request)}")


# -- command line --------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """The `mailx-relayd` console script, through `relay.entry.run` like every command, but
    always with an argument list: then the interpreter's own exit waits for the clients
    still being served (their threads are not daemons), which `relay.entry.finish` would
    cut off."""
    from relay.entry import run as run_command

    return run_command(PROG, _main, sys.argv[1:] if argv is None else list(argv))


def _main(argv: list[str]) -> int:
    import argparse

    from relay.entry import print_version

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="The local submission service of mailx-relay (see mailx-relayd(8)).",
    )
    parser.add_argument("--socket", metavar="PATH", help="listen on PATH (not under systemd)")
    parser.add_argument("-C", dest="config", metavar="FILE", help="the configuration file")
    parser.add_argument(
        "--idle-timeout",
        metavar="SECONDS",
        type=float,
        help="exit after SECONDS without a client (default: 60 when socket-activated, "
        "else 0 = never)",
    )
    parser.add_argument("-V", "--version", action="store_true", help="print the version")
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:
        return int(done.code or 0) and os.EX_USAGE
    if args.version:
        return print_version(PROG)
    return run(args.socket, args.config, args.idle_timeout)


def run(socket_arg: str | None, config_arg: str | None, idle: float | None) -> int:
    import signal

    from relay.config import load

    # The handlers come first: a client (or systemd) may signal as soon as the socket
    # answers, and SIGHUP's default action would end the service. A signal before the
    # Service exists is remembered and handed to it.
    early = {"stopping": False, "reload_wanted": False}
    started: list[Service] = []

    def flag(name: str) -> Callable[[int, object], None]:
        def handler(_signum: int, _frame: object) -> None:
            if started:
                setattr(started[0], name, True)
            else:
                early[name] = True

        return handler

    signal.signal(signal.SIGTERM, flag("stopping"))
    signal.signal(signal.SIGINT, flag("stopping"))
    signal.signal(signal.SIGHUP, flag("reload_wanted"))
    try:
        config = load(config_arg)
    except RelayError as err:
        log(str(err))
        return os.EX_CONFIG
    bound: Bound | None = None
    try:
        listener = activated_socket()
        if listener is None:
            from relay import offline
            from relay.client import socket_path

            path = socket_arg or socket_path()
            bound = Bound(path, offline.default_dir())
            listener = bound.listener
            where = path
        else:
            where = "the socket systemd passed"
    except RelayError as err:
        log(str(err))
        return err.exit_code
    for warning in config.warnings:  # after the socket: a refused second start says one line
        log(warning)
    # What users dropped while no service ran joins the system queue now (the flush timer
    # sends it); a problem with one file is logged, and the service starts anyway.
    from relay.mailq import pickup_offline

    pickup_offline(config, sys.stderr, prog=PROG)
    if idle is None:
        idle = SOCKET_ACTIVATED_IDLE if bound is None else 0.0
    service = Service(listener, config_arg, config, idle)
    started.append(service)
    service.stopping = service.stopping or early["stopping"]
    service.reload_wanted = service.reload_wanted or early["reload_wanted"]
    log(f"serving on {where} with {config.path} (pid {os.getpid()})")
    try:
        service.serve()
    finally:
        if bound is not None:
            bound.close()
    if service.stopping:
        log("stopping: clients in progress are finished first")
    # Clients in progress finish (their threads are not daemons): nothing is cut short.
    return os.EX_OK
