"""The gRPC API adapter: request validation, protobuf <-> core mapping, servicers.

Rooms: :mod:`.validation` (stateless checks and decoding, pure: raises
:class:`~.validation.RequestError`), :mod:`.mapping` (protobuf <-> core records,
the positional fast path of the submit path), :mod:`.servicers` (``Ledger`` and
``Admin``: leader checks, signatures, proposing, reads; maps every outcome to a
status code).

Rooms (continued): :mod:`.authz` (who the caller is — the identity of its TLS
client certificate in the governed configuration — and the access table below).

Access (mutual TLS; details and the plaintext development mode: :mod:`.authz`):

================================  =========================  ===========================
method                            caller                     sees / may
================================  =========================  ===========================
Ledger.Submit                     any active identity        only transactions it signed
Ledger.Lookup*, GetAccount*,      any active identity        a member: its own accounts,
Query*                                                       transfers and balances
                                                             touching them (others' =
                                                             missing); auditor: all
Ledger.GetHead, GetBlock,         any active identity        everything
GetConfiguration
Admin.*, server reflection        ``operator`` role          everything
grpc.health.v1.Health             any active identity        serving status
================================  =========================  ===========================

Status codes (every message says what to do; never a stack trace):

* PERMISSION_DENIED — the caller's client certificate names no active identity of
  the governed configuration (unknown, suspended, removed, or not a member
  certificate), the method needs a role the caller lacks (Admin, reflection: the
  operator's), a Submit carries a transaction signed as another member than the
  caller, or the signer may not: unknown member or key id, suspended or removed
  member, revoked key ("revoked"), a role that does not permit the operation
  (create_* needs ``member``; governance an admin or ``operator``). Refused before
  any work; nothing was proposed. (A client without a certificate, or with one of
  another CA, fails the TLS handshake: UNAVAILABLE.) Refusals decided at apply time
  (a key revoked by a block committed meanwhile, a forged admin quorum, a stale
  proposal) are not statuses: the TransactionResult carries its ``rejection``
  (TxRejection).
* INVALID_ARGUMENT — malformed request, transaction, event or governance proposal
  (the message names the problem), bad signature, a per-transaction or per-query
  limit exceeded, a governance proposal built on another configuration version
  (``config_version_stale``). Nothing of the request was proposed.
* RESOURCE_EXHAUSTED — the Submit as a whole is larger than one block may be
  (``submit_events_max``, ``submit_bytes_max``; gRPC itself answers a message above
  ``grpc_message_bytes_max``). Nothing was proposed: split it into several Submits.
* FAILED_PRECONDITION — this validator is not the leader; trailing metadata
  ``leader-address`` names the leader's gRPC address, ``ledger-refused:
  not-leader`` says nothing was proposed.
* UNAVAILABLE — no leader yet (trailing metadata ``ledger-refused: no-leader``:
  nothing was proposed), or the proposal was dropped (leader change): the
  outcome is unknown, retry the same signed transactions.
* DEADLINE_EXCEEDED — the block did not apply in time; outcome unknown: retry.
* NOT_FOUND — GetBlock for a height not (yet) in the chain.
* INTERNAL — a bug; logged with its trace on the server, not sent.
"""
