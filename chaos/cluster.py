"""A local 3-validator cluster whose every Raft link runs through its own Toxiproxy proxy.

pysyncobj opens one TCP connection per pair of validators, dialled by the one
whose Raft address sorts higher, and uses it in both directions. So each pair
(i, j) with ``raft(i) > raft(j)`` gets a proxy named ``"i-j"``: it listens on a
port of 127.0.0.1 chosen by Toxiproxy, its upstream is j's Raft address, and i's
config dials it instead of j (``raft_peer_dial``). On that proxy Toxiproxy's
``upstream`` stream carries the bytes i sends to j and ``downstream`` the bytes
j sends to i, which is what one-way faults act on.

What each network fault does on the wire:

* ``partition`` / ``cut_one_way``: a ``timeout`` toxic with ``timeout=0`` on the
  stream(s): bytes are read and dropped, nothing is answered, no FIN or RST is
  sent, and new connections are still accepted (their bytes are dropped too).
  That is a silent partition: each side learns of it only from its own timers
  (Raft election timeout, ``leaderFallbackTimeout``, pysyncobj's 3.5 s
  connection timeout). Disabling the proxy instead would close every connection
  and refuse new ones: a loud failure that tells the nodes at once, more like a
  crashed peer than a cut cable.
* ``latency``: a ``latency`` toxic on both streams: every chunk in either
  direction waits ``latency_ms`` ± ``jitter_ms`` (so a round trip ≈ 2×).
* ``bandwidth``: a ``bandwidth`` toxic on both streams, ``rate_kb`` KB/s each way.
* ``reset_peer``: a ``reset_peer`` toxic on both streams: a connection is
  closed with a TCP RST ``timeout_ms`` after its first bytes; reconnections are
  reset the same way while the toxic stays (a flapping link).

``heal`` removes every toxic. A connection that lived through a blackhole has
lost bytes from the middle of its stream, which real TCP never does (it
retransmits); pysyncobj would read garbage frame lengths from it. So the proxies
that carried a blackhole are first disabled (closing their connections) and
then re-enabled on the same port: the nodes reconnect with clean streams, as
they would after a long real partition whose connections timed out.

Validators added after genesis (:meth:`ChaosCluster.add_validator`, the
``membership`` scenario): pysyncobj's dialler is the higher Raft address, and a
new validator's (base+104, +105, …) sorts above every earlier one, so it dials
them all; it gets a proxy ``"<new>-<j>"`` to each known validator ``j`` and its
config dials those. Every link stays behind Toxiproxy. Faults target the current
*members* (:attr:`ChaosCluster.validator_ids`: voters the drill put in or kept),
not a learner still catching up nor a removed or lost validator; a partition
leaves the links of non-members alone.

Process faults act by PID on the validators this object started: SIGKILL (or
another signal), SIGSTOP/SIGCONT, restart of all. ``heal`` also resumes paused
validators and restarts the ones this object killed, but not one that exited on
its own: :meth:`ChaosCluster.unexpected_exits` reports those.

Ports: the cluster's gRPC (base+1..3) and Raft (base+101..103) ports are probed
from ``base_port`` upwards and reserved with the integration tests' lock files
(``raft_ledger_node.localcluster.reserve_ports``: ``$TMPDIR/ledger-test-ports/<base>.lock``),
so concurrent runs never share a range; the Toxiproxy API port is reserved the
same way (chaos/toxi.py) and the proxies' ports are chosen free by Toxiproxy.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time

import grpc

from raft_ledger_chaos import disks
from raft_ledger_chaos.bank import ISSUER, LEDGER
from raft_ledger_chaos.toxi import ToxiproxyServer
from raft_ledger_node.localcluster import (
    LocalCluster,
    LocalClusterError,
    PortReservation,
    cluster_port_offsets,
    add_validator_files,
    cluster_validators,
    init_cluster,
    reserve_ports,
    status_rows,
)

VALIDATORS = 3
#: Validators a drill cluster may have over its life (genesis + added): their ports are reserved.
VALIDATORS_MAX = 6
MEMBERS = ("bank-a", "bank-b")
HOST = "127.0.0.1"
#: Distance between probed port bases (gRPC base+1.., Raft base+101..).
BASE_PORT_STEP = 200
BASE_PORT_PROBES_MAX = 100
#: Attempts to bring the cluster up (a probed-free port may be taken before a validator binds it).
CLUSTER_START_ATTEMPTS_MAX = 3
CLUSTER_READY_TIMEOUT_S = 60.0
#: Time a validator gets to exit after a signal before it is SIGKILLed.
VALIDATOR_STOP_TIMEOUT_S = 15.0
#: Time a SIGKILLed validator gets to be reaped.
VALIDATOR_KILL_WAIT_S = 10.0
#: Settings every drill cluster runs with: quick reconnects and a quick step-down of a
#: leader cut off from the majority, so faults and recoveries show within seconds.
DRILL_CONFIG = {
    "connection_retry_time_s": 0.5,
    "leader_fallback_timeout_s": 2.0,
}
#: The adapter's safety fixes, off (``unsafe=True``): demonstrates what the checkers catch.
UNSAFE_CONFIG = {"durable_journal": False, "raft_fixes": False}
#: Toxic types that drop bytes; their proxies are bounced on heal (see module docstring).
_DROPPING_TOXICS = ("timeout",)
STREAMS = ("upstream", "downstream")


class ChaosClusterError(RuntimeError):
    """The drill cluster could not be started, or a fault names an unknown validator."""


def reserve_base_port(start: int) -> PortReservation:
    """The cluster's ports: the first base from ``start`` (step ``BASE_PORT_STEP``) that no one
    holds and whose ports are all free, held until released. Raises ChaosClusterError."""
    try:
        return reserve_ports(cluster_port_offsets(VALIDATORS_MAX), start=start, step=BASE_PORT_STEP,
                             probes_max=BASE_PORT_PROBES_MAX, host=HOST)
    except LocalClusterError as e:
        raise ChaosClusterError(str(e)) from None


class ChaosCluster:
    """Three validators (members bank-a, bank-b) behind per-link Toxiproxy proxies.

    ``start()`` brings it up (ports probed from ``base_port``; ``config_overrides``
    go into every validator's config.json last; ``unsafe`` switches the adapter's
    durability and truncation fixes off), ``stop()`` takes down only what it
    started. Faults: ``partition``, ``cut_one_way``, ``latency``, ``bandwidth``,
    ``reset_peer`` (network); ``kill``, ``start_validator``, ``pause``,
    ``resume``, ``restart_all`` (process); ``heal`` undoes them all.

    ``raft_proxy=True`` chains a Raft-aware proxy in front of every Toxiproxy
    link (dialler -> RaftProxy -> Toxiproxy -> listener; chaos/raftproxy.py
    ``RaftLinks``, :attr:`raft_links`): the message-level faults of the
    ``raft-*`` scenarios act there, every fault above still acts below it, and
    ``heal`` clears both.
    """

    def __init__(self, directory: str, *, base_port: int, config_overrides: dict | None = None, unsafe: bool = False,
                 lazyfs: bool = False, raft_proxy: bool = False) -> None:
        self.directory = os.path.abspath(directory)
        #: Each validator's data directory on a LazyFS mount (chaos/power.py), for ``power_cut``.
        self.lazyfs = lazyfs
        self._power = None  # power.PowerMounts while started with lazyfs
        self.base_port = base_port
        self.config_overrides = dict(config_overrides or {})
        self.unsafe = unsafe
        self.toxiproxy: ToxiproxyServer | None = None
        self._local: LocalCluster | None = None
        self._ports: PortReservation | None = None
        #: frozenset({a, b}) -> proxy name "i-j" (i dials j).
        self._links: dict[frozenset, str] = {}
        self._proxies: dict = {}  # name -> toxiproxy.Proxy
        self._bounce_on_heal: set[str] = set()
        self._paused: set[str] = set()
        self._killed: set[str] = set()
        #: unexpected_exits() as it stood when stop() began (stop's own SIGTERMs are expected).
        self._exits_at_stop: dict[str, int] | None = None
        #: The drill's current members (fault targets, final-state readers), genesis order then added.
        self._members: list[str] = []
        #: Validators that left on purpose (removed, or lost with their disk): their exits are expected.
        self._retired: set[str] = set()
        #: Held by the nemesis for a whole fault window and by membership steps that start,
        #: stop or wipe a validator, so the two never act on processes at once.
        self.fault_lock = threading.RLock()
        #: ``raft_proxy``: a Raft-aware proxy (chaos/raftproxy.py RaftLinks) chained in front of
        #: every Toxiproxy link, for the message-level faults; None without it.
        self.raft_proxy = raft_proxy
        self.raft_links = None
        #: Data directories put on a small tmpfs by the disk-full fault (chaos/disks.py): id -> SmallDisk.
        self.small_disks: dict = {}

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        """Init the cluster, start Toxiproxy and its proxies, start the validators, wait until ready."""
        start = self.base_port
        for attempt in range(CLUSTER_START_ATTEMPTS_MAX):
            self._ports = reserve_base_port(start)
            base = self.base_port = self._ports.base
            self._exits_at_stop = None
            self._killed.clear()
            self._paused.clear()
            self._retired.clear()
            try:
                # The bank's mint is the issuer's account (chaos/bank.py): name it the issuer
                # of the drill's ledger explicitly rather than rely on the default.
                init_cluster(self.directory, VALIDATORS, list(MEMBERS), HOST, base, force=True, issuers={LEDGER: [ISSUER]})
                self.toxiproxy = ToxiproxyServer(log_path=os.path.join(self.directory, "toxiproxy.log"))
                self.toxiproxy.start()
                self._local = self._local_cluster()
                self._members = [v.id for v in self._local.genesis.validators]
                if self.raft_proxy:
                    from raft_ledger_chaos.raftproxy import RaftLinks

                    self.raft_links = RaftLinks(self.directory)
                for vid in self._members:
                    self._create_proxies(vid)
                for vid in self._members:
                    self._write_config(vid)
                if self.lazyfs:
                    from raft_ledger_chaos.power import PowerMounts

                    self._power = PowerMounts(self.directory)
                    self._power.mount_many(self._members)
                self._local.start_all()
                self._local.wait_ready(timeout_s=CLUSTER_READY_TIMEOUT_S)
                return
            except LocalClusterError as e:
                # A validator exited (e.g. its port was taken after the probe) or no leader in time.
                self.stop()
                if attempt + 1 == CLUSTER_START_ATTEMPTS_MAX:
                    raise ChaosClusterError(f"cluster did not start: {e}") from None
                start = base + BASE_PORT_STEP
            except BaseException:
                self.stop()
                raise

    def _local_cluster(self) -> LocalCluster:
        """The LocalCluster that starts the validators (chaos/clock.py: one whose wall clock the harness steps)."""
        return LocalCluster(self.directory)

    def stop(self) -> None:
        """Stop the validators this object started (by PID), then the proxies and the server. Idempotent."""
        try:
            if self._local is not None:
                if self._exits_at_stop is None:
                    self._exits_at_stop = self.unexpected_exits()
                procs = self._local.procs
                for vid, p in procs.items():
                    if p.poll() is None:
                        if vid in self._paused:
                            p.send_signal(signal.SIGCONT)
                        p.send_signal(signal.SIGTERM)
                for vid in list(procs):
                    self._local.stop(vid, wait_s=VALIDATOR_STOP_TIMEOUT_S)  # SIGKILLs one that did not exit
                self._paused.clear()
                if self.small_disks:
                    disks.unmount_all(self)  # the validators are down: copy their data back, unmount
        finally:
            try:
                if self.toxiproxy is not None:
                    self.toxiproxy.stop()  # its proxies go with it
            finally:
                if self.raft_links is not None:
                    self.raft_links.stop()
                    self.raft_links = None
                self._proxies.clear()
                self._links.clear()
                self._bounce_on_heal.clear()
                if self._ports is not None:
                    self._ports.release()
                    self._ports = None
                if self._power is not None:  # after the validators: a busy mount would need -uz
                    power, self._power = self._power, None
                    power.unmount_all()

    def __enter__(self) -> "ChaosCluster":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _create_proxies(self, vid: str) -> None:
        """A proxy for every link ``vid`` dials (to each known validator whose Raft address sorts lower)."""
        client = self.toxiproxy.client
        known = {v.id: v for v in cluster_validators(self.directory)}
        a = known[vid]
        for b in known.values():
            if a.raft_address > b.raft_address:  # a dials b (pysyncobj's _shouldConnect)
                name = f"{a.id}-{b.id}"
                if name not in self._proxies:
                    self._proxies[name] = client.create(upstream=b.raft_address, name=name, listen=f"{HOST}:0")
                    self._links[frozenset((a.id, b.id))] = name
                    if self.raft_links is not None:  # a -> RaftProxy -> Toxiproxy -> b
                        self.raft_links.add(name, b.id, self._proxies[name].listen, b.raft_address, known)

    def _write_config(self, vid: str) -> None:
        known = {v.id: v for v in cluster_validators(self.directory)}
        dial = {}
        for name, proxy in self._proxies.items():
            src, dst = name.split("-")
            if src == vid:
                dial[known[dst].raft_address] = (self.raft_links.proxies[name].listen if self.raft_links is not None
                                                 else proxy.listen)
        path = os.path.join(self.directory, vid, "config.json")
        with open(path) as f:
            cfg = json.load(f)
        cfg.update(DRILL_CONFIG)
        cfg["raft_peer_dial"] = dial
        if self.unsafe:
            cfg.update(UNSAFE_CONFIG)
        cfg.update(self.config_overrides)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # holds the Raft password
        with os.fdopen(fd, "w") as f:
            json.dump(cfg, f, indent=2)

    # -- membership -----------------------------------------------------------------

    def add_validator(self, validator_id: str | None = None):
        """Write a new validator's files (``localcluster.add_validator_files``), its proxies
        and its drill config; it is not started and not a member yet. Returns its ValidatorInfo."""
        info = add_validator_files(self.directory, validator_id)
        self._create_proxies(info.id)
        self._write_config(info.id)
        return info

    def join(self, vid: str) -> None:
        """``vid`` is a member from now on (a fault target, read for the final state)."""
        self._check(vid)
        self._retired.discard(vid)
        if vid not in self._members:
            self._members.append(vid)

    def leave(self, vid: str) -> None:
        """``vid`` is no longer a member: faults leave it alone, its exit is expected (it is
        being removed, or lost). Take the fault lock first so no window is faulting it."""
        self._check(vid)
        if vid in self._members:
            self._members.remove(vid)
        self._retired.add(vid)

    def lose_disk(self, vid: str) -> str:
        """SIGKILL ``vid`` and move its data directory aside (``<id>/data.lost-<n>``): its disk is
        gone. Call :meth:`leave` first. Returns where the data went."""
        self.leave(vid)
        p = self._procs().get(vid)
        if p is not None and p.poll() is None:
            p.send_signal(signal.SIGKILL)
            p.wait(VALIDATOR_KILL_WAIT_S)
        self._killed.discard(vid)
        self._paused.discard(vid)
        data = os.path.join(self.directory, vid, "data")
        aside = f"{data}.lost-{len([n for n in os.listdir(os.path.dirname(data)) if n.startswith('data.lost-')])}"
        if os.path.exists(data):
            os.rename(data, aside)
        return aside

    def members_statuses(self, timeout_s: float = 1.0) -> dict:
        """Validator id -> GetStatusResponse | grpc.RpcError for every known validator
        (genesis and added): the ``statuses()`` of raft_ledger_node.reconfigure."""
        return {v.id: st for v, st in status_rows(self.genesis_path, timeout_s=timeout_s)}

    # -- views ----------------------------------------------------------------------

    @property
    def genesis_path(self) -> str:
        return os.path.join(self.directory, "genesis.json")

    @property
    def validator_ids(self) -> list[str]:
        """The current members (genesis validators until a membership change says otherwise)."""
        self._genesis()
        return list(self._members)

    @property
    def addresses(self) -> dict[str, str]:
        """Member id -> gRPC address."""
        self._genesis()
        known = {v.id: v for v in cluster_validators(self.directory)}
        return {vid: known[vid].grpc_address for vid in self._members}

    @property
    def pids(self) -> dict[str, int]:
        """Validator id -> PID of its running process (validators not running are left out)."""
        return {vid: p.pid for vid, p in self._procs().items() if p.poll() is None}

    @property
    def links(self) -> dict[str, dict]:
        """Proxy name -> {"dialer", "listener", "listen", "upstream"}: the wiring, for reports."""
        out = {}
        for name, proxy in self._proxies.items():
            src, dst = name.split("-")
            out[name] = {"dialer": src, "listener": dst, "listen": proxy.listen, "upstream": proxy.upstream}
        return out

    def _genesis(self):
        if self._local is None:
            raise ChaosClusterError("cluster not started; call start() first")
        return self._local.genesis

    def _procs(self) -> dict[str, subprocess.Popen]:
        return self._local.procs if self._local is not None else {}

    def status(self, timeout_s: float = 1.0):
        """[(ValidatorInfo, GetStatusResponse | grpc.RpcError)] for every validator, in genesis order."""
        return status_rows(self.genesis_path, timeout_s=timeout_s)

    def leader(self, timeout_s: float = 10.0) -> str | None:
        """The validator a majority follows: it reports itself leader and enough others name it.

        A leader cut off from the majority keeps saying "leader" until its
        ``leader_fallback_timeout_s``; it is not counted. None if no such leader
        appears within ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            members = set(self._members)
            majority = len(members) // 2 + 1
            rows = [(v, st) for v, st in self.status() if not isinstance(st, grpc.RpcError) and v.id in members]
            backed = []
            for v, st in rows:
                if st.role == "leader":
                    support = 1 + sum(1 for w, o in rows if w.id != v.id and o.leader_address == v.grpc_address)
                    if support >= majority:
                        backed.append((st.term, v.id))
            if backed:
                return max(backed)[1]
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.1)

    def unexpected_exits(self) -> dict[str, int]:
        """Validators whose process exited although this object did not kill it: id -> exit code.

        After :meth:`stop`, what it was when stop began."""
        if self._exits_at_stop is not None:
            return dict(self._exits_at_stop)
        return {vid: p.returncode for vid, p in self._procs().items()
                if p.poll() is not None and vid not in self._killed and vid not in self._retired}

    def toxics(self) -> dict[str, list[dict]]:
        """What Toxiproxy reports: proxy name -> [{"name", "type", "stream", "attributes"}]."""
        out = {}
        for name, proxy in self.toxiproxy.client.proxies().items():
            out[name] = sorted(
                ({"name": t.name, "type": t.type, "stream": t.stream, "attributes": t.attributes} for t in proxy.toxics().values()),
                key=lambda t: t["name"],
            )
        return out

    def proxy_enabled(self) -> dict[str, bool]:
        return {name: bool(p.enabled) for name, p in self.toxiproxy.client.proxies().items()}

    # -- process faults -------------------------------------------------------------

    def _check(self, vid: str) -> subprocess.Popen | None:
        self._genesis()  # raises if not started
        known = [v.id for v in cluster_validators(self.directory)]
        if vid not in known:
            raise ChaosClusterError(f"unknown validator {vid!r}; one of {sorted(known)}")
        return self._procs().get(vid)

    def kill(self, vid: str, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the validator and wait for it to exit (SIGKILL after a deadline)."""
        p = self._check(vid)
        if p is None or p.poll() is not None:
            return
        self._killed.add(vid)
        p.send_signal(sig)
        if vid in self._paused and sig != signal.SIGKILL:
            p.send_signal(signal.SIGCONT)  # a stopped process acts on no other signal
        self._paused.discard(vid)
        try:
            p.wait(VALIDATOR_KILL_WAIT_S if sig == signal.SIGKILL else VALIDATOR_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(VALIDATOR_KILL_WAIT_S)

    def start_validator(self, vid: str) -> None:
        """Start the validator again (no-op while it runs); it keeps its data directory."""
        p = self._check(vid)
        if p is not None and p.poll() is None:
            return
        if self._power is not None:
            self._power.mount(vid)  # no-op after power_cut, which mounts again at once
        self._local.start(vid)
        self._killed.discard(vid)

    def fill_disk(self, vid: str) -> dict:
        """The disk-full fault: ``vid`` on a small tmpfs until it stops on the full disk
        (chaos/disks.py). Returns the detail for the timeline. Raises DiskError (not root)."""
        return disks.fill_disk(self, vid)

    def expect_exit(self, vid: str) -> None:
        """``vid`` exited as the fault wanted (the disk-full fail-stop): not an unexpected
        exit, and :meth:`heal` starts it again."""
        self._killed.add(vid)

    def pause(self, vid: str) -> None:
        """SIGSTOP: the process keeps its sockets open but does nothing (a hung, not dead, node)."""
        p = self._check(vid)
        if p is not None and p.poll() is None:
            p.send_signal(signal.SIGSTOP)
            self._paused.add(vid)

    def resume(self, vid: str) -> None:
        """SIGCONT a paused validator."""
        p = self._check(vid)
        if p is not None and p.poll() is None:
            p.send_signal(signal.SIGCONT)
        self._paused.discard(vid)

    def restart_all(self) -> None:
        """SIGKILL every validator at once, then start them all (no wait for readiness)."""
        procs = self._procs()
        for vid, p in procs.items():
            if p.poll() is None:
                self._killed.add(vid)
                p.send_signal(signal.SIGKILL)
        for p in procs.values():
            p.wait(VALIDATOR_KILL_WAIT_S)
        self._paused.clear()
        for vid in self.validator_ids:
            self.start_validator(vid)

    def power_cut(self, vids) -> dict[str, str]:
        """Power loss of ``vids`` at one instant (needs ``lazyfs=True``; chaos/power.py): SIGKILL
        them all, then drop each one's unsynced data, unmount its LazyFS and mount a fresh one
        over what was durable. They stay off until :meth:`heal` (or :meth:`start_validator`)
        starts them. Returns id -> the file system's reply ("ok files_reverted=N entries_undone=M")."""
        from raft_ledger_chaos.power import kill_now

        if self._power is None:
            raise ChaosClusterError("power_cut needs a cluster started with lazyfs=True")
        vids = list(vids)
        procs = self._procs()
        for vid in vids:
            self._check(vid)
            self._killed.add(vid)
            self._paused.discard(vid)
            p = procs.get(vid)
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGKILL)
        for vid in vids:
            kill_now(procs.get(vid))
        replies = {vid: self._power.cut(vid) for vid in vids}
        self._power.mount_many(vids)  # fresh mounts over what was durable, ready for the heal
        return replies

    def power_cuts(self) -> dict[str, list[str]]:
        """Validator id -> the replies of every power cut of its mount so far (for reports)."""
        return self._power.cut_counts() if self._power is not None else {}

    # -- network faults -------------------------------------------------------------

    def _link(self, src: str, dst: str) -> tuple[str, str]:
        """(proxy name, stream) carrying the bytes ``src`` sends to ``dst``."""
        self._check(src)
        self._check(dst)
        name = self._links.get(frozenset((src, dst)))
        if name is None or src == dst:
            raise ChaosClusterError(f"no link between {src!r} and {dst!r}")
        return name, ("upstream" if name.startswith(f"{src}-") else "downstream")

    def _add_toxic(self, proxy_name: str, toxic_type: str, stream: str, attributes: dict) -> None:
        proxy = self._proxies[proxy_name]
        name = f"{toxic_type}-{stream}"
        if name in proxy.toxics():
            proxy.destroy_toxic(name)  # replace: a fault applied twice changes its parameters
        proxy.add_toxic(type=toxic_type, stream=stream, name=name, attributes=attributes)
        if toxic_type in _DROPPING_TOXICS:
            self._bounce_on_heal.add(proxy_name)

    def _touching(self, vids) -> list[str]:
        """Proxy names of the links with at least one end in ``vids`` (all links if None)."""
        if vids is None:
            return sorted(self._links.values())
        vids = set(vids)
        for v in vids:
            self._check(v)
        return sorted(name for pair, name in self._links.items() if pair & vids)

    def partition(self, groups: list[set[str]]) -> None:
        """Blackhole, both ways, every link between validators of different groups.

        Validators named in no group form one more group together.
        """
        named = set().union(*groups) if groups else set()
        for v in named:
            self._check(v)
        rest = set(self.validator_ids) - named
        all_groups = [set(g) for g in groups] + ([rest] if rest else [])
        side = {v: i for i, g in enumerate(all_groups) for v in g}
        for pair, name in sorted(self._links.items(), key=lambda kv: kv[1]):
            a, b = sorted(pair)
            if a in side and b in side and side[a] != side[b]:
                for stream in STREAMS:
                    self._add_toxic(name, "timeout", stream, {"timeout": 0})

    def cut_one_way(self, src: str, dst: str) -> None:
        """Drop every byte ``src`` sends to ``dst``; ``dst`` still reaches ``src``."""
        name, stream = self._link(src, dst)
        self._add_toxic(name, "timeout", stream, {"timeout": 0})

    def latency(self, latency_ms: int, jitter_ms: int = 0, vids=None) -> None:
        """Delay each direction of the links touching ``vids`` (all if None) by latency ± jitter."""
        for name in self._touching(vids):
            for stream in STREAMS:
                self._add_toxic(name, "latency", stream, {"latency": int(latency_ms), "jitter": int(jitter_ms)})

    def bandwidth(self, rate_kb: int, vids=None) -> None:
        """Limit each direction of the links touching ``vids`` (all if None) to ``rate_kb`` KB/s."""
        for name in self._touching(vids):
            for stream in STREAMS:
                self._add_toxic(name, "bandwidth", stream, {"rate": int(rate_kb)})

    def reset_peer(self, vids, timeout_ms: int = 0) -> None:
        """TCP RST on the links touching ``vids``, ``timeout_ms`` after a connection's first bytes."""
        for name in self._touching(vids):
            for stream in STREAMS:
                self._add_toxic(name, "reset_peer", stream, {"timeout": int(timeout_ms)})

    def heal(self) -> dict:
        """Undo every fault: remove toxics (bouncing blackholed links), SIGCONT paused
        validators, start the ones this object killed. Returns what it did."""
        done = {"toxics_removed": 0, "bounced": sorted(self._bounce_on_heal), "resumed": sorted(self._paused), "started": []}
        if self.toxiproxy is not None and self.toxiproxy.running():
            for name, proxy in sorted(self._proxies.items()):
                bounce = name in self._bounce_on_heal
                if bounce:
                    proxy.disable()  # closes the connections whose streams lost bytes
                for toxic in proxy.toxics():
                    proxy.destroy_toxic(toxic)
                    done["toxics_removed"] += 1
                if bounce or not proxy.enabled:
                    proxy.enable()  # same listen port as before
            self._bounce_on_heal.clear()
        for vid in sorted(self._paused):
            self.resume(vid)
        if self.small_disks:
            done["disks_grown"] = disks.heal_disks(self)  # free space before the restarts below
        for vid in sorted(self._killed):
            p = self._procs().get(vid)
            if p is None or p.poll() is not None:
                self.start_validator(vid)
                done["started"].append(vid)
        self._killed.clear()
        if self.raft_links is not None:
            done.update(self.raft_links.heal())
        return done
