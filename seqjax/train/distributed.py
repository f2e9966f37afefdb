"""Processes and devices: multi-host start-up through ``jax.distributed``, device selection.

A multi-host run is the same program on every host. :func:`initialize` connects the processes
before JAX touches a device, taking the coordinator address, process count and process id from,
in order: explicit arguments (the ``--coordinator_address``, ``--num_processes`` and
``--process_id`` flags), the environment variables ``JAX_COORDINATOR_ADDRESS``,
``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``, or JAX's own cluster auto-detection, used when SLURM
started several tasks (``srun``), when ``TPU_WORKER_HOSTNAMES`` lists several TPU workers, or when
``SEQJAX_DISTRIBUTED=auto`` asks for it (``launch/tpu_pod.sh`` sets it). A plain single-process
run initialises nothing.
"""

from __future__ import annotations

import os

import jax
from absl import logging


def _env_int(name: str, default: str | None = None) -> int | None:
  """The integer environment variable ``name``; a ValueError naming it if it is not one."""
  value = os.environ.get(name, default)
  if value is None:
    return None
  try:
    return int(value)
  except ValueError:
    raise ValueError(f"environment variable {name} must be an integer, got {value!r}") from None


def _cluster_manager() -> str | None:
  """What says a cluster manager launched this process (for messages), or None."""
  if os.environ.get("SEQJAX_DISTRIBUTED", "") == "auto":
    return "SEQJAX_DISTRIBUTED=auto"
  if _env_int("SLURM_NTASKS", "1") > 1 and "SLURM_PROCID" in os.environ:
    return f"SLURM started {os.environ['SLURM_NTASKS']} tasks (SLURM_NTASKS)"
  hosts = [h for h in os.environ.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]
  if len(hosts) > 1:
    return f"TPU_WORKER_HOSTNAMES lists {len(hosts)} TPU workers"
  return None


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> None:
  """Connects this process to the others of a multi-host run (no-op for one process).

  Must run before any JAX computation. Raises ValueError when only some settings are given.
  """
  coordinator_address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS") or None
  if num_processes is None and os.environ.get("JAX_NUM_PROCESSES"):
    num_processes = _env_int("JAX_NUM_PROCESSES")
  if process_id is None and os.environ.get("JAX_PROCESS_ID"):
    process_id = _env_int("JAX_PROCESS_ID")
  explicit = (coordinator_address, num_processes, process_id)
  if any(v is not None for v in explicit):
    if any(v is None for v in explicit):
      raise ValueError("multi-host needs all of --coordinator_address, --num_processes and "
                       f"--process_id; got {coordinator_address!r}, {num_processes!r}, "
                       f"{process_id!r}")
    if not 0 <= process_id < num_processes:
      raise ValueError(f"--process_id must be in [0, {num_processes}), got {process_id}")
    if num_processes == 1:
      return
    _use_cpu_collectives()
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id)
  elif (manager := _cluster_manager()) is not None:
    _use_cpu_collectives()
    try:
      jax.distributed.initialize()  # JAX reads SLURM / TPU metadata itself.
    except ValueError as e:  # JAX found too little in the environment; say what sent us there.
      raise ValueError(f"{manager}, but jax.distributed could not derive the coordinator, process "
                       f"count and process id ({e}); pass --coordinator_address, "
                       "--num_processes and --process_id") from None
  else:
    return
  logging.info("process %d of %d connected", jax.process_index(), jax.process_count())


def _use_cpu_collectives() -> None:
  # Cross-process collectives on CPU need gloo. It is the default in jax 0.10; naming it keeps
  # older jax versions (default "none": collectives fail) working. GPUs and TPUs ignore this.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")


def is_primary() -> bool:
  """True on process 0, the one that writes logs and results."""
  return jax.process_index() == 0


def barrier(name: str) -> None:
  """Waits until every process reaches the barrier ``name`` (no-op for one process)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    multihost_utils.sync_global_devices(name)


def select_devices(num_devices: int = 0) -> tuple[list[jax.Device], list[jax.Device]]:
  """The devices a run uses: the first ``num_devices`` local devices of every process.

  Returns:
    ``(local, global)``: this process's devices, and every process's (what ``jax.pmap`` needs
    as ``devices=`` so that its collectives span all hosts).
  Raises:
    ValueError when a process has fewer than ``num_devices`` local devices.
  """
  local = jax.local_devices()
  if num_devices > len(local):
    raise ValueError(f"config.num_devices={num_devices} but this process has only {len(local)} "
                     f"local devices ({local[0].platform}); on CPU set "
                     "XLA_FLAGS=--xla_force_host_platform_device_count=N to simulate more")
  n = num_devices or len(local)
  by_process: dict[int, list[jax.Device]] = {}
  for device in jax.devices():
    by_process.setdefault(device.process_index, []).append(device)
  chosen = [d for p in sorted(by_process) for d in by_process[p][:n]]
  return local[:n], chosen


def describe() -> str:
  """One line naming the process and its devices, for the start of a run's log."""
  local = jax.local_devices()
  return (f"process {jax.process_index()}/{jax.process_count()}, {len(local)} local "
          f"{local[0].platform} devices of {jax.device_count()} global")
