"""No secret in any output or file: stderr of -v runs, the log, dead.letter, the queue.

Each AUTH method is exercised with the installed `sendmail -v`, plus a run that ends in
the queue (hub down) and one that ends in dead.letter (5xx), then every byte written is
scanned for the password and the base64 forms AUTH would carry it in.
"""

from __future__ import annotations

import base64
import os
import sys
from pathlib import Path

import pytest
import trustme

from tests.e2e.tools import run
from tests.mailhub import MailHubFactory, closed_port
from tests.relayconf import write_config

USER = "alice"
SECRET = "s3cret #=pass word"
TOKEN = "ya29.A0-secret-token"


def forms(secret: str) -> list[bytes]:
    """The secret, and every base64 form PLAIN, LOGIN or XOAUTH2 would put on the wire."""
    raw = secret.encode()
    wrapped = [
        raw,
        f"\0{USER}\0{secret}".encode(),
        f"{USER}\0{USER}\0{secret}".encode(),
        f"user={USER}\x01auth=Bearer {secret}\x01\x01".encode(),
    ]
    out = [raw]
    for item in wrapped:
        out.append(base64.b64encode(item))
    return out


def everything_written(tmp_path: Path, outputs: list[bytes]) -> bytes:
    blob = b"".join(outputs)
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.name not in ("ssmtp.conf", "secret", "token.py"):
            blob += path.read_bytes()
    return blob


@pytest.mark.parametrize("method", ["PLAIN", "LOGIN", "CRAM-MD5", "XOAUTH2"])
def test_no_secret_anywhere_after_verbose_runs(
    tmp_path: Path,
    tls_hub: MailHubFactory,
    ca_file: Path,
    method: str,
) -> None:
    secret = TOKEN if method == "XOAUTH2" else SECRET
    hub = tls_hub(
        auth=True,
        mechanisms=[method],
        users={USER: secret},
        rcpt_faults={"gone@example.com": (550, "5.1.1 gone")},
    )
    secret_file = tmp_path / "secret"
    secret_file.write_text(secret + "\n")
    secret_file.chmod(0o600)
    log = tmp_path / "relay.log"
    keys = {
        "TLS_CA_File": ca_file,
        "AuthUser": USER,
        "AuthMethod": method,
        "AuthPassFile": secret_file,
        "LogFile": log,
    }
    conf = write_config(tmp_path, hub, **keys)
    env = {"RELAY_CONFIG": str(conf)}
    outputs = []
    ok = run(
        "sendmail", ["-v", "a@example.com"], home=tmp_path, env=env, stdin=b"Subject: ok\n\nhello\n"
    )
    assert ok.returncode == 0, ok.stderr
    outputs += [ok.stdout, ok.stderr]
    refused = run(
        "sendmail",
        ["-v", "gone@example.com"],
        home=tmp_path,
        env=env,
        stdin=b"Subject: refused\n\nhello\n",
    )
    assert refused.returncode == os.EX_NOUSER
    outputs += [refused.stdout, refused.stderr]
    (tmp_path / "down").mkdir()
    down = write_config(
        tmp_path / "down",
        None,
        mailhub=f"127.0.0.1:{closed_port()}",
        QueueDir=tmp_path / "queue",
        **keys,
    )
    queued = run(
        "sendmail",
        ["-v", "a@example.com"],
        home=tmp_path,
        env={"RELAY_CONFIG": str(down)},
        stdin=b"Subject: later\n\nhello\n",
    )
    assert queued.returncode == 0, queued.stderr
    assert b"queued as" in queued.stderr
    outputs += [queued.stdout, queued.stderr]
    pretend = run("sendmail", ["-P"], home=tmp_path, env=env)
    outputs += [pretend.stdout, pretend.stderr]

    assert b"--> AUTH " + method.encode() in ok.stderr
    assert (tmp_path / "dead.letter").exists()
    assert any((tmp_path / "queue").rglob("meta.json"))
    assert len(log.read_text().splitlines()) >= 2
    blob = everything_written(tmp_path, outputs)
    for form in forms(secret):
        assert form not in blob, form


def test_token_command_failures_name_the_key_not_the_output(tmp_path: Path) -> None:
    script = tmp_path / "token.py"
    script.write_text("import sys\nprint('leaked-output-123')\nsys.exit(3)\n")
    conf = write_config(
        tmp_path,
        None,
        mailhub="127.0.0.1:1",
        AuthUser=USER,
        AuthPassCommand=f"{sys.executable} {script}",
    )
    done = run(
        "sendmail",
        ["a@example.com"],
        home=tmp_path,
        env={"RELAY_CONFIG": str(conf)},
        stdin=b"Subject: s\n\nhi\n",
    )
    assert done.returncode == os.EX_CONFIG
    assert b"AuthPassCommand" in done.stderr
    assert b"exited with status 3" in done.stderr
    assert b"leaked-output-123" not in done.stderr


def test_secret_file_readable_by_others_is_refused_with_the_fix(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text(SECRET)
    secret.chmod(0o644)
    conf = write_config(tmp_path, None, mailhub="127.0.0.1:1", AuthUser=USER, AuthPassFile=secret)
    done = run(
        "sendmail",
        ["a@example.com"],
        home=tmp_path,
        env={"RELAY_CONFIG": str(conf)},
        stdin=b"Subject: s\n\nhi\n",
    )
    # 78 since StrictPermissions=yes became the default (77 before), message kept.
    assert done.returncode == os.EX_CONFIG
    assert f"chmod 640 {secret}".encode() in done.stderr
    assert b"message kept in" in done.stderr


def test_world_readable_auth_pass_is_refused_with_78_and_the_message_kept(
    tmp_path: Path, mailhub: MailHubFactory
) -> None:
    hub = mailhub(auth=True, auth_require_tls=False)
    conf = write_config(tmp_path, hub, AuthUser=USER, AuthPass=SECRET, AuthOverPlaintext="yes")
    conf.chmod(0o644)
    done = run(
        "sendmail",
        ["a@example.com"],
        home=tmp_path,
        env={"RELAY_CONFIG": str(conf)},
        stdin=b"Subject: s\n\nkeep this\n",
    )
    assert done.returncode == os.EX_CONFIG
    assert b"every local user can read it" in done.stderr
    assert f"chmod 640 {conf}".encode() in done.stderr and b"AuthPassFile" in done.stderr
    assert f"message kept in {tmp_path / 'dead.letter'}".encode() in done.stderr
    assert b"keep this" in (tmp_path / "dead.letter").read_bytes()
    assert SECRET.encode() not in done.stderr
    assert hub.messages == []


def test_group_readable_config_is_not_warned_about(tmp_path: Path, mailhub: MailHubFactory) -> None:
    hub = mailhub(auth=True, auth_require_tls=False, users={USER: SECRET})
    quoted = '"' + SECRET + '"'  # quoted: " #" would start a comment
    conf = write_config(tmp_path, hub, AuthUser=USER, AuthPass=quoted, AuthOverPlaintext="yes")
    conf.chmod(0o640)  # root:mail 0640, as ssmtp ships it
    done = run(
        "sendmail",
        ["a@example.com"],
        home=tmp_path,
        env={"RELAY_CONFIG": str(conf)},
        stdin=b"Subject: s\n\nhi\n",
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == b""  # no "readable by others (mode 640)" any more
    assert len(hub.wait_for(1)) == 1


def test_ap_warns_that_argv_is_visible(tmp_path: Path, mailhub: MailHubFactory) -> None:
    hub = mailhub(auth=True, auth_require_tls=False)
    conf = write_config(tmp_path, hub, AuthUser=USER, AuthOverPlaintext="yes")
    done = run(
        "sendmail",
        ["-ap", SECRET, "a@example.com"],
        home=tmp_path,
        env={"RELAY_CONFIG": str(conf)},
        stdin=b"Subject: s\n\nhi\n",
    )
    assert done.returncode == 0, done.stderr
    assert b"-ap puts the password on the command line" in done.stderr
    assert SECRET.encode() not in done.stderr


def test_serverinfo_prints_fields_and_sends_nothing(
    tmp_path: Path, tls_hub: MailHubFactory, ca_file: Path
) -> None:
    hub = tls_hub(tls="implicit", auth=True)
    conf = write_config(tmp_path, hub, TLS_CA_File=ca_file)
    done = run("sendmail", ["--serverinfo"], home=tmp_path, env={"RELAY_CONFIG": str(conf)})
    assert done.returncode == 0, done.stderr
    out = done.stdout.decode()
    for field in (
        "tls mode: implicit TLS",
        "tls version: TLSv1.",
        "certificate subject:",
        "certificate issuer:",
        "certificate valid until:",
        "certificate sha256 fingerprint:",
        "auth methods offered: ",
    ):
        assert field in out
    assert hub.messages == []


def test_serverinfo_shows_an_untrusted_certificate_for_pinning(
    tmp_path: Path, mailhub: MailHubFactory, server_cert: trustme.LeafCert
) -> None:
    """A self-signed (here: unknown CA) hub: the report marks the certificate NOT TRUSTED,
    shows its fingerprint, exits 69, says nothing but EHLO and QUIT; and pinning that
    fingerprint then delivers, as relay.conf(5) tells the admin to do."""
    hub = mailhub(tls="implicit", cert=server_cert)
    conf = write_config(tmp_path, hub)  # no TLS_CA_File: the test CA is unknown
    done = run("sendmail", ["--serverinfo"], home=tmp_path, env={"RELAY_CONFIG": str(conf)})
    assert done.returncode == 69, done.stderr
    out = done.stdout.decode()
    assert "certificate: NOT TRUSTED (TLS certificate of 127.0.0.1 rejected:" in out
    pin = out.split("certificate sha256 fingerprint: ")[1].split()[0]
    assert len(pin.replace(":", "")) == 64
    assert b"rejected" in done.stderr
    assert hub.messages == []
    assert not any(c.startswith(("MAIL", "RCPT", "AUTH", "DATA")) for c in hub.commands)

    pinned = write_config(tmp_path, hub, TLSFingerprint=pin)
    sent = run(
        "sendmail",
        ["alice@example.com"],
        home=tmp_path,
        env={"RELAY_CONFIG": str(pinned)},
        stdin=b"Subject: pinned\n\nhi\n",
    )
    assert sent.returncode == 0, sent.stderr
    assert len(hub.messages) == 1
