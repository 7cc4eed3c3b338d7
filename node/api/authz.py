"""Who is calling, and what they may read or call: the gRPC API's authorisation.

The caller is the identity of the TLS client certificate (mutual TLS: every
validator's server requires one issued by the genesis CA), named by its URI SAN
``spiffe://ledger/member/<id>`` (:func:`raft_ledger_node.pki.identity_from_certificate`),
looked up in the governed configuration as of the last applied block
(``store.configuration()``). It must be an identity of kind ``member`` that is
**active**: an unknown, suspended or removed identity, a validator certificate or
a certificate without an identity is refused with PERMISSION_DENIED before any
work (etcd's client-certificate authentication, Consul's default deny). A
suspension applied by governance takes effect on the next call of that identity.

The one exception is health checking: a validator's own certificate
(``spiffe://ledger/validator/<id>``, ``id`` a validator of the configuration and
the certificate's SHA-256 its pinned ``tls_cert_sha256``) may call
``grpc.health.v1.Health/*`` and nothing else, so an exec probe in the validator's
pod or on its host (``ledger-validator health``) passes mutual TLS without a
member's key (Kubernetes' native ``grpc:`` probe cannot present a certificate).

Access table (enforced by :class:`AuthzInterceptor` per method, then by the
servicers per row; ``Ledger`` is ``ledger.v1.LedgerService``, ``Admin`` ``ledger.v1.AdminService``):

=====================================  ==================  ====================================
method                                 who may call        what they see
=====================================  ==================  ====================================
Ledger/Submit                          any identity        transactions whose ``member_id`` is
                                                           the caller's (any other: the whole
                                                           Submit is PERMISSION_DENIED, before
                                                           signatures are verified); the ledger
                                                           then applies its own rules
Ledger/LookupAccounts                  any identity        a member: its own accounts (others'
                                                           are left out, as missing ids are);
                                                           ``auditor``: every account
Ledger/LookupTransfers                 any identity        a member: transfers with its account
                                                           on either side; auditor: all
Ledger/GetAccountTransfers,            any identity        a member: only for its own account;
GetAccountBalances                                         another's answers exactly as a
                                                           missing account (empty page, cursor
                                                           0); auditor: any account
Ledger/QueryAccounts, QueryTransfers   any identity        filtered by owner inside the index
                                                           scan (rows of others count against
                                                           the scan budget, so pages and
                                                           cursors stay exact); auditor: all
Ledger/GetHead, GetBlock,              any identity        everything (headers and tx hashes
GetConfiguration                                           reveal no account)
Ledger/GetCheckpoint, WatchCheckpoints any identity        checkpoints and cosignatures (public:
GetCosignatures, GetConsistencyProof,  (GetCosignatures    hashes and signatures); GetCosignatures
GetValidatorSet, GetHandoffs           also a validator's  is how validators collect each other's
                                       pinned certificate) signatures
Ledger/GetInclusionProof               any identity        the transaction's bytes and proof: a
                                                           member only for transactions it signed
                                                           (else NOT_FOUND, as a missing one);
                                                           auditor: all
Ledger/GetAccountProofs                any identity        as LookupAccounts
Ledger/WatchEvents                     any identity        every block; in it, as the reads: a
                                                           member its own accounts and transfers
                                                           touching them (failed events: their
                                                           signer only); auditor: all (api.cdc)
Ledger/ExportAudit                     ``auditor`` role    every transaction with its proof
                                                           (api.audit_stream); a member:
                                                           PERMISSION_DENIED before any work
Admin/*                                ``operator`` role   everything
ServerReflection                       ``operator`` role   the service descriptors
grpc.health.v1.Health/*                any identity, or a  serving status
                                       validator's pinned
                                       certificate
any other method                       nobody              PERMISSION_DENIED (default deny)
=====================================  ==================  ====================================

"Any identity" means any active identity of the configuration, whatever its roles
(an administrator with no role can read heads and submit governance transactions
it signed). The ``operator`` reads no accounts of members: it owns none.

Another member's account is indistinguishable from a missing one: same status,
same message, same fields (the leak that remains is timing, not content).

Plaintext development mode (``insecure_plaintext``: no TLS, so no identity): every
caller is the anonymous development caller. It may call every method, reads are
unrestricted (as an auditor's), and Submit checks signatures only, as the
validators behaved before issue 11. Never run it where a member could connect.

Errors: every refusal is ``context.abort(PERMISSION_DENIED, message)`` (a gRPC
status; nothing was done); no exception of this module reaches the client.
"""
from __future__ import annotations

import contextvars
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import grpc

from raft_ledger_node import pki
from raft_ledger_node.ledger.governance import Configuration

#: Decoded client certificates kept (certificate bytes -> identity), least recently used out first.
IDENTITY_CACHE_ENTRIES_MAX = 1024
#: How long a call from a certified identity this validator does not (yet) know as an
#: active member waits for a read barrier before it is refused (seconds).
CATCH_UP_TIMEOUT_S = 2.0

LEDGER = "/ledger.v1.LedgerService/"
ADMIN = "/ledger.v1.AdminService/"
REFLECTION = "/grpc.reflection.v1alpha.ServerReflection/"
REFLECTION_V1 = "/grpc.reflection.v1.ServerReflection/"
HEALTH = "/grpc.health.v1.Health/"

#: Required role per method: ``ANY`` (any active identity) or a role name.
ANY = ""
LEDGER_METHODS = (
    "Submit", "LookupAccounts", "LookupTransfers", "GetAccountTransfers", "GetAccountBalances",
    "QueryAccounts", "QueryTransfers", "GetHead", "GetBlock", "GetConfiguration",
    "GetCheckpoint", "WatchCheckpoints", "GetCosignatures", "GetInclusionProof", "GetConsistencyProof",
    "GetAccountProofs", "GetValidatorSet", "GetHandoffs",
    "WatchEvents",
)
#: What a validator's pinned certificate may call: health probes, the cosignatures
#: its peers collect to form certificates, and the governed configuration (a new
#: validator learns the current validator set from it before it joins as a learner).
VALIDATOR_METHODS = (HEALTH, LEDGER + "GetCosignatures", LEDGER + "GetConfiguration")


#: Ledger methods open to one role only (the audit export shows every member's transactions).
LEDGER_ROLE_METHODS = {"ExportAudit": "auditor"}


def required_role(method: str) -> str | None:
    """The role ``method`` (``/package.Service/Method``) needs: ANY, a role, or None (nobody)."""
    if method.startswith(LEDGER) and method[len(LEDGER):] in LEDGER_ROLE_METHODS:
        return LEDGER_ROLE_METHODS[method[len(LEDGER):]]
    if method.startswith(LEDGER):
        return ANY if method[len(LEDGER):] in LEDGER_METHODS else None
    if method.startswith(ADMIN) or method.startswith(REFLECTION) or method.startswith(REFLECTION_V1):
        return "operator"
    if method.startswith(HEALTH):
        return ANY
    return None


@dataclass(frozen=True, slots=True)
class Caller:
    """The identity behind one call. ``id`` None: the anonymous plaintext development caller.
    ``kind`` ``validator``: a validator's certificate, admitted to Health only (no roles,
    reads nothing)."""

    id: str | None
    roles: frozenset[str] = frozenset()
    kind: str = "member"

    @property
    def reads_all(self) -> bool:
        return self.id is None or "auditor" in self.roles

    def has_role(self, role: str) -> bool:
        return self.id is None or role == ANY or role in self.roles

    def sees_account(self, account) -> bool:
        return self.reads_all or account.owner == self.id

    def sees_transfer(self, transfer, get_account: Callable[[int], object]) -> bool:
        """Whether a transfer touches one of the caller's accounts (either side)."""
        if self.reads_all:
            return True
        for account_id in (transfer.debit_account_id, transfer.credit_account_id):
            a = get_account(account_id)
            if a is not None and a.owner == self.id:
                return True
        return False

    @property
    def owner_filter(self) -> str | None:
        """The owner a store scan keeps rows of (None: every row)."""
        return None if self.reads_all else self.id


ANONYMOUS = Caller(None)

# The caller the interceptor resolved for the call running in this thread, with its
# context, so the servicer does not decode the certificate a second time.
_current: contextvars.ContextVar[tuple[object, Caller] | None] = contextvars.ContextVar("ledger_caller", default=None)


class Authorizer:
    """Resolves a call's :class:`Caller` and enforces the access table above.

    ``configuration()`` returns the current governed configuration (the store's);
    ``plaintext`` True: the server has no TLS, every caller is :data:`ANONYMOUS`.
    ``catch_up(timeout_s) -> bool`` (the replica's read barrier), if given, is called
    once before a certified identity is refused as unknown or inactive: this validator
    may not yet have applied the governance change that admitted it (a follower a few
    entries behind, a new leader whose applied index trails its commit index), and a
    member added by an acknowledged change must not be refused anywhere. The refusal
    stands if the identity is still not active after the barrier (or it times out).
    Barriers are shared by concurrent callers (one in flight at a time), so refused
    callers cost at most one log entry per round trip, and only holders of a
    certificate of the cluster CA reach this point. Thread-safe.
    """

    def __init__(self, configuration: Callable[[], Configuration | None], *, plaintext: bool = False,
                 cache_entries_max: int = IDENTITY_CACHE_ENTRIES_MAX,
                 catch_up: Callable[[float], bool] | None = None,
                 catch_up_timeout_s: float = CATCH_UP_TIMEOUT_S) -> None:
        self._configuration = configuration
        self._catch_up = catch_up
        self._catch_up_timeout_s = catch_up_timeout_s
        self.plaintext = plaintext
        self._cache: OrderedDict[bytes, pki.Identity | None] = OrderedDict()
        self._cache_entries_max = cache_entries_max
        self._lock = threading.Lock()

    def _identity(self, cert: bytes) -> pki.Identity | None:
        with self._lock:
            if cert in self._cache:
                self._cache.move_to_end(cert)
                return self._cache[cert]
        try:
            ident = pki.identity_from_certificate(cert)
        except pki.CertificateError:
            ident = None
        with self._lock:
            self._cache[cert] = ident
            if len(self._cache) > self._cache_entries_max:
                self._cache.popitem(last=False)
        return ident

    def resolve(self, context, *, health: bool = False) -> Caller:
        """The caller of ``context`` (a grpc.ServicerContext); aborts PERMISSION_DENIED
        for a missing, unknown, inactive or non-member identity. ``health`` True (the
        call is to grpc.health.v1.Health): a validator's pinned certificate is admitted
        too, as a :class:`Caller` of kind ``validator``."""
        if self.plaintext:
            return ANONYMOUS
        certs = context.auth_context().get("x509_pem_cert") or ()
        if not certs:
            context.abort(grpc.StatusCode.PERMISSION_DENIED,
                          "no client certificate: connect with mutual TLS and your identity's certificate")
        ident = self._identity(certs[0])
        if health and ident is not None and ident.kind == "validator":
            return self._validator(ident, certs[0], context)
        if ident is None or ident.kind != "member":
            context.abort(grpc.StatusCode.PERMISSION_DENIED,
                          "the client certificate names no member identity (spiffe://ledger/member/<id>)")
        m = self._member(ident.id)
        if (m is None or not m.active) and self._catch_up is not None:
            self._catch_up(self._catch_up_timeout_s)
            m = self._member(ident.id)
        if m is None or not m.active:
            # The holder of a certificate of the cluster CA for this identity learns its own
            # status (a member bank must know it was suspended), nothing about others.
            status = "unknown to" if m is None else f"{m.status.value} in"
            context.abort(grpc.StatusCode.PERMISSION_DENIED,
                          f"identity {ident.id!r} is {status} this ledger's configuration: nothing was done")
        return Caller(m.id, frozenset(m.roles))

    def _member(self, member_id: str):
        cfg = self._configuration()
        return None if cfg is None else cfg.member(member_id)

    def _validator(self, ident: pki.Identity, cert: bytes, context) -> Caller:
        """A validator's certificate calling Health: it must be the certificate pinned for
        that validator in the configuration (a re-issued or foreign-pinned one is not)."""
        cfg = self._configuration()
        rec = None if cfg is None else next((v for v in cfg.validators if v.id == ident.id), None)
        if rec is None or not rec.tls_cert_sha256 or pki.certificate_sha256(cert) != rec.tls_cert_sha256:
            context.abort(grpc.StatusCode.PERMISSION_DENIED,
                          f"validator certificate {ident.id!r} is not the one pinned in this ledger's configuration")
        return Caller(f"validator/{ident.id}", kind="validator")

    def admit(self, method: str, context) -> Caller:
        """Resolve the caller and check ``method``'s required role; aborts PERMISSION_DENIED."""
        validator_ok = method.startswith(VALIDATOR_METHODS)
        caller = self.resolve(context, health=validator_ok)
        if caller.kind == "validator" and not validator_ok:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, f"{method} is not open to a validator certificate")
        role = required_role(method)
        if role is None and caller.id is not None:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, f"{method} is not open to any identity")
        if role and not caller.has_role(role):
            context.abort(grpc.StatusCode.PERMISSION_DENIED, f"{method} requires the {role!r} role")
        return caller

    def caller(self, context) -> Caller:
        """The caller of the running call: the one :class:`AuthzInterceptor` admitted, or
        resolved now (a servicer used without the interceptor)."""
        cur = _current.get()
        if cur is not None and cur[0] is context:
            return cur[1]
        return self.resolve(context)


def _wrap(behaviour, admit):
    def call(request, context):
        caller = admit(context)
        token = _current.set((context, caller))
        try:
            return behaviour(request, context)
        finally:
            _current.reset(token)

    def stream(request, context):
        admit(context)  # before the handler builds its response iterator
        return behaviour(request, context)

    return call, stream


class AuthzInterceptor(grpc.ServerInterceptor):
    """Admits every call by :meth:`Authorizer.admit` before its handler runs (every
    service: Ledger, Admin, reflection, health)."""

    def __init__(self, authz: Authorizer) -> None:
        self._authz = authz

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method

        def admit(context):
            return self._authz.admit(method, context)

        ser = dict(request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer)
        if handler.unary_unary is not None:
            call, _ = _wrap(handler.unary_unary, admit)
            return grpc.unary_unary_rpc_method_handler(call, **ser)
        if handler.unary_stream is not None:
            _, stream = _wrap(handler.unary_stream, admit)
            return grpc.unary_stream_rpc_method_handler(stream, **ser)
        if handler.stream_unary is not None:
            call, _ = _wrap(handler.stream_unary, admit)
            return grpc.stream_unary_rpc_method_handler(call, **ser)
        _, stream = _wrap(handler.stream_stream, admit)
        return grpc.stream_stream_rpc_method_handler(stream, **ser)
