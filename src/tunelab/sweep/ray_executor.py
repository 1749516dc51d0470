"""`sweep.executor: ray`: every unfinished cell is a Ray task, on a cluster or on a Ray started here.

The cell contract does not change: a task runs the cell exactly as the local executor does
(`cell.run_cell_here`: the run directory appears only when complete, failures are recorded in
`<cell>.failed.json`, output goes to `logs/<cell>.log`), so resume, `--dry-run` and the report see
no difference. The sweep directory must therefore be one that every worker sees at the same path
(a shared filesystem on a real cluster).

- Each task asks for the cell's `resources` (CPUs, GPUs) and runs in a fresh worker process
  (`max_calls=1`): a cell's peak memory is its own, as with `isolation: process`.
- A task whose worker process or machine died is run again (`sweep.retries`); a task that finds its
  cell already finished (the worker died after finishing it) returns at once, so no cell ever
  trains to completion twice.
- Everything the sweep can check before a cell starts is checked first: Ray installed, the address
  reachable, every cell's resources available on some node — each an exit-2 error.
"""

from __future__ import annotations

import contextlib
import math
import socket
from pathlib import Path

from tunelab.errors import ConfigError

CONNECT_SECONDS = 5.0


def import_ray():
    try:
        import ray
    except ImportError:
        raise ConfigError("sweep.executor: ray needs Ray, which is not installed here; install it with "
                          "`pip install 'tunelab[ray]'` (or use the local executor: --executor local)") from None
    return ray


@contextlib.contextmanager
def ray_session(address: str | None, where: str):
    """Connect to the cluster at `address` (or start a local Ray); shut the connection down after."""
    ray = import_ray()
    if address not in (None, "auto"):
        check_reachable(address, where)
    try:
        if address is None:
            ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
        else:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"{where}: cannot connect to the Ray cluster at {address or 'a new local Ray'}: {reason}; "
                          f"start it (`ray start --head`) or fix sweep.ray_address") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def check_reachable(address: str, where: str) -> None:
    """A TCP connection to the head, with a short timeout: Ray itself retries for a minute or more."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"{where}: sweep.ray_address '{address}' is not HOST:PORT, ray://HOST:PORT or auto")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_SECONDS).close()
    except OSError as err:
        raise ConfigError(f"{where}: sweep.ray_address '{address}' cannot be reached ({err.strerror or err}); "
                          f"is the Ray head running there (`ray start --head --port {port}`)?") from None


def check_resources(ray, requests: dict[str, tuple[dict, str]]) -> None:
    """Refuse a request no alive node can satisfy: such a task would wait forever.

    `requests`: cell id → ({"CPU": n, "GPU": g}, where the request is set in the experiment file)."""
    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    for cell_id, (wanted, where) in requests.items():
        if not any(all(node.get(key, 0) >= amount for key, amount in wanted.items() if amount) for node in nodes):
            largest = ", ".join(f"{node.get('CPU', 0):g} CPU / {node.get('GPU', 0):g} GPU" for node in nodes) or "none"
            raise ConfigError(
                f"{where}: cell {cell_id} asks for {wanted.get('CPU', 0):g} CPU and {wanted.get('GPU', 0):g} GPU, "
                f"but no node of the Ray cluster has that much (nodes: {largest}); lower the request or add a node")


def run_cell_task(meta: dict, root: str, source: str, threads: int) -> bool:
    """What a Ray worker runs for one cell (a module-level function: Ray pickles it by reference)."""
    import torch

    from tunelab.sweep.cell import is_finished, run_cell_here

    torch.set_num_threads(threads)  # the cores the task asked for, not every core of the node
    if is_finished(Path(root), meta["id"]):
        return True  # a worker that died after finishing it: its retry must not train it again
    return run_cell_here(meta, Path(root), source)


def run_on_ray(ray, cells, root: Path, source: str, display, resources: dict, retries: int):
    """Submit every cell, then yield (cell, ok) as each finishes; Ctrl-C cancels what is left."""
    from tunelab.sweep.cell import record_failure

    task = ray.remote(max_calls=1)(run_cell_task)
    pending = {}
    todo = {cell.id for cell in cells}
    waiting = [cell for cell in cells if set(cell.after) & todo]  # a distill/ensemble cell waits for the cells it reads
    ended: set[str] = set()

    def submit(cell) -> None:
        want = resources[cell.id]
        ref = task.options(num_cpus=want["CPU"], num_gpus=want.get("GPU", 0), max_retries=retries).remote(
            cell.meta(), str(root), source, max(1, math.ceil(want["CPU"])))
        pending[ref] = cell
        display.start(cell.id)

    for cell in cells:
        if not set(cell.after) & todo:
            submit(cell)
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            cell = pending.pop(done[0])
            ended.add(cell.id)
            # ended either way: a failed teacher or member fails its reader clearly
            for follower in [c for c in waiting if set(c.after) & todo <= ended]:
                waiting.remove(follower)
                submit(follower)
            try:
                ok = ray.get(done[0])
            except ray.exceptions.RayError as err:  # the worker (or its node) died more times than `retries`
                reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                record_failure(root, cell.meta(), type(err).__name__, f"the Ray task failed {retries + 1} time(s): {reason}")
                ok = False
            yield cell, ok
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)
