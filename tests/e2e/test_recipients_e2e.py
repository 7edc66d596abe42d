"""Recipients end to end: the installed `sendmail` and `mail` against a real aiosmtpd.

Each test is a regression users hit: an internationalised mailbox refused although the
server offers SMTPUTF8, a comment that silently changed the envelope address, a group
sent short of a member, an exponential alias tree, and the header and envelope
disagreeing on duplicates.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from tests.e2e.tools import assert_one_clean_line, run
from tests.mailhub import MailHubFactory, dead_letters
from tests.relayconf import write_config

MESSAGE = b"Subject: hej\n\nhej\n"


# --- SMTPUTF8 -------------------------------------------------------------------------


def test_utf8_mailbox_goes_out_with_smtputf8_when_offered(
    tmp_path: Path, mailhub: MailHubFactory
) -> None:
    hub = mailhub(smtputf8=True)
    conf = write_config(tmp_path, hub)
    done = run("sendmail", ["-C", str(conf), "jöran@example.org"], home=tmp_path, stdin=MESSAGE)
    assert done.returncode == 0, done.stderr
    (received,) = hub.wait_for(1)
    assert received.rcpt_tos == ["jöran@example.org"]
    assert "SMTPUTF8" in received.mail_options


def test_utf8_mailbox_without_smtputf8_is_refused_and_kept(
    tmp_path: Path, mailhub: MailHubFactory
) -> None:
    hub = mailhub(smtputf8=False)
    conf = write_config(tmp_path, hub)
    done = run("sendmail", ["-C", str(conf), "jöran@example.org"], home=tmp_path, stdin=MESSAGE)
    assert done.returncode == os.EX_DATAERR
    line = assert_one_clean_line(done.stderr)
    assert "jöran@example.org" in line
    assert "SMTPUTF8" in line
    assert "))" not in line
    assert f"kept in {tmp_path / 'dead.letter'}" in line
    assert hub.messages == []
    (kept,) = dead_letters(tmp_path)
    assert kept["Subject"] == "hej"


def test_ascii_recipients_never_ask_for_smtputf8(tmp_path: Path, mailhub: MailHubFactory) -> None:
    hub = mailhub(smtputf8=True)
    conf = write_config(tmp_path, hub)
    done = run("sendmail", ["-C", str(conf), "joran@example.org"], home=tmp_path, stdin=MESSAGE)
    assert done.returncode == 0, done.stderr
    assert "SMTPUTF8" not in hub.wait_for(1)[0].mail_options


# --- comments and display parts that would change the address -----------------------


def test_comment_inside_the_address_is_refused_not_reinterpreted(
    tmp_path: Path, mailhub: MailHubFactory
) -> None:
    hub = mailhub()
    conf = write_config(tmp_path, hub)
    for program, args in (
        ("sendmail", ["-C", str(conf)]),
        ("mail", ["-s", "x"]),
    ):
        done = run(
            program,
            [*args, "$(touch x)@example.org"],
            home=tmp_path,
            stdin=b"hi\n",
            env={"RELAY_CONFIG": str(conf)},
        )
        assert done.returncode == os.EX_DATAERR, (program, done.stderr)
        line = assert_one_clean_line(done.stderr)
        assert "$@example.org" in line  # says what it would have been read as
        assert "without parentheses" in line
    assert hub.connections == 0
    assert not (tmp_path / "x").exists()


def test_display_part_looking_like_an_address_is_refused(
    tmp_path: Path, mailhub: MailHubFactory
) -> None:
    hub = mailhub()
    conf = write_config(tmp_path, hub)
    done = run(
        "sendmail", ["-C", str(conf), "a@example.org <b@example.org>"], home=tmp_path, stdin=MESSAGE
    )
    assert done.returncode == os.EX_DATAERR
    assert "display name holds an '@'" in assert_one_clean_line(done.stderr)
    assert hub.connections == 0


def test_trailing_comment_is_a_display_name_and_keeps_the_address(
    tmp_path: Path, mailhub: MailHubFactory
) -> None:
    hub = mailhub()
    conf = write_config(tmp_path, hub)
    done = run("sendmail", ["-C", str(conf), "c@example.org (Carol)"], home=tmp_path, stdin=MESSAGE)
    assert done.returncode == 0, done.stderr
    assert hub.wait_for(1)[0].rcpt_tos == ["c@example.org"]


# --- groups ---------------------------------------------------------------------------


def test_group_with_a_refused_member_sends_nothing(tmp_path: Path, mailhub: MailHubFactory) -> None:
    hub = mailhub()
    conf = write_config(tmp_path, hub)
    (tmp_path / ".mailrc").write_text("alias team me, bob@example.org\n")
    done = run(
        "mail",
        ["-s", "to the team", "team"],
        home=tmp_path,
        stdin=b"hi\n",
        env={"RELAY_CONFIG": str(conf)},
    )
    assert done.returncode == os.EX_DATAERR, done.stderr
    err = done.stderr.decode()
    assert "invalid member 'me,'" in err  # the mail.rc diagnostic, as s-nail prints it
    assert "nothing sent" in err.splitlines()[-1]
    assert "dead.letter" in err.splitlines()[-1]
    assert hub.connections == 0
    (kept,) = dead_letters(tmp_path)
    assert kept["Subject"] == "to the team"


def test_exponential_alias_tree_expands_in_linear_time(
    tmp_path: Path, mailhub: MailHubFactory
) -> None:
    hub = mailhub()
    conf = write_config(tmp_path, hub)
    rc = "".join(f"alias t{i} t{i + 1} t{i + 1}\n" for i in range(24))
    (tmp_path / ".mailrc").write_text(rc + "alias t24 a@example.org b@example.org\n")
    aliases = tmp_path / "aliases"
    aliases.write_text(
        "".join(f"s{i}: s{i + 1}, s{i + 1}\n" for i in range(24)) + "s24: c@example.org\n"
    )
    conf = write_config(tmp_path, hub, Aliases=str(aliases))
    started = time.monotonic()
    done = run(
        "mail",
        ["-s", "x", "t0", "s0"],
        home=tmp_path,
        stdin=b"hi\n",
        env={"RELAY_CONFIG": str(conf)},
    )
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 10  # took ~35 s when each path was walked
    assert hub.wait_for(1)[0].rcpt_tos == ["a@example.org", "b@example.org", "c@example.org"]


# --- one duplicate key ----------------------------------------------------------------


def test_domain_case_duplicates_are_one_recipient_in_header_and_envelope(
    tmp_path: Path, mailhub: MailHubFactory
) -> None:
    hub = mailhub()
    conf = write_config(tmp_path, hub)
    done = run(
        "mail",
        ["-s", "x", "-c", "bob@EXAMPLE.org", "bob@Example.org", "bob@example.org"],
        home=tmp_path,
        stdin=b"hi\n",
        env={"RELAY_CONFIG": str(conf)},
    )
    assert done.returncode == 0, done.stderr
    (received,) = hub.wait_for(1)
    assert received.rcpt_tos == ["bob@example.org"]
    message = received.message()
    assert message["To"] == "bob@Example.org"
    assert message["Cc"] is None


def test_dry_run_shows_one_recipient_for_domain_case_duplicates(tmp_path: Path) -> None:
    done = run(
        "mail",
        ["-d", "-s", "x", "bob@Example.org", "bob@example.org"],
        home=tmp_path,
        stdin=b"hi\n",
    )
    assert done.returncode == 0, done.stderr
    err = done.stderr.decode()
    assert "envelope to: bob@example.org\n" in err
    assert "To: bob@Example.org\n" in err


def test_sendmail_dedupes_arguments_and_t_headers_with_the_same_key(
    tmp_path: Path, mailhub: MailHubFactory
) -> None:
    hub = mailhub()
    conf = write_config(tmp_path, hub)
    done = run(
        "sendmail",
        ["-C", str(conf), "-t", "bob@Example.org", "Bob@example.org"],
        home=tmp_path,
        stdin=b'To: Bob <bob@example.ORG>, "Doe, J" <j@example.org>\nSubject: s\n\nhi\n',
    )
    assert done.returncode == 0, done.stderr
    assert hub.wait_for(1)[0].rcpt_tos == ["bob@example.org", "Bob@example.org", "j@example.org"]
