"""A throwaway Ray cluster on this machine, for tests and benchmarks: a head node plus worker nodes,
each a real raylet with its own worker processes, reachable on loopback only.

Built with Ray's ``ray.cluster_utils.Cluster`` rather than ``ray start --head`` / ``ray start --address``
subprocesses, for two reasons measured with Ray 2.60 on a shared machine:
- ``ray start`` rewrites ``--node-ip-address=127.0.0.1`` to the host's network address and its
  servers then listen on every interface (an unauthenticated cluster that runs any code it is sent).
  Ray keeps loopback only with ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, and with it set ``ray start
  --address`` refuses to add a second node. ``Cluster`` takes the address as given: every server of
  every node listens on 127.0.0.1.
- ``ray stop --force`` kills every Ray process of the machine, other users' clusters included.
  ``Cluster.shutdown`` ends the processes its nodes started, by their handles.

Ray reads that loopback switch when it is imported, so ``LocalCluster`` must start before the first
``import ray`` of the process; it says so plainly when that is not the case. All Ray files (sockets,
logs, spilled objects, the "current cluster" address file) go to a fresh temporary folder.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any

_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # node addresses stay 127.0.0.1 (see the module docstring)
    "RAY_USAGE_STATS_ENABLED": "0",
}


class LocalCluster:
    """``with LocalCluster(nodes=2) as cluster: ... cluster.address ...`` (a head and nodes - 1 workers)."""

    def __init__(self, nodes: int = 2, cpus_per_node: int = 1, object_store_mb: int = 200) -> None:
        if nodes < 1:
            raise ValueError(f"nodes must be >= 1, got {nodes}")
        if cpus_per_node < 1:
            raise ValueError(f"cpus_per_node must be >= 1, got {cpus_per_node}")
        if object_store_mb < 80:  # Ray refuses object stores under 75 MiB
            raise ValueError(f"object_store_mb must be >= 80, got {object_store_mb}")
        self.nodes = nodes
        self.cpus_per_node = cpus_per_node
        self.object_store_mb = object_store_mb
        self.folder: Path | None = None
        self._cluster: Any = None
        self._saved_env: dict[str, str | None] = {}

    @property
    def address(self) -> str:
        if self._cluster is None:
            raise RuntimeError("the cluster is not running")
        return str(self._cluster.address)

    def _node_args(self) -> dict[str, Any]:
        return {
            "node_ip_address": "127.0.0.1",
            "num_cpus": self.cpus_per_node,
            "num_gpus": 0,
            "object_store_memory": self.object_store_mb * 2**20,
        }

    def start(self) -> LocalCluster:
        # Short path: Unix socket paths under it must stay below 108 bytes.
        self.folder = Path(tempfile.mkdtemp(prefix="sd-ray-", dir="/tmp" if os.path.isdir("/tmp") else None))
        (self.folder / "ray").mkdir()
        env = {**_ENV, "RAY_TMPDIR": str(self.folder)}
        self._saved_env = {name: os.environ.get(name) for name in env}
        os.environ.update(env)
        try:
            if "ray" in sys.modules and sys.modules["ray"]._private.ray_constants.ENABLE_RAY_CLUSTER:
                raise RuntimeError("LocalCluster must start before the first 'import ray' of this process "
                                   "(Ray reads its loopback switch at import)")
            from ray.cluster_utils import Cluster

            self._cluster = Cluster(
                initialize_head=True,
                head_node_args={**self._node_args(), "include_dashboard": False},
                shutdown_at_exit=True,
            )
            for _ in range(self.nodes - 1):
                self._cluster.add_node(**self._node_args())
            self._cluster.wait_for_nodes(timeout=60)  # node start-up is slow on a loaded machine
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Disconnect this process if connected, end the nodes' processes, delete the folder."""
        if self._cluster is not None:
            import ray

            ray.shutdown()
            self._cluster.shutdown()
            self._cluster = None
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved_env = {}
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()
