"""The wire contract, generated from ``proto/ledger/v1/ledger.proto`` at install.

``raft_ledger_client.pb.ledger.v1.ledger_pb2`` (messages and enums) and
``ledger_pb2_grpc`` (stubs and servicers) are written here by
``python proto/generate.py`` (the README's setup runs it); they are never
edited by hand or committed. The SDK and the validator import them by this name.
"""
