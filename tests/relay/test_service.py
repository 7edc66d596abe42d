"""The submission service's parts in-process: reading a client, the trace header, the
offline drop writer, the client's fallbacks, and a service thread served by real sockets."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from relay import client, handoff, offline, service
from relay.config import load
from relay.envelope import identity_of
from relay.errors import ConfigError, DataError
from relay.handoff import line_ending, trace_header
from relay.message import Spooled
from tests.e2e.tools import unprivileged_python
from tests.mailhub import MailHubFactory, closed_port
from tests.relayconf import write_config

REQUEST = handoff.Request(("a@example.com",), envelope_from="me@example.org")


def pair() -> tuple[socket.socket, socket.socket]:
    server, peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    server.settimeout(5)
    return server, peer


# -- receive ------------------------------------------------------------------------------


def test_receive_reads_request_and_message_to_the_half_close() -> None:
    server, peer = pair()
    with server, peer:
        peer.sendall(handoff.encode(REQUEST) + b"Subject: x\n\nbody\n")
        peer.shutdown(socket.SHUT_WR)
        request, raw = service.receive(server, 1000)
    assert request == REQUEST
    assert raw == b"Subject: x\n\nbody\n"


def test_receive_spools_a_big_message() -> None:
    body = b"x" * (service.SPOOL_AT + 10)
    server, peer = pair()
    with server, peer:
        writer = threading.Thread(
            target=lambda: (peer.sendall(handoff.encode(REQUEST) + body), peer.shutdown(1))
        )
        writer.start()
        _request, raw = service.receive(server, 10 * service.SPOOL_AT)
        writer.join()
    assert isinstance(raw, Spooled)
    try:
        assert raw.size == len(body) and raw.read_all() == body
    finally:
        raw.close()


def test_a_client_gone_without_half_close_is_dropped_not_delivered() -> None:
    server, peer = pair()
    with server:
        peer.sendall(handoff.encode(REQUEST) + b"Subject: x\n\nthe first ha")
        peer.close()
        with pytest.raises(service.Dropped, match="without finishing"):
            service.receive(server, 1000)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"HELO there\n", "bad magic"),
        (handoff.MAGIC + b"{nope\n", "not ASCII JSON"),
        (handoff.MAGIC + b"x" * (handoff.MAX_REQUEST_LINE + 10), "too long"),
        (handoff.encode(REQUEST) + b"y" * 2000, "too large"),
    ],
)
def test_bad_input_is_a_data_error(data: bytes, match: str) -> None:
    server, peer = pair()
    with server, peer:
        writer = threading.Thread(target=lambda: _send_quietly(peer, data))
        writer.start()
        with pytest.raises(DataError, match=match):
            service.receive(server, 1000)
        server.close()
        writer.join()


def _send_quietly(sock: socket.socket, data: bytes) -> None:
    with contextlib.suppress(OSError):
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)


def test_a_silent_client_times_out() -> None:
    server, peer = pair()
    with server, peer:
        server.settimeout(0.2)
        with pytest.raises(service.Dropped, match="sent nothing"):
            service.receive(server, 1000)


def test_a_client_that_trickles_is_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    """A byte now and then never trips the idle timeout; the whole-message deadline does."""
    monkeypatch.setattr(service, "SLOW_GRACE", 0.3)
    server, peer = pair()
    stop = threading.Event()

    def trickle() -> None:
        with contextlib.suppress(OSError):
            peer.sendall(handoff.encode(REQUEST))
            while not stop.wait(0.05):
                peer.sendall(b"x")

    writer = threading.Thread(target=trickle)
    with server, peer:
        writer.start()
        try:
            with pytest.raises(service.Dropped, match="too slow"):
                service.receive(server, 1 << 20)
        finally:
            stop.set()
            writer.join()


def test_one_user_cannot_take_every_slot(tmp_path: Path) -> None:
    """Past PER_UID submissions in progress, the same uid is answered busy (75: its
    client keeps the message) and the slot is free again at once."""
    conf = load(str(write_config(tmp_path, None, mailhub=f"127.0.0.1:{closed_port()}")))
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with listener:
        running = service.Service(listener, None, conf, 30)
        running.per_uid[os.getuid()] = service.PER_UID
        server, peer = pair()
        with server, peer:
            running.active += 1  # as serve() counts an accepted client
            running.slots.acquire()
            running.handle(server)
            answer = json.loads(peer.recv(65536))
        assert answer["status"] == os.EX_TEMPFAIL
        assert "busy" in answer["lines"][0]
        assert running.per_uid[os.getuid()] == service.PER_UID


def test_peer_credentials_are_the_kernels() -> None:
    server, peer = pair()
    with server, peer:
        assert service.peer_credentials(server) == (os.getpid(), os.getuid(), os.getgid())


# -- the trace header -----------------------------------------------------------------------


def test_trace_header_goes_first_with_the_messages_line_ending() -> None:
    crlf = service.with_trace(b"Subject: x\r\n\r\nb\r\n", trace_header("h", 1500, b"\r\n"))
    assert isinstance(crlf, bytes)
    assert re.match(
        rb"Received: by h \(mailx-relay, from userid 1500\);\r\n\t\w{3}, \d{2} \w{3} \d{4} "
        rb"\d\d:\d\d:\d\d [+-]\d{4}\r\nSubject: x\r\n",
        crlf,
    )
    assert line_ending(b"Subject: x\nTo: y\n") == b"\n"
    assert line_ending(b"Subject: x\r\nTo: y\r\n") == b"\r\n"


def test_identity_of_a_uid_without_passwd_entry_is_its_number() -> None:
    assert identity_of(0).login == "root"
    assert identity_of(4_000_000_123) == ("4000000123", 4_000_000_123, None)


# -- the offline drop writer ----------------------------------------------------------------


def test_drop_writes_request_and_message_durably_and_privately(tmp_path: Path) -> None:
    path = offline.drop(REQUEST, b"Subject: o\n\nhi\n", str(tmp_path))
    name = os.path.basename(path)
    assert re.fullmatch(r"msg\.\d{19}\.\d+\.[0-9a-f]{16}", name)
    assert os.listdir(tmp_path) == [name]  # no tmp. file left behind
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    data = Path(path).read_bytes()
    assert data == handoff.encode(REQUEST) + b"Subject: o\n\nhi\n"


def test_drop_copies_a_spooled_message(tmp_path: Path) -> None:
    spool = Spooled()
    spool.write(b"Subject: big\n\n" + b"z" * 300_000)
    try:
        path = offline.drop(REQUEST, spool, str(tmp_path))
    finally:
        spool.close()
    assert Path(path).read_bytes().endswith(b"z" * 300_000)


def test_drop_without_its_directory_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        offline.drop(REQUEST, b"x", str(tmp_path / "missing"))
    assert caught.value.errno == errno.ENOENT


# -- when the client is used ----------------------------------------------------------------


def test_only_a_permission_error_on_the_config_hands_off(tmp_path: Path) -> None:
    missing = ConfigError("cannot read: No such file or directory")
    missing.errno = errno.ENOENT
    denied = ConfigError("cannot read: Permission denied")
    denied.errno = errno.EACCES
    assert client.needs_service(denied)
    assert not client.needs_service(missing)
    assert not client.needs_service(ConfigError("no mailhub set"))
    assert not client.needs_service(DataError("x"))


def test_load_records_the_errno_for_an_unreadable_config(tmp_path: Path) -> None:
    conf = write_config(tmp_path, None, mailhub="127.0.0.1:25")
    tmp_path.chmod(0o755)
    code = (
        "import sys; from relay.config import load; from relay.errors import ConfigError\n"
        "try:\n    load(sys.argv[1])\nexcept ConfigError as err:\n    print(err.errno)\n"
    )
    done = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
         *unprivileged_python(code), str(conf)],
        capture_output=True, check=False, cwd="/",
    )  # fmt: skip
    assert done.stdout.strip() == str(errno.EACCES).encode(), done.stderr
    with pytest.raises(ConfigError) as caught:
        load(str(tmp_path / "nope.conf"))
    assert caught.value.errno == errno.ENOENT


# -- the client against an in-process service -----------------------------------------------


@pytest.fixture
def running(tmp_path: Path, mailhub: MailHubFactory) -> Iterator[tuple[Path, object]]:
    hub = mailhub()
    conf = write_config(tmp_path, hub)
    bound = service.Bound(str(tmp_path / "run" / "s.sock"), str(tmp_path / "spool" / "offline"))
    svc = service.Service(bound.listener, str(conf), load(str(conf)), 0)
    thread = threading.Thread(target=svc.serve)
    thread.start()
    try:
        yield tmp_path, hub
    finally:
        svc.stopping = True
        thread.join(10)
        bound.close()


def test_bound_makes_the_directories_and_an_open_socket(running: tuple[Path, object]) -> None:
    tmp_path, _hub = running
    assert stat.S_IMODE((tmp_path / "run").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "run" / "s.sock").stat().st_mode) == 0o666
    assert stat.S_IMODE((tmp_path / "spool" / "offline").stat().st_mode) == 0o1733
    with pytest.raises(service.UnavailableError, match="already running"):
        service.Bound(str(tmp_path / "run" / "s.sock"), None)


def test_hand_off_delivers_and_prints_the_services_lines(
    running: tuple[Path, object], capsys: pytest.CaptureFixture[str]
) -> None:
    tmp_path, hub = running
    env = {"RELAY_SOCKET": str(tmp_path / "run" / "s.sock")}
    request = handoff.Request(("a@example.com",), verbose=True)
    status = client.hand_off(request, b"Subject: h\n\nhi\n", prog="sendmail", environ=env)
    assert status == 0
    err = capsys.readouterr().err
    assert "--> MAIL FROM:" in err  # the transcript, verbatim
    assert re.search(r"^sendmail: delivered to a@example.com via 127\.0\.0\.1:\d+: 250", err, re.M)
    (received,) = hub.wait_for(1)  # type: ignore[attr-defined]
    assert received.data.startswith(b"Received: by ")


def test_hand_off_failure_is_kept_by_the_client(
    running: tuple[Path, object], capsys: pytest.CaptureFixture[str]
) -> None:
    tmp_path, _hub = running
    env = {"RELAY_SOCKET": str(tmp_path / "run" / "s.sock")}
    dead = tmp_path / "dead.letter"
    request = handoff.Request(("nosuchuser1234",))
    status = client.hand_off(
        request, b"Subject: k\n\nhi\n", prog="mail", dead_letter=str(dead), environ=env
    )
    assert status == os.EX_NOUSER
    err = capsys.readouterr().err.splitlines()  # the in-process service logs here too
    (line,) = [text for text in err if not text.startswith("mailx-relayd: ")]
    assert line.startswith("mail: recipient 'nosuchuser1234'")
    assert line.endswith(f"; message kept in {dead}")
    assert b"Subject: k" in dead.read_bytes()


def test_a_service_that_dies_before_answering_is_75_and_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = str(tmp_path / "mute.sock")
    mute = socket.socket(socket.AF_UNIX)
    mute.bind(path)
    mute.listen()

    def swallow() -> None:
        conn, _ = mute.accept()
        conn.recv(100)
        conn.close()

    thread = threading.Thread(target=swallow)
    thread.start()
    dead = tmp_path / "dead.letter"
    try:
        status = client.hand_off(
            REQUEST, b"Subject: m\n\nhi\n", prog="sendmail", dead_letter=str(dead),
            environ={"RELAY_SOCKET": path},
        )  # fmt: skip
    finally:
        thread.join()
        mute.close()
    assert status == os.EX_TEMPFAIL
    assert "did not answer" in capsys.readouterr().err
    assert b"Subject: m" in dead.read_bytes()


def test_no_service_writes_the_offline_drop(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "offline").mkdir()
    env = {"RELAY_SOCKET": str(tmp_path / "none.sock"), "RELAY_OFFLINE": str(tmp_path / "offline")}
    status = client.hand_off(REQUEST, b"Subject: o\n\nhi\n", prog="sendmail", environ=env)
    assert status == 0
    (dropped,) = (tmp_path / "offline").iterdir()
    assert capsys.readouterr().err == (
        f"sendmail: queued for the system relay in {dropped} "
        "(the submission service is not running)\n"
    )
    line = dropped.read_bytes().split(b"\n", 1)[0]
    assert handoff.decode(line).claimed_uid == os.getuid()


def test_a_message_too_large_for_the_drop_is_refused_and_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pickup would set it aside where the user cannot see it: refused now (65) and
    kept in the user's dead.letter, never "queued" with exit 0."""
    monkeypatch.setattr(handoff, "DEFAULT_MAX_MESSAGE", 100)
    (tmp_path / "offline").mkdir()
    env = {"RELAY_SOCKET": str(tmp_path / "none.sock"), "RELAY_OFFLINE": str(tmp_path / "offline")}
    dead = tmp_path / "dead.letter"
    big = b"Subject: big\n\n" + b"x" * 200 + b"\n"
    status = client.hand_off(REQUEST, big, prog="sendmail", dead_letter=str(dead), environ=env)
    assert status == os.EX_DATAERR
    assert list((tmp_path / "offline").iterdir()) == []
    (line,) = capsys.readouterr().err.splitlines()
    assert "too large for the offline drop" in line and line.endswith(f"message kept in {dead}")
    assert b"x" * 200 in dead.read_bytes()


def test_neither_service_nor_drop_is_78_naming_the_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {"RELAY_SOCKET": str(tmp_path / "none.sock"), "RELAY_OFFLINE": str(tmp_path / "none")}
    dead = tmp_path / "dead.letter"
    status = client.hand_off(
        REQUEST, b"Subject: n\n\nhi\n", prog="sendmail", dead_letter=str(dead), environ=env
    )
    assert status == os.EX_CONFIG
    (line,) = capsys.readouterr().err.splitlines()
    assert client.FIX in line
    assert line.endswith(f"message kept in {dead}")


def test_answer_is_one_json_line() -> None:
    answer = service.Answer(75, ["queued as X: why"], "--> EHLO\n").encode()
    assert answer.endswith(b"\n") and answer.count(b"\n") == 1
    assert json.loads(answer) == {
        "status": 75,
        "lines": ["queued as X: why"],
        "transcript": "--> EHLO\n",
    }


def test_the_hand_off_path_imports_neither_email_nor_ssl(tmp_path: Path) -> None:
    """An unprivileged `sendmail` only needs socket and the raw bytes."""
    (tmp_path / "offline").mkdir()
    env = {
        **os.environ,
        "RELAY_SOCKET": str(tmp_path / "none.sock"),
        "RELAY_OFFLINE": str(tmp_path / "offline"),
    }
    code = (
        "import sys\n"
        "from relay import client, handoff\n"
        "status = client.hand_off(handoff.Request(('a@example.com',)), b'Subject: x\\n\\nhi\\n',"
        " prog='sendmail')\n"
        "print(sorted(m for m in ('email', 'ssl', '_ssl', 'smtplib', 'dataclasses')"
        " if m in sys.modules), status)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, check=False, timeout=60
    )
    assert done.stdout.decode().split() == ["[]", "0"], done.stderr


def test_hub_down_through_the_service_names_the_queue_entry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = write_config(tmp_path, None, mailhub=f"127.0.0.1:{closed_port()}")
    answer = service.deliver(load(str(conf)), REQUEST, b"Subject: q\n\nhi\n", 1500, "h")
    assert answer.status == 0
    (line,) = answer.lines
    assert line.startswith("queued as ")
    entry_id = line.split()[2].rstrip(":")
    meta = json.loads((tmp_path / "queue" / "new" / entry_id / "meta.json").read_text())
    assert meta["uid"] == 1500
    assert b"from userid 1500" in (tmp_path / "queue" / "new" / entry_id / "message").read_bytes()


# -- the sender's uid in queue entries --------------------------------------------------------


def test_queue_entries_keep_the_senders_uid(tmp_path: Path) -> None:
    from relay.queue import Entry, Queue

    with Queue.open(str(tmp_path / "q")) as spool:
        entry = spool.enqueue(
            b"Subject: u\r\n\r\nx\r\n", sender="a@x", recipients=["b@y"], uid=1500
        )
        legacy = spool.enqueue(b"Subject: l\r\n\r\nx\r\n", sender="a@x", recipients=["b@y"])
    raw = (tmp_path / "q" / "new" / entry.id / "meta.json").read_bytes()
    assert json.loads(raw)["uid"] == 1500
    assert Entry.from_json(raw, entry.id).uid == 1500
    old = (tmp_path / "q" / "new" / legacy.id / "meta.json").read_bytes()
    assert json.loads(old)["uid"] is None  # unknown, as in entries from before uids
    assert Entry.from_json(old, legacy.id).uid is None
    written_before = json.loads(old)
    del written_before["uid"]  # a sidecar from before uids were kept still reads
    assert Entry.from_json(json.dumps(written_before).encode(), legacy.id).uid is None
    forged = json.loads(raw)
    forged["uid"] = "0"
    with pytest.raises(ValueError, match="uid"):
        Entry.from_json(json.dumps(forged).encode(), entry.id)


@pytest.mark.parametrize(
    "recipient",
    ["|/bin/sh -c id", "/tmp/planted", ":include:/etc/passwd", "-oQ/tmp", "a@b\r\nRCPT TO:<x@y>"],
)
def test_a_recipient_naming_a_file_or_command_is_refused(tmp_path: Path, recipient: str) -> None:
    """The service never opens a path or runs a command a client names."""
    conf = write_config(tmp_path, None, mailhub=f"127.0.0.1:{closed_port()}")
    request = handoff.Request((recipient,))
    answer = service.deliver(load(str(conf)), request, b"Subject: x\n\nhi\n", 1500, "h")
    assert answer.status == os.EX_DATAERR
    assert not (tmp_path / "queue").exists()  # not even queued


def test_max_message_size_in_the_config_is_the_services_limit(tmp_path: Path) -> None:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with listener:
        unset = load(str(write_config(tmp_path, None, mailhub="127.0.0.1:9")))
        assert service.Service(listener, None, unset, 30).limit() == handoff.DEFAULT_MAX_MESSAGE
        conf = write_config(tmp_path, None, mailhub="127.0.0.1:9", MaxMessageSize="2K")
        limited = load(str(conf))
        assert service.Service(listener, None, limited, 30).limit() == 2048
