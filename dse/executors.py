"""Where DSE trials run: a process pool on this machine (default) or Ray.

Both take jobs (`evaluate.evaluate`'s dicts) with `submit(key, job)` and hand back
`(key, result)` from `next_done()` as trials finish, in any order. Neither is a job
system: the local one is `concurrent.futures.ProcessPoolExecutor` (spawned workers, so
no MLIR or torch state is forked), the distributed one is Ray tasks (`ray.remote`,
`ray.wait`); Ray reuses its worker processes, so each keeps its captured designs.

`RayExecutor(address)`: None or "local" starts Ray here (`ray.init(num_cpus=...)`); any
other address (`HOST:PORT` of a head node, `ray://HOST:PORT` of a Ray client server,
`auto`) joins that cluster. An address that cannot be reached fails within seconds with
a RayUnreachable naming it and saying to drop `--ray`.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import socket

from ..errors import MambaflowError
from .evaluate import evaluate

CONNECT_TIMEOUT_S = 3.0


class RayUnreachable(MambaflowError):
    """The Ray cluster address given to --ray does not answer."""


def _died(e: BaseException) -> dict:
    return {"ok": False, "log": None, "error": f"the worker died ({type(e).__name__}: {e}); the trial is recorded "
                                              "as failed and the search goes on"}


class LocalExecutor:
    """A process pool of `workers` spawned processes."""

    name = "local"

    def __init__(self, workers: int):
        self.workers = workers
        self._pool = None
        self._futures: dict[cf.Future, object] = {}

    def _executor(self) -> cf.ProcessPoolExecutor:
        if self._pool is None:
            self._pool = cf.ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))
        return self._pool

    def submit(self, key, job: dict) -> None:
        self._futures[self._executor().submit(evaluate, job)] = key

    def next_done(self):
        done, _ = cf.wait(list(self._futures), return_when=cf.FIRST_COMPLETED)
        f = next(iter(done))
        key = self._futures.pop(f)
        try:
            return key, f.result()
        except cf.process.BrokenProcessPool as e:  # a worker crashed: a fresh pool for the rest
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
            return key, _died(e)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


def _host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of a Ray address to probe; None when it names no socket (auto)."""
    a = address.strip()
    if a == "auto":
        return None
    a = a.split("://", 1)[1] if "://" in a else a
    host, sep, port = a.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise RayUnreachable(f"--ray {address}: not a Ray address; give HOST:PORT (a head node, e.g. "
                             "10.0.0.5:6379), ray://HOST:PORT (a Ray client server) or auto; or drop --ray "
                             "to run on a local process pool")
    return host.strip("[]"), int(port)


def _unreachable(address: str, why: str) -> RayUnreachable:
    return RayUnreachable(f"cannot reach the Ray cluster at {address} ({why}): start it (ray start --head) or fix "
                          "the address, or drop --ray to run the trials on a local process pool")


class RayExecutor:
    """Ray tasks on a local Ray (address None / 'local') or on a cluster."""

    name = "ray"

    def __init__(self, address: str | None, workers: int):
        import ray

        self.ray = ray
        self.address = None if address in (None, "local") else address
        self._started = False
        if self.address is not None:
            hp = _host_port(self.address)
            if hp is not None:
                try:
                    socket.create_connection(hp, timeout=CONNECT_TIMEOUT_S).close()
                except OSError as e:
                    raise _unreachable(self.address, e.strerror or type(e).__name__) from None
        if not ray.is_initialized():
            try:
                if self.address is None:
                    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
                else:
                    ray.init(address=self.address, log_to_driver=False)
            except Exception as e:  # noqa: BLE001 - Ray's own connection errors, as one line
                raise _unreachable(self.address or "a local Ray", f"{type(e).__name__}: "
                                   f"{(str(e).strip().splitlines() or [''])[0]}") from None
            self._started = True
        self.workers = workers
        self._task = ray.remote(num_cpus=1)(evaluate)
        self._refs: dict = {}

    def submit(self, key, job: dict) -> None:
        self._refs[self._task.remote(job)] = key

    def next_done(self):
        (ref,), _ = self.ray.wait(list(self._refs), num_returns=1)
        key = self._refs.pop(ref)
        try:
            return key, self.ray.get(ref)
        except self.ray.exceptions.RayError as e:  # the worker or the node died
            return key, _died(e)

    def close(self) -> None:
        for ref in self._refs:
            self.ray.cancel(ref, force=True)
        self._refs.clear()
        if self._started:
            self.ray.shutdown()
