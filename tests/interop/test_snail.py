"""s-nail (Debian's `mail`) with `-S mta=` pointing at our sendmail.

s-nail invokes its MTA as `MTA -i [-F name -f addr] -- recipient...` with LF line ends and
the recipients of -c and -b in argv; it never writes a Bcc header.
"""

from __future__ import annotations

import email
import email.policy
import mailbox
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.interop.conftest import LOGIN, REWRITE_DOMAIN, Relay, RelayFactory, need, parsed
from tests.mailhub import Received

pytestmark = pytest.mark.interop

#: Our `mail`, next to the interpreter running the tests.
MAIL = Path(sys.executable).parent / "mail"


def test_snail_mta_delivers_to_and_cc_and_bcc(relay: RelayFactory) -> None:
    snail = need("s-nail", "s-nail")
    r = relay()
    done = r.run(
        [
            snail,
            "-S",
            f"mta={r.sendmail}",
            "-s",
            "disk full on host1",
            "-c",
            "cc@example.com",
            "-b",
            "bcc@example.net",
            "rcpt@example.com",
        ],
        stdin="line one\nÜnïcödé line\n".encode(),
    )
    received = r.one_message(done)
    assert done.stderr == b""
    assert received.mail_from == f"{LOGIN}@{REWRITE_DOMAIN}"
    assert sorted(received.rcpt_tos) == ["bcc@example.net", "cc@example.com", "rcpt@example.com"]
    message = parsed(received.data)
    assert message["To"] == "rcpt@example.com"
    assert message["Cc"] == "cc@example.com"
    assert message["Subject"] == "disk full on host1"
    assert "Bcc" not in message
    assert message["Message-ID"]  # s-nail wrote none without `from`: ours added it
    assert message["Date"]
    assert message["From"].addresses[0].addr_spec == f"{LOGIN}@{REWRITE_DOMAIN}"
    assert "s-nail" in message["User-Agent"]
    assert message.get_content() == "line one\nÜnïcödé line\n"


def test_snail_r_sets_the_envelope_with_from_line_override(relay: RelayFactory) -> None:
    snail = need("s-nail", "s-nail")
    r = relay(FromLineOverride="yes")
    attachment = r.home / "report.csv"
    attachment.write_bytes(b"host,disk\nhost1,97%\n")
    done = r.run(
        [
            snail,
            "-S",
            f"mta={r.sendmail}",
            "-r",
            "Ops Robot <ops@example.com>",
            "-s",
            "report",
            "-a",
            str(attachment),
            "boss@example.com",
        ],
        stdin=b"see attached\n",
    )
    received = r.one_message(done)
    assert received.mail_from == "ops@example.com"  # from s-nail's `-f`
    assert received.rcpt_tos == ["boss@example.com"]
    message = parsed(received.data)
    assert message["From"] == "Ops Robot <ops@example.com>"
    assert message["Message-ID"].endswith("@example.com>")  # s-nail's own, kept
    body, attached = message.iter_parts()
    assert body.get_content() == "see attached\n"
    assert attached.get_filename() == "report.csv"
    assert attached.get_content().encode() == b"host,disk\nhost1,97%\n"


def test_snail_failure_is_reported_and_kept(relay: RelayFactory) -> None:
    """A local name our relay refuses: s-nail sees our exit status, says so, keeps it.

    s-nail then writes $DEAD itself, replacing the file (so the copy our sendmail appended
    there is replaced by s-nail's own, which is the same message).
    """
    snail = need("s-nail", "s-nail")
    r = relay()
    done = r.run(
        [snail, "-S", f"mta={r.sendmail}", "-s", "x", "nosuchuser1234"], stdin=b"kept body\n"
    )
    assert done.returncode != 0
    assert b"mail-alias add nosuchuser1234 ADDRESS" in done.stderr
    assert b"message not sent" in done.stderr  # s-nail saw our exit status
    assert r.hub.connections == 0
    assert b"kept body" in (r.home / "dead.letter").read_bytes()


# -- our `mail` side by side with s-nail ---------------------------------------------------
#
# The same command line, the same input: s-nail writes its message with `mta=test://FILE`
# (an mbox, nothing sent), ours sends it through the relay to the hub. The headers and
# decoded bodies that s-nail users rely on must agree; where they must not (deliberate
# deviations), mail(1) says so under DIFFERENCES FROM S-NAIL.


def exact(data: bytes) -> EmailMessage:
    """The message with its bytes as they are (no CRLF folding: bodies carry CRs)."""
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def snail_writes(
    r: Relay, args: Sequence[str], *, stdin: bytes = b"", env: Mapping[str, str] | None = None
) -> EmailMessage:
    """What s-nail would send for `args`, written by its `test` MTA."""
    snail = need("s-nail", "s-nail")
    out = r.home / "snail.mbox"
    out.unlink(missing_ok=True)
    done = r.run([snail, "-S", f"mta=test://{out}", *args], stdin=stdin, env=env)
    assert done.returncode == 0, (done.stdout, done.stderr)
    box = mailbox.mbox(str(out), create=False)
    try:
        (data,) = [box.get_bytes(key) for key in box.iterkeys()]
    finally:
        box.close()
    return exact(data)


def we_send(
    r: Relay, args: Sequence[str], *, stdin: bytes = b"", env: Mapping[str, str] | None = None
) -> tuple[EmailMessage, Received]:
    """What our `mail` sent for `args`, as the hub received it."""
    before = len(r.hub.messages)
    done = r.run([str(MAIL), *args], stdin=stdin, env=env)
    assert done.returncode == 0, (done.stdout, done.stderr)
    received = r.hub.wait_for(before + 1)[-1]
    # The wire's CRLF line ends, read as LF; a body with a CR is base64 (decoded below).
    return parsed(received.data), received


def addresses(message: EmailMessage, name: str) -> list[tuple[str, str]]:
    """(display name, address) of each address in the header. White space in names is
    normalised: the `email` package decodes s-nail's `=?utf-8?Q?J=C3=BCrgen?=
    =?utf-8?Q?_M=C3=BCller?=` with two spaces, keeping the one between the words."""
    header = message[name]
    if header is None:
        return []
    return [(" ".join(a.display_name.split()), a.addr_spec) for a in header.addresses]


NAMED_FORMS = [
    pytest.param(['"Doe, John" <john@example.org>'], id="quoted-name-with-comma"),
    pytest.param(["John Doe <john@example.org>", "b@example.org"], id="name-and-bare"),
    pytest.param(["John<john@example.org>"], id="snail-name-no-space"),
    pytest.param(["-c", "Jane Roe <jane@example.org>", "a@example.org"], id="cc-name"),
    pytest.param(["Jürgen Müller <j@example.org>"], id="non-ascii-name"),
]


@pytest.mark.parametrize("recipients", NAMED_FORMS)
def test_without_fullnames_to_and_cc_show_bare_addresses_as_in_snail(
    relay: RelayFactory, recipients: list[str]
) -> None:
    r = relay()
    args = ["-s", "names", *recipients]
    theirs = snail_writes(r, args)
    ours, _received = we_send(r, args)
    for name in ("To", "Cc"):
        assert ours[name] == theirs[name], name
        assert all(not display for display, _addr in addresses(ours, name))


@pytest.mark.parametrize(
    "recipients",
    [*NAMED_FORMS, pytest.param(["-c", "Ann <ann@example.org>", "j@example.org"], id="bare-to")],
)
def test_with_fullnames_the_names_are_kept_as_in_snail(
    relay: RelayFactory, recipients: list[str]
) -> None:
    r = relay()
    args = ["-S", "fullnames", "-s", "names", *recipients]
    theirs = snail_writes(r, args)
    ours, _received = we_send(r, args)
    for name in ("To", "Cc"):
        # The same names and addresses; the quoting may differ (RFC 2047 words are
        # cut differently), the reader sees the same.
        assert addresses(ours, name) == addresses(theirs, name), name


def test_alias_template_and_tilde_names_are_kept_without_fullnames_as_in_snail(
    relay: RelayFactory,
) -> None:
    r = relay()
    rc = r.home / "names.rc"
    rc.write_text("alias jd 'John Doe'<jd@example.org>\n")
    env = {"MAILRC": str(rc)}  # s-nail run by root reads root's ~/.mailrc, not $HOME's
    for args, stdin in [
        (["-s", "alias", "jd", "X Y <xy@example.org>"], b"body\n"),
        (
            ["-t", "Arg Name <arg@example.org>"],
            b'To: "Doe, John" <john@example.org>\nCc: Jane <jane@example.org>\n'
            b"Subject: t\n\nbody\n",
        ),
        (
            ["-~", "-s", "tilde", "A B <ab@example.org>"],
            b"~t Tilde Person <tp@example.org>\n~c Cee Person <cp@example.org>\nbody\n",
        ),
    ]:
        theirs = snail_writes(r, args, stdin=stdin, env=env)
        ours, _received = we_send(r, args, stdin=stdin, env=env)
        for name in ("To", "Cc"):
            assert addresses(ours, name) == addresses(theirs, name), (args, name)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"a\rb\r\nc", id="lone-CR-CRLF-no-final-newline"),
        pytest.param(b"line one\r\nline two\r\n", id="CRLF"),
        pytest.param(b"no final newline", id="no-final-newline"),
        pytest.param(b"From here\ntrailing  \n\tindented\n.\n", id="From-dot-spaces"),
        pytest.param("Grüße\n".encode(), id="utf-8"),
    ],
)
def test_the_body_decodes_to_the_same_bytes_as_snails(relay: RelayFactory, body: bytes) -> None:
    r = relay()
    args = ["-s", "body", "a@example.org"]
    theirs = snail_writes(r, args, stdin=body)
    ours, received = we_send(r, args, stdin=body)
    assert exact(received.data.replace(b"\r\n", b"\n")).get_payload(decode=True) == body
    assert theirs.get_payload(decode=True) == body
    assert ours.get_content_type() == theirs.get_content_type() == "text/plain"


def test_the_last_s_wins_and_i_is_ignored_as_in_snail(relay: RelayFactory) -> None:
    r = relay()
    args = ["-i", "-s", "first", "-s", "second", "a@example.org"]
    theirs = snail_writes(r, args, stdin=b"x\n")
    ours, received = we_send(r, args, stdin=b"x\n")
    assert ours["Subject"] == theirs["Subject"] == "second"
    assert received.rcpt_tos == ["a@example.org"]


def test_dash_dot_makes_a_dash_address_a_recipient_as_in_snail(relay: RelayFactory) -> None:
    r = relay()
    args = ["-s", "t", "-.", "-odd@example.org", "b@example.org"]
    theirs = snail_writes(r, args, stdin=b"x\n")
    ours, received = we_send(r, args, stdin=b"x\n")
    assert ours["To"] == theirs["To"] == "-odd@example.org, b@example.org"
    assert received.rcpt_tos == ["-odd@example.org", "b@example.org"]
    assert "RCPT TO:<-odd@example.org>" in r.hub.commands
    # Without -. ours refuses it (a deliberate deviation, mail(1)); s-nail sends it.
    done = r.run([str(MAIL), "-s", "t", "b@example.org", "-odd@example.org"], stdin=b"x\n")
    assert done.returncode == 65
    assert b"goes after -." in done.stderr
    assert len(r.hub.messages) == 1


def test_V_prints_one_version_line_as_in_snail(relay: RelayFactory) -> None:
    r = relay()
    snail = need("s-nail", "s-nail")
    for program in (snail, str(MAIL)):
        done = subprocess.run(
            [program, "-V"], capture_output=True, env=r.env(), timeout=60, check=False
        )
        assert done.returncode == 0
        assert done.stderr == b""
        (line,) = done.stdout.decode().splitlines()
        assert re.search(r"\bv?\d+\.\d+\.\d+\b", line), line
