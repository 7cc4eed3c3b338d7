"""``ledger-validator cdc-sink``: publish the cluster's blocks to NATS JetStream (raft_ledger_node.cdc_sink).

Translates only: builds the SDK client of ``--as`` from the cluster directory, the
JetStream publisher and the state file, and prints one line per acknowledged block to
stderr. Exit codes: 0 reached ``--until-height``, 1 the broker failed (SinkError) or the
client could not be built, 2 a usage error. Without ``--until-height`` it runs until it is
stopped (SIGTERM / SIGINT); it can be killed at any moment: the state file only ever
names heights the broker acknowledged.
"""
from __future__ import annotations

import logging

import click

from raft_ledger_node.cli.common import DEFAULT_CLUSTER_DIR, console, translate_errors


@click.command("cdc-sink")
@click.option("--cluster", "directory", default=DEFAULT_CLUSTER_DIR, show_default=True,
              help="Cluster directory (genesis, identities' keys and TLS files).")
@click.option("--as", "identity", default="auditor", show_default=True,
              help="Identity the stream is read as: its visibility decides the events (auditor: all).")
@click.option("--nats", "nats_url", required=True, help="NATS server URL, e.g. nats://127.0.0.1:4222.")
@click.option("--subject", default="ledger.blocks", show_default=True, help="Subject each block is published to.")
@click.option("--stream", default="LEDGER_BLOCKS", show_default=True, help="JetStream stream (created if missing).")
@click.option("--state", "state_path", required=True, type=click.Path(dir_okay=False),
              help="File keeping the last height the broker acknowledged (resume point).")
@click.option("--from-height", default=1, show_default=True, type=click.IntRange(min=1),
              help="First height when the state file does not exist yet.")
@click.option("--until-height", default=0, show_default=True, type=click.IntRange(min=0),
              help="Stop after this height is acknowledged (0: run until stopped).")
@click.option("--prefer", "prefer", default=None, metavar="HOST:PORT",
              help="Stream from this validator's gRPC address first (e.g. the one on this host).")
@click.option("--quiet", is_flag=True, help="No line per block.")
@translate_errors
def cdc_sink(directory, identity, nats_url, subject, stream, state_path, from_height, until_height, prefer, quiet):
    """Publish every committed block (JSON, header Nats-Msg-Id: <chain>/<height>) to a NATS
    JetStream stream, at least once, resuming from --state after a crash."""
    from raft_ledger_node.cdc_sink import JetStreamPublisher, SinkError, SinkState, run_sink
    from raft_ledger_node.localcluster import member_client

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    state = SinkState(state_path)
    try:
        last = state.load()
        publisher = JetStreamPublisher(nats_url, subject, stream=stream)
    except SinkError as e:
        raise click.ClickException(str(e)) from None
    console.print(f"cdc-sink: {identity} -> {nats_url} {subject} (stream {stream}); "
                  f"resuming at height {last + 1 if last else from_height}", soft_wrap=True)

    def show(b, seq, dup):
        if not quiet:
            console.print(f"height {b.height} from {b.source} acked seq={seq}{' duplicate' if dup else ''} "
                          f"accounts={len(b.accounts)} transfers={len(b.transfers)}", highlight=False, soft_wrap=True)

    try:
        with member_client(directory, identity) as client:
            done = run_sink(client, publisher, state, from_height=from_height, until_height=until_height,
                            address=prefer, on_block=show)
    except SinkError as e:
        raise click.ClickException(str(e)) from None
    finally:
        publisher.close()
    console.print(f"cdc-sink: acknowledged up to height {done}")
