"""Multi-host start-up from the environment: SLURM, Cloud TPU, JAX_* variables, and bad values.

``distributed.initialize`` decides from the environment whether this process is one of several
and hands over to ``jax.distributed.initialize``, which derives the coordinator, process count
and process id from the cluster's variables. Here ``jax.distributed.initialize`` is replaced by
a recorder that runs JAX's own cluster detection (what the real call does before it connects),
so each case shows both seqjax's decision and the values the processes would connect with.
"""

from __future__ import annotations

import os

import jax
import pytest
from jax._src import clusters  # The detection jax.distributed.initialize runs.
from jax._src.clusters import cloud_tpu_cluster

from seqjax.train import distributed

# `srun --ntasks=4` over four nodes, seen by the task of rank 2 (what SLURM exports to it).
SRUN_RANK_2_OF_4 = {"SLURM_JOB_ID": "81234", "SLURM_STEP_NODELIST": "gpu[017-020]",
                    "SLURM_NTASKS": "4", "SLURM_NNODES": "4", "SLURM_PROCID": "2",
                    "SLURM_LOCALID": "0"}
# Worker 3 of a four-host Cloud TPU slice under GKE (its pod's environment).
TPU_WORKER_3_OF_4 = {"TPU_WORKER_HOSTNAMES": "tpu-0,tpu-1,tpu-2,tpu-3", "TPU_WORKER_ID": "3",
                     "TPU_SKIP_MDS_QUERY": "true"}


@pytest.fixture
def connect(monkeypatch):
  """Clears the cluster variables; returns the list of (coordinator, count, id) handed to JAX."""
  for name in list(os.environ):
    if name.startswith(("SLURM_", "TPU_", "MEGASCALE_", "OMPI_", "SEQJAX_")) or name in (
        "JAX_COORDINATOR_ADDRESS", "JAX_COORDINATOR_PORT", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
      monkeypatch.delenv(name)
  calls = []

  def fake_initialize(coordinator_address=None, num_processes=None, process_id=None):
    # Fill what is unset from the cluster's environment, as the real call does, and refuse to go
    # on without all three (JAX's own words); record instead of connecting.
    derived = clusters.ClusterEnv.auto_detect_unset_distributed_params(
        coordinator_address, num_processes, process_id, None, None, 1)[:3]
    if derived[0] is None:
      raise ValueError("coordinator_address should be defined.")
    calls.append(derived)

  monkeypatch.setattr(jax.distributed, "initialize", fake_initialize)
  # The gloo switch is a process-wide jax setting: keep it out of the test process.
  monkeypatch.setattr(distributed, "_use_cpu_collectives", lambda: None)
  return calls


@pytest.fixture
def tpu_vm(monkeypatch):
  """This process on a Cloud TPU VM of a single-slice pod, as JAX's TPU detection sees it."""
  monkeypatch.setattr(cloud_tpu_cluster, "running_in_cloud_tpu_vm", True)
  # The coordinator's host name is resolved (with retries) before connecting; not here.
  monkeypatch.setattr(cloud_tpu_cluster.BaseTpuCluster, "wait_for_coordinator",
                      classmethod(lambda cls, address, timeout: None))
  metadata = {"tpu-env": "ACCELERATOR_TYPE: 'v4-16'\n",  # No multislice keys: one slice.
              "agent-worker-number": "1", "worker-network-endpoints": "w-0,w-1"}
  monkeypatch.setattr(cloud_tpu_cluster, "get_metadata", lambda key: (metadata[key], 200))


def test_srun_tasks_connect_to_the_first_node_as_their_rank(connect, monkeypatch):
  # Given the environment srun gives rank 2 of 4 tasks,
  for name, value in SRUN_RANK_2_OF_4.items():
    monkeypatch.setenv(name, value)
  # When the entry point initialises, then it connects through JAX as process 2 of 4, to the
  # job's first node on the port JAX derives from the job id (81234 % 4096 + 61440).
  distributed.initialize()
  assert connect == [("gpu017:64850", 4, 2)]


def test_several_tasks_on_one_node_count_tasks_not_nodes(connect, monkeypatch):
  # Four tasks on one node (one per GPU) are four processes: SLURM_NTASKS, not SLURM_NNODES.
  for name, value in {**SRUN_RANK_2_OF_4, "SLURM_NNODES": "1",
                      "SLURM_STEP_NODELIST": "gpu017"}.items():
    monkeypatch.setenv(name, value)
  distributed.initialize()
  assert connect == [("gpu017:64850", 4, 2)]


@pytest.mark.parametrize("overrides", [
    {"SLURM_NTASKS": "1", "SLURM_NNODES": "2"},  # One task of a two-node allocation (salloc).
    {"SLURM_PROCID": None},                      # Not a task of srun (e.g. the batch script).
], ids=["one_task", "no_procid"])
def test_a_single_slurm_process_initialises_nothing(connect, monkeypatch, overrides):
  for name, value in {**SRUN_RANK_2_OF_4, **overrides}.items():
    if value is not None:
      monkeypatch.setenv(name, value)
  distributed.initialize()
  assert connect == []


@pytest.mark.usefixtures("tpu_vm")
def test_tpu_workers_connect_to_worker_0(connect, monkeypatch):
  # Given worker 3 of four TPU hosts, when it initialises, then it is process 3 of 4 with the
  # first worker as coordinator (on JAX's fixed TPU port 8482).
  for name, value in TPU_WORKER_3_OF_4.items():
    monkeypatch.setenv(name, value)
  distributed.initialize()
  assert connect == [("tpu-0:8482", 4, 3)]


@pytest.mark.usefixtures("tpu_vm")
def test_one_tpu_host_initialises_nothing(connect, monkeypatch):
  # A single-host TPU VM (a trailing comma is not a second worker) runs alone.
  monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "tpu-0,")
  monkeypatch.setenv("TPU_WORKER_ID", "0")
  distributed.initialize()
  assert connect == []


@pytest.mark.usefixtures("tpu_vm")
def test_tpu_pod_script_hands_over_to_jax(connect, monkeypatch):
  # Given worker 1 of a two-host TPU VM slice, whose topology is only in the metadata server,
  # a plain start runs alone; launch/tpu_pod.sh's SEQJAX_DISTRIBUTED=auto makes it ask JAX,
  # which finds process 1 of 2 with the first worker as coordinator.
  distributed.initialize()
  assert connect == []
  monkeypatch.setenv("SEQJAX_DISTRIBUTED", "auto")
  distributed.initialize()
  assert connect == [("w-0:8482", 2, 1)]


def test_explicit_settings_win_over_the_cluster(connect, monkeypatch):
  # Flags first, then JAX_* variables, both before SLURM's.
  for name, value in SRUN_RANK_2_OF_4.items():
    monkeypatch.setenv(name, value)
  monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "head:1234")
  monkeypatch.setenv("JAX_NUM_PROCESSES", "2")
  monkeypatch.setenv("JAX_PROCESS_ID", "1")
  distributed.initialize()
  distributed.initialize(process_id=0)
  assert connect == [("head:1234", 2, 1), ("head:1234", 2, 0)]
  # One process, however it is said, connects nothing.
  distributed.initialize("head:1234", 1, 0)
  assert len(connect) == 2


@pytest.mark.parametrize("environment, message", [
    ({"JAX_COORDINATOR_ADDRESS": "head:1234", "JAX_NUM_PROCESSES": "2"},
     "multi-host needs all of --coordinator_address, --num_processes and --process_id; got "
     "'head:1234', 2, None"),
    ({"JAX_COORDINATOR_ADDRESS": "head:1234", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "2"},
     "--process_id must be in [0, 2), got 2"),
    ({"JAX_COORDINATOR_ADDRESS": "head:1234", "JAX_NUM_PROCESSES": "two", "JAX_PROCESS_ID": "0"},
     "environment variable JAX_NUM_PROCESSES must be an integer, got 'two'"),
    ({**SRUN_RANK_2_OF_4, "SLURM_NTASKS": "4(x2)"},
     "environment variable SLURM_NTASKS must be an integer, got '4(x2)'"),
    # srun's rank without the job's node list: nothing says where the coordinator is.
    ({"SLURM_NTASKS": "4", "SLURM_PROCID": "2"},
     "SLURM started 4 tasks (SLURM_NTASKS), but jax.distributed could not derive the "
     "coordinator, process count and process id (coordinator_address should be defined.); pass "
     "--coordinator_address, --num_processes and --process_id"),
], ids=["partial", "id_out_of_range", "not_a_number", "slurm_not_a_number", "slurm_incomplete"])
def test_bad_or_missing_values_give_one_line_errors(connect, monkeypatch, environment, message):
  for name, value in environment.items():
    monkeypatch.setenv(name, value)
  with pytest.raises(ValueError) as error:
    distributed.initialize()
  # The entry point prints str(error) after "error: ", so it must be this one line.
  assert str(error.value) == message
  assert connect == []
