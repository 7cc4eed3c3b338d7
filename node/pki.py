"""The cluster's X.509 PKI, with `cryptography`'s x509: a local CA, validator and client
certificates, certificate signing requests, and the identity a certificate names.

An identity is named in the certificate's subjectAltName as a SPIFFE-style URI
(``spiffe://ledger/member/bank-a``, ``spiffe://ledger/validator/v1``); the subject
CN repeats the id for people. The URI SAN, not the CN, is what the validators read
(etcd uses the CN; a SAN cannot be confused with a host name). Keys are ECDSA P-256:
every TLS stack gRPC ships with supports them.

=================== ====================================================================
validator           serverAuth + clientAuth (its gRPC server and its Raft links both
                    ways); DNS/IP SANs for the hosts it is reached at
member/auditor/...  clientAuth only: the caller's identity for mutual TLS
=================== ====================================================================

Errors: :class:`CertificateError` (a subclass of ValueError) for a certificate or CSR
that does not parse, names no identity, or names another identity than expected.
"""
from __future__ import annotations

import datetime
import hashlib
import ipaddress
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: Scheme and trust domain of the identity URIs.
IDENTITY_PREFIX = "spiffe://ledger/"
#: Kinds of identity a certificate can name.
KINDS = ("validator", "member")
#: Validity of generated certificates, days (a CA: ten years).
CERT_VALIDITY_DAYS = 825
CA_VALIDITY_DAYS = 3650


class CertificateError(ValueError):
    """A certificate or CSR is malformed, names no identity, or the wrong one."""


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a certificate names: ``kind`` is ``validator`` or ``member`` (any identity of
    the member registry: banks, auditors, operators, admins)."""

    kind: str
    id: str

    @property
    def uri(self) -> str:
        return f"{IDENTITY_PREFIX}{self.kind}/{self.id}"


def identity_uri(kind: str, identity: str) -> str:
    return Identity(kind, identity).uri


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def make_ca(common_name: str) -> tuple[bytes, bytes]:
    """A self-signed CA: (private key PEM, certificate PEM)."""
    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CA_VALIDITY_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                          key_encipherment=False, data_encipherment=False, key_agreement=False,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return _key_pem(key), cert.public_bytes(serialization.Encoding.PEM)


def _sans(identity: Identity, hosts) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(identity.uri)]
    for h in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            names.append(x509.DNSName(h))
    return names


def _sign(ca_key_pem: bytes, ca_cert_pem: bytes, public_key, identity: Identity, hosts) -> bytes:
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    if identity.kind == "validator":
        usages.insert(0, ExtendedKeyUsageOID.SERVER_AUTH)
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, identity.id)]))
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CERT_VALIDITY_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(_sans(identity, hosts)), critical=False)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def issue_certificate(ca_key_pem: bytes, ca_cert_pem: bytes, *, kind: str, identity: str,
                      hosts: tuple[str, ...] = ()) -> tuple[bytes, bytes]:
    """A new key and a certificate for ``kind``/``identity`` signed by the CA:
    (private key PEM, certificate PEM). ``hosts`` become DNS or IP SANs (validators)."""
    if kind not in KINDS:
        raise CertificateError(f"kind must be one of {KINDS}, not {kind!r}")
    key = _new_key()
    return _key_pem(key), _sign(ca_key_pem, ca_cert_pem, key.public_key(), Identity(kind, identity), hosts)


def make_csr(identity: str, kind: str = "member") -> tuple[bytes, bytes]:
    """A new TLS key and a certificate signing request naming ``identity``:
    (private key PEM, CSR PEM). The member keeps the key; the operator signs the CSR."""
    key = _new_key()
    ident = Identity(kind, identity)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, identity)]))
        .add_extension(x509.SubjectAlternativeName(_sans(ident, ())), critical=False)
        .sign(key, hashes.SHA256())
    )
    return _key_pem(key), csr.public_bytes(serialization.Encoding.PEM)


def sign_csr(ca_key_pem: bytes, ca_cert_pem: bytes, csr_pem: bytes, *, expected_identity: str) -> bytes:
    """Certificate PEM for a member's CSR. Raises CertificateError if the CSR does not
    parse, its signature is bad, or it names another identity than ``expected_identity``
    (the operator states whom they meant to certify; the CSR cannot choose)."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError as e:
        raise CertificateError(f"not a PEM certificate signing request: {e}") from e
    if not csr.is_signature_valid:
        raise CertificateError("the CSR's signature does not verify")
    ident = _identity_from_extensions(csr.extensions)
    if ident.kind != "member" or ident.id != expected_identity:
        raise CertificateError(f"the CSR names {ident.uri}, expected {identity_uri('member', expected_identity)}")
    return _sign(ca_key_pem, ca_cert_pem, csr.public_key(), ident, ())


def _identity_from_extensions(extensions) -> Identity:
    try:
        san = extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound as e:
        raise CertificateError("no subjectAltName: the certificate names no identity") from e
    found = [u for u in san.get_values_for_type(x509.UniformResourceIdentifier) if u.startswith(IDENTITY_PREFIX)]
    if len(found) != 1:
        raise CertificateError(f"expected exactly one {IDENTITY_PREFIX}… URI SAN, found {len(found)}")
    kind, _, ident = found[0][len(IDENTITY_PREFIX):].partition("/")
    if kind not in KINDS or not ident or "/" in ident:
        raise CertificateError(f"malformed identity URI {found[0]!r}")
    return Identity(kind, ident)


def identity_from_certificate(cert: bytes) -> Identity:
    """The identity a certificate (PEM or DER) names. Raises CertificateError.
    Does not verify the chain: TLS did that before the certificate reached us."""
    try:
        c = x509.load_pem_x509_certificate(cert) if cert.lstrip().startswith(b"-----") else x509.load_der_x509_certificate(cert)
    except ValueError as e:
        raise CertificateError(f"not an X.509 certificate: {e}") from e
    return _identity_from_extensions(c.extensions)


def certificate_sha256(cert: bytes) -> bytes:
    """SHA-256 of a certificate's DER encoding (given PEM or DER): its pin."""
    if cert.lstrip().startswith(b"-----"):
        try:
            cert = x509.load_pem_x509_certificate(cert).public_bytes(serialization.Encoding.DER)
        except ValueError as e:
            raise CertificateError(f"not an X.509 certificate: {e}") from e
    return hashlib.sha256(cert).digest()
