"""Shared fixtures: a private CA and its certificates (trustme), and real SMTP servers.

Every certificate is made once per session: key generation is the slow part. Servers are
per test and always stopped, so a failing test cannot leave a thread or socket behind.
"""

from __future__ import annotations

import contextlib
import datetime
import inspect
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from tests.mailhub import MailHub, MailHubFactory, RawRecorder, RawRecorderFactory


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    """The CA clients are told to trust (through `ca_file`)."""
    return trustme.CA()


@pytest.fixture(scope="session")
def ca_file(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`ca` as a PEM file, the form TLS_CA_File and ssl.create_default_context take."""
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(path)
    return path


@pytest.fixture(scope="session")
def server_cert(ca: trustme.CA) -> trustme.LeafCert:
    """A valid certificate for the names a test client dials: 127.0.0.1 and localhost."""
    return ca.issue_cert("127.0.0.1", "localhost")


@pytest.fixture(scope="session")
def wrong_host_cert(ca: trustme.CA) -> trustme.LeafCert:
    """Trusted chain, wrong name: hostname checking must refuse it."""
    return ca.issue_cert("mail.example.org")


@pytest.fixture(scope="session")
def expired_cert(ca: trustme.CA) -> trustme.LeafCert:
    """Trusted chain and right names, but notAfter is in the past."""
    if "not_before" not in inspect.signature(ca.issue_cert).parameters:
        pytest.skip("trustme < 1.2 cannot back-date notBefore, so cannot issue an expired cert")
    now = datetime.datetime.now(datetime.UTC)
    return ca.issue_cert(
        "127.0.0.1",
        "localhost",
        not_before=now - datetime.timedelta(days=30),
        not_after=now - datetime.timedelta(days=1),
    )


@pytest.fixture(scope="session")
def untrusted_ca() -> trustme.CA:
    """A CA no client is given: stands in for self-signed and unknown issuers."""
    return trustme.CA()


@pytest.fixture(scope="session")
def self_signed_cert(untrusted_ca: trustme.CA) -> trustme.LeafCert:
    """Right names, unknown issuer: chain verification must refuse it."""
    return untrusted_ca.issue_cert("127.0.0.1", "localhost")


@pytest.fixture
def mailhub() -> Iterator[MailHubFactory]:
    """Factory: `mailhub(**MailHub options)` returns a started hub, stopped at teardown."""
    with contextlib.ExitStack() as stack:

        def start(**options: Any) -> MailHub:
            return stack.enter_context(MailHub(**options))

        yield start


@pytest.fixture
def tls_hub(mailhub: MailHubFactory, server_cert: trustme.LeafCert) -> MailHubFactory:
    """Factory: `tls_hub(**MailHub options)` returns a started hub speaking STARTTLS
    (`tls="implicit"` for implicit TLS) with `server_cert`, which a client trusts through
    `ca_file` (relay config: TLS_CA_File=ca_file)."""

    def start(**options: Any) -> MailHub:
        options.setdefault("tls", "starttls")
        return mailhub(cert=server_cert, **options)

    return start


@pytest.fixture
def raw_recorder() -> Iterator[RawRecorderFactory]:
    """Factory: `raw_recorder(capabilities=[...])` returns a started RawRecorder."""
    with contextlib.ExitStack() as stack:

        def start(**options: Any) -> RawRecorder:
            return stack.enter_context(RawRecorder(**options))

        yield start
