"""Scale-out on Ray (``engine = "ray"`` in the run config): teacher labeling and n-gram counting.

The same two steps as ``training.stages.labeling`` and ``training.stages.vocab``, with the same config and the same
output files, run on a Ray cluster instead of one process:

- ``labeling``: teacher actors (one GPU each when the cluster has GPUs, else ``ray.cpus_per_worker``
  CPUs and as many onnxruntime threads) label corpus shards; the driver alone writes the shard files,
  so a shard is written once whatever happens to the workers, and a dead worker's shards go back in
  the queue for another worker.
- ``counting``: map tasks count the n-grams of corpus chunks, reducer actors (one per node) spill and
  reduce their share of the keys on their node's disk, the driver merges the reducers' top-K.
- ``session``: connecting to the cluster (address from the config, else ``RAY_ADDRESS``) and shipping
  this checkout's ``training`` and ``service`` packages to the workers.
- ``local_cluster``: a throwaway multi-node cluster on this machine, on loopback, for tests and
  benchmarks.

Nothing here imports Ray at import time: Ray is an optional dependency (``pip install -e ".[ray]"``).
"""
