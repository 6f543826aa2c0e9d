"""A real Redis Cluster (3 masters, 3 replicas) for tests, on free loopback ports.

    with RedisClusterFixture() as rc:       # or rc.start() ... rc.stop()
        rc.nodes          # "127.0.0.1:P1,...": the redis_nodes setting
        rc.kill(port)     # crash one node (SIGKILL)
        rc.stop_all(); rc.start()   # stop every node, then restart them with their state

It drives tools/redis-cluster (the same code operators run), in a temporary directory that is
removed afterwards. Every wait is bounded. `available()` says whether redis-server is installed,
so a test can skip with a clear message where it is not (tools/setup installs it).
"""

import importlib.machinery
import importlib.util
import os
import shutil
import tempfile

_TOOL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools",
                     "redis-cluster")


def _load_tool():
    loader = importlib.machinery.SourceFileLoader("sb_redis_cluster_tool", _TOOL)
    spec = importlib.util.spec_from_loader(loader.name, loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


tool = _load_tool()


def available():
    return shutil.which("redis-server") is not None and shutil.which("redis-cli") is not None


class RedisClusterFixture:
    def __init__(self, node_timeout_ms=1000):
        self.dir = tempfile.mkdtemp(prefix="sb-rc-")
        self.cluster = tool.Cluster(self.dir, ports=[], node_timeout_ms=node_timeout_ms)

    @property
    def ports(self):
        return self.cluster.ports

    @property
    def nodes(self):
        return ",".join("127.0.0.1:%d" % p for p in self.ports)

    def start(self):
        """Creates the cluster, or restarts its stopped nodes; returns when it is ok."""
        self.cluster.start()
        return self

    def kill(self, port):
        return self.cluster.kill(port)

    def stop_all(self):
        self.cluster.stop()

    def masters(self):
        return self.cluster.masters()

    def cluster_ok(self):
        return self.cluster.cluster_ok()

    def close(self):
        self.cluster.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()
