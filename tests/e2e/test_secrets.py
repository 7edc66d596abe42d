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
    assert done.returncode == os.EX_NOPERM
    assert f"chmod 600 {secret}".encode() in done.stderr


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
