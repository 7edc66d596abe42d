"""The installed commands with their standard streams closed or unwritable.

GNU mailutils' `mail` runs its mta with standard output closed; cron and shell scripts
close streams too (`>&-`, `2>&-`, `<&-`). A delivery that worked must exit 0 exactly
once, whatever happened to stdout and stderr, or the sender sees a failure and sends the
message again. The closing is done by a real shell, as a user would write it.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.tools import assert_one_clean_line, command, run
from tests.mailhub import MailHub, MailHubFactory, closed_port
from tests.relayconf import write_config

MESSAGE = b"Subject: closed streams\n\nhello\n"


def environ(home: Path, **extra: str) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "MAILX_NO_SYSTEM_RC": "1",
        **extra,
    }


def run_redirected(
    name: str,
    args: list[str],
    redirections: str,
    *,
    home: Path,
    stdin: bytes = b"",
    **popen: Any,
) -> subprocess.CompletedProcess[bytes]:
    """`name args REDIRECTIONS` through sh, e.g. redirections `>&- 2>&-`."""
    popen.setdefault("stdout", subprocess.PIPE)
    popen.setdefault("stderr", subprocess.PIPE)
    return subprocess.run(
        ["sh", "-c", f'exec "$0" "$@" {redirections}', command(name), *args],
        input=stdin,
        env=environ(home),
        timeout=60,
        check=False,
        **popen,
    )


def no_dead_letter(home: Path) -> bool:
    return not (home / "dead.letter").exists()


@pytest.mark.parametrize(
    ("flags", "redirections"),
    [
        ([], ">&-"),
        ([], "2>&-"),
        (["-v"], "2>&-"),  # the SMTP dialogue goes to the closed stderr
        (["-v"], ">&- 2>&-"),
    ],
)
def test_sendmail_with_output_closed_delivers_once_and_exits_0(
    tmp_path: Path, mailhub: MailHubFactory, flags: list[str], redirections: str
) -> None:
    hub = mailhub()
    conf = write_config(tmp_path, hub)
    done = run_redirected(
        "sendmail",
        ["-C", str(conf), *flags, "a@example.com"],
        redirections,
        home=tmp_path,
        stdin=MESSAGE,
    )
    assert done.returncode == 0, done.stderr
    (received,) = hub.wait_for(1)
    assert b"hello" in received.data
    assert len(hub.messages) == 1 and hub.connections == 1
    assert no_dead_letter(tmp_path)


def test_sendmail_with_stderr_a_pipe_nobody_reads_still_exits_0(
    tmp_path: Path, mailhub: MailHubFactory
) -> None:
    """Writing the -v dialogue fails with EPIPE: the delivery it describes stands."""
    hub = mailhub()
    conf = write_config(tmp_path, hub)
    reader, writer = os.pipe()
    os.close(reader)
    try:
        done = run_redirected(
            "sendmail",
            ["-C", str(conf), "-v", "a@example.com"],
            "",
            home=tmp_path,
            stdin=MESSAGE,
            stderr=writer,
        )
    finally:
        os.close(writer)
    assert done.returncode == 0
    assert len(hub.wait_for(1)) == 1
    assert no_dead_letter(tmp_path)


def test_sendmail_queues_with_every_output_closed(tmp_path: Path) -> None:
    """Hub down, Queue=fallback: `queued as` cannot be said, the entry is there, 0."""
    conf = write_config(tmp_path, None, mailhub=f"127.0.0.1:{closed_port()}")
    done = run_redirected(
        "sendmail", ["-C", str(conf), "a@example.com"], ">&- 2>&-", home=tmp_path, stdin=MESSAGE
    )
    assert done.returncode == 0
    listed = run("mailq", ["-C", str(conf)], home=tmp_path)
    assert listed.stdout.count(b"a@example.com") == 1


def test_sendmail_with_stdin_closed_refuses_with_66(
    tmp_path: Path, mailhub: MailHubFactory
) -> None:
    hub = mailhub()
    conf = write_config(tmp_path, hub)
    done = run_redirected("sendmail", ["-C", str(conf), "a@example.com"], "<&-", home=tmp_path)
    assert done.returncode == os.EX_NOINPUT
    line = assert_one_clean_line(done.stderr)
    assert line.startswith("sendmail: standard input is closed: no message to read")
    assert hub.connections == 0 and hub.messages == []
    assert no_dead_letter(tmp_path)


def queue_two(tmp_path: Path, hub: MailHub) -> Path:
    down = write_config(tmp_path, None, mailhub=f"127.0.0.1:{closed_port()}", Queue="always")
    for number in (1, 2):
        queued = run(
            "sendmail", ["-C", str(down), f"n{number}@example.com"], home=tmp_path, stdin=MESSAGE
        )
        assert queued.returncode == 0, queued.stderr
    return write_config(tmp_path, hub)


@pytest.mark.parametrize("redirections", ["2>&-", ">&-", ">&- 2>&-"])
def test_mailq_flush_with_output_closed(
    tmp_path: Path, mailhub: MailHubFactory, redirections: str
) -> None:
    hub = mailhub()
    conf = queue_two(tmp_path, hub)
    done = run_redirected("mailq", ["-C", str(conf), "--flush"], redirections, home=tmp_path)
    assert done.returncode == 0, done.stderr
    assert sorted(m.rcpt_tos[0] for m in hub.wait_for(2)) == ["n1@example.com", "n2@example.com"]
    assert len(hub.messages) == 2
    assert run("mailq", ["-C", str(conf)], home=tmp_path).stdout == b"Mail queue is empty\n"


def test_mailq_listing_with_stdout_closed_is_0(tmp_path: Path, mailhub: MailHubFactory) -> None:
    conf = queue_two(tmp_path, mailhub())
    done = run_redirected("mailq", ["-C", str(conf)], ">&-", home=tmp_path)
    assert done.returncode == 0
    assert done.stderr == b""


def test_mail_alias_into_a_closed_pipe_is_74_and_quiet(tmp_path: Path) -> None:
    """`mail-alias list | head -0`: the same status as mailq and sendmail -bp."""
    rc = tmp_path / "aliases.rc"
    rc.write_text("".join(f"alias a{n} a{n}@example.com\n" for n in range(50)))
    reader, writer = os.pipe()
    os.close(reader)
    try:
        done = subprocess.run(
            [command("mail-alias"), "--file", str(rc), "list"],
            stdout=writer,
            stderr=subprocess.PIPE,
            env=environ(tmp_path),
            timeout=60,
            check=False,
        )
    finally:
        os.close(writer)
    assert done.returncode == os.EX_IOERR
    assert done.stderr == b""


def test_a_hint_reaches_the_user(tmp_path: Path) -> None:
    rc = tmp_path / "aliases.rc"
    rc.write_text("alias team t@example.com\n")
    done = run("mail-alias", ["--file", str(rc), "show", "teem"], home=tmp_path)
    assert done.returncode == os.EX_NOUSER
    assert assert_one_clean_line(done.stderr).endswith("; did you mean: team?")


# -- other hostile surroundings: the C locale, a working directory nobody may write ----------


@pytest.mark.parametrize("locale", [{"LANG": "C"}, {"LANG": "C", "LC_ALL": "C"}, {"LANG": ""}])
def test_the_c_locale_changes_nothing_in_what_is_sent(
    tmp_path: Path, mailhub: MailHubFactory, locale: dict[str, str]
) -> None:
    """cron runs jobs with LANG unset or C: UTF-8 arguments and bodies still go out
    right, by `mail` (encoded) and by `sendmail` (as given)."""
    import email
    import email.policy

    hub = mailhub()
    conf = write_config(tmp_path, hub)
    env = environ(tmp_path, RELAY_CONFIG=str(conf), **locale)
    body = "Grüße aus Köln\n".encode()
    done = subprocess.run(
        [command("mail"), "-s", "Grüße", "a@example.com"],
        input=body,
        capture_output=True,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    sent = subprocess.run(
        [command("sendmail"), "b@example.com"],
        input=b"Subject: raw\n\n" + body,
        capture_output=True,
        env=env,
        check=False,
    )
    assert sent.returncode == 0, sent.stderr
    first, second = hub.wait_for(2)
    message = email.message_from_bytes(
        first.data.replace(b"\r\n", b"\n"), policy=email.policy.default
    )
    assert message["Subject"] == "Grüße"
    assert message.get_content() == "Grüße aus Köln\n"
    assert body in second.data.replace(b"\r\n", b"\n")


@pytest.mark.parametrize("where", ["read-only", "deleted"])
def test_a_working_directory_nobody_may_write_or_that_is_gone(
    tmp_path: Path, mailhub: MailHubFactory, where: str
) -> None:
    """Nothing is written to the working directory: /proc (read-only, even for root), or a
    directory removed after the process entered it (a job whose cwd was cleaned up)."""
    hub = mailhub()
    conf = write_config(tmp_path, hub)
    env = environ(tmp_path, RELAY_CONFIG=str(conf))
    if where == "read-only":
        cwd = "/proc"
        argv = [command("sendmail"), "a@example.com"]
    else:
        gone = tmp_path / "gone"
        gone.mkdir()
        cwd = str(gone)
        argv = [
            "sh",
            "-c",
            f'rmdir "{gone}" && exec "$0" "$@"',
            command("sendmail"),
            "a@example.com",
        ]
    done = subprocess.run(argv, input=MESSAGE, capture_output=True, env=env, cwd=cwd, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stderr == b""
    assert len(hub.wait_for(1)) == 1
