"""`sendmail --serverinfo`: what the mailhub offers and how the relay would talk to it.

Connects as a delivery would (TLS mode, certificate checks, pin), stops before AUTH and
sends nothing: capabilities, TLS version and cipher, the certificate's subject, issuer,
validity and SHA-256 fingerprint, and the AUTH methods offered after TLS.

A certificate that fails verification is still shown, marked NOT TRUSTED with the reason:
its fingerprint is what an admin pins with `TLSFingerprint` for a self-signed hub. For
that a second connection is made without verification; it too says only EHLO, STARTTLS
and QUIT, and the status stays 69 so that no script mistakes it for a working setup.
"""

from __future__ import annotations

from relay.config import Config
from relay.smtp import (
    AUTH_PREFERENCE,
    OAUTH_METHODS,
    CertificateRejected,
    Session,
    fingerprint,
    open_session,
)

TYPE_CHECKING = False  # `typing` is not imported at run time, only for checkers
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any


def _name(parts: Iterable[Any]) -> str:
    """An X.509 name as `getpeercert()` gives it, written `CN=x, O=y`."""
    short = {
        "commonName": "CN",
        "organizationName": "O",
        "organizationalUnitName": "OU",
        "countryName": "C",
        "localityName": "L",
        "stateOrProvinceName": "ST",
    }
    return ", ".join(f"{short.get(key, key)}={value}" for rdn in parts for key, value in rdn)


def describe(config: Config) -> str:
    """The report; raises `CertificateRejected` (with `.report`) for an untrusted hub."""
    try:
        session = open_session(config, login=False)
    except CertificateRejected as err:
        probe = config.replace(tls_verify=False, tls_fingerprint=None)
        err.report = _report(probe, open_session(probe, login=False), untrusted=str(err))
        raise
    return _report(config, session)


def _report(config: Config, session: Session, untrusted: str | None = None) -> str:
    try:
        client = session.client
        assert client is not None
        lines = [f"mailhub: {session.hub}"]
        tls = (
            "implicit TLS"
            if config.use_tls and not config.use_starttls
            else ("STARTTLS" if config.use_starttls else "none (plain text)")
        )
        lines.append(f"tls mode: {tls}")
        sock = client.sock
        version = getattr(sock, "version", None)
        if session.tls and version is not None:
            cipher = sock.cipher()  # type: ignore[union-attr]
            lines.append(f"tls version: {version()}")
            lines.append(f"tls cipher: {cipher[0] if cipher else 'unknown'}")
            cert = sock.getpeercert()  # type: ignore[union-attr]
            der = session.peer_certificate()
            if cert:
                lines.append(f"certificate subject: {_name(cert.get('subject', ()))}")
                lines.append(f"certificate issuer: {_name(cert.get('issuer', ()))}")
                names = ", ".join(value for _kind, value in cert.get("subjectAltName", ()))
                if names:
                    lines.append(f"certificate names: {names}")
                lines.append(f"certificate valid from: {cert.get('notBefore')}")
                lines.append(f"certificate valid until: {cert.get('notAfter')}")
            elif untrusted is not None:
                lines.append(f"certificate: NOT TRUSTED ({untrusted})")
            else:
                lines.append("certificate: not verified (TLSFingerprint or TLSVerify=no)")
            if der:
                lines.append(f"certificate sha256 fingerprint: {fingerprint(der)}")
        lines.append("capabilities:")
        for name, value in client.esmtp_features.items():
            lines.append(f"  {name.upper()} {' '.join(value.split())}".rstrip())
        offered = client.esmtp_features.get("auth", "").upper().split()
        usable = [m for m in (*AUTH_PREFERENCE, *OAUTH_METHODS) if m in offered]
        lines.append(f"auth methods offered: {' '.join(offered) or 'none'}")
        if config.auth_user:
            chosen = (
                config.auth_method.upper() if config.auth_method else (usable[:1] or ["none"])[0]
            )
            lines.append(f"auth method the relay would use: {chosen}")
        return "\n".join(lines) + "\n"
    finally:
        session.close()
