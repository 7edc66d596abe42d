"""git send-email with `--smtp-server=<our sendmail>` (a path means "run it as sendmail").

git runs `sendmail -i recipient...` (adding `-f sender` with --envelope-sender) and writes
its own From, Date and Message-Id; the patch must arrive byte for byte.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.interop.conftest import LOGIN, REWRITE_DOMAIN, Relay, RelayFactory, need, parsed

pytestmark = pytest.mark.interop

AUTHOR = {
    "GIT_AUTHOR_NAME": "Pat Coder",
    "GIT_AUTHOR_EMAIL": "pat@example.com",
    "GIT_COMMITTER_NAME": "Pat Coder",
    "GIT_COMMITTER_EMAIL": "pat@example.com",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def send_email_available(git: str) -> None:
    done = subprocess.run([git, "send-email", "-h"], capture_output=True, check=False)
    if b"is not a git command" in done.stderr:
        pytest.skip("git send-email not installed: apt-get install git-email")
    if b"Mail::Address" in done.stderr or b"Can't locate" in done.stderr:
        pytest.skip("git send-email lacks its Perl modules: apt-get install libmailtools-perl")


def make_patch(r: Relay, git: str) -> Path:
    repo = r.home / "repo"
    repo.mkdir()
    for argv in (
        [git, "init", "-q"],
        [git, "commit", "-q", "--allow-empty", "-m", "Initial"],
    ):
        assert r.run(argv, env=AUTHOR, cwd=repo).returncode == 0
    (repo / "hello.c").write_text('int main(void) { return puts("héllo") < 0; }\n.\n')
    assert r.run([git, "add", "hello.c"], env=AUTHOR, cwd=repo).returncode == 0
    done = r.run(
        [git, "commit", "-q", "-m", "Add hello.c", "-m", "A line of explanation."],
        env=AUTHOR,
        cwd=repo,
    )
    assert done.returncode == 0, done.stderr
    done = r.run([git, "format-patch", "-q", "-1", "-o", str(r.home / "out")], env=AUTHOR, cwd=repo)
    assert done.returncode == 0, done.stderr
    (patch,) = (r.home / "out").glob("*.patch")
    return patch


def test_git_send_email_through_our_sendmail(relay: RelayFactory) -> None:
    git = need("git", "git")
    send_email_available(git)
    r = relay(FromLineOverride="yes")
    patch = make_patch(r, git)
    done = r.run(
        [
            git,
            "send-email",
            f"--smtp-server={r.sendmail}",
            "--to=list@example.com",
            "--cc=reviewer@example.net",
            "--confirm=never",
            "--suppress-cc=all",
            str(patch),
        ],
        env=AUTHOR,
        cwd=r.home / "repo",
    )
    received = r.one_message(done)
    assert b"Result: OK" in done.stdout
    assert received.mail_from == "pat@example.com"  # from git's From header
    assert sorted(received.rcpt_tos) == ["list@example.com", "reviewer@example.net"]
    message = parsed(received.data)
    assert message["From"] == "Pat Coder <pat@example.com>"
    assert message["Subject"] == "[PATCH] Add hello.c"
    assert message["Message-Id"].endswith("@example.com>")  # git's own, kept
    assert message["X-Mailer"].startswith("git-send-email")
    sent = patch.read_bytes()
    body = sent.split(b"\n\n", 1)[1]  # what git sends after the headers
    assert received.data.replace(b"\r\n", b"\n").endswith(body)


def test_git_send_email_envelope_sender_without_override(relay: RelayFactory) -> None:
    """FromLineOverride=no: git's -f only names the From header; the relay's sender is used."""
    git = need("git", "git")
    send_email_available(git)
    r = relay()
    patch = make_patch(r, git)
    done = r.run(
        [
            git,
            "send-email",
            f"--smtp-server={r.sendmail}",
            "--envelope-sender=auto",
            "--to=list@example.com",
            "--confirm=never",
            "--suppress-cc=all",
            str(patch),
        ],
        env=AUTHOR,
        cwd=r.home / "repo",
    )
    received = r.one_message(done)
    assert received.mail_from == f"{LOGIN}@{REWRITE_DOMAIN}"
    assert received.rcpt_tos == ["list@example.com"]
    assert parsed(received.data)["From"].addresses[0].addr_spec == "pat@example.com"
