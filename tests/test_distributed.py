"""Launch detection from environment variables: one process, JAX_COORDINATOR_ADDRESS, SLURM."""

import pytest

from r2n2_jax import distributed

# What srun sets for task 1 of `srun -N 2 --ntasks-per-node=1` (one task per node).
SRUN_ONE_TASK_PER_NODE = {
    "SLURM_JOB_ID": "4242", "SLURM_NTASKS": "2", "SLURM_STEP_NUM_TASKS": "2",
    "SLURM_STEP_NODELIST": "gpu[007-008]", "SLURM_STEP_TASKS_PER_NODE": "1(x2)",
    "SLURM_PROCID": "1", "SLURM_LOCALID": "0", "SLURM_NODEID": "1",
    "CUDA_VISIBLE_DEVICES": "0,1,2,3,4,5,6,7",
}


def test_plain_process_and_forced_single_process():
  assert distributed.launch_spec({}).kwargs is None
  forced = distributed.launch_spec({"JAX_COORDINATOR_ADDRESS": "h:1"}, distributed=False)
  assert forced.kwargs is None
  # --distributed with nothing recognised leaves detection to jax (Kubernetes, MPI, ...).
  assert distributed.launch_spec({}, distributed=True).kwargs == {}


def test_coordinator_variables():
  spec = distributed.launch_spec({"JAX_COORDINATOR_ADDRESS": "127.0.0.1:1234",
                                  "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1"})
  assert spec.kwargs == dict(coordinator_address="127.0.0.1:1234", num_processes=2, process_id=1,
                             local_device_ids=None, cluster_detection_method="deactivate")
  with pytest.raises(ValueError, match="JAX_PROCESS_ID"):
    distributed.launch_spec({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2"})
  with pytest.raises(ValueError, match="JAX_NUM_PROCESSES='two'"):
    distributed.launch_spec({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "two",
                             "JAX_PROCESS_ID": "0"})


def test_srun_one_task_per_node_uses_every_gpu_of_the_node():
  spec = distributed.launch_spec(SRUN_ONE_TASK_PER_NODE)
  # Not jax's default [SLURM_LOCALID] = [0], which would leave 7 of 8 GPUs idle.
  assert spec.kwargs == dict(coordinator_address="gpu007:61586", num_processes=2, process_id=1,
                             local_device_ids=None, cluster_detection_method="deactivate")
  assert "all local devices" in spec.how


def test_srun_one_task_per_gpu():
  env = dict(SRUN_ONE_TASK_PER_NODE, SLURM_NTASKS="16", SLURM_STEP_NUM_TASKS="16",
             SLURM_STEP_TASKS_PER_NODE="8(x2)", SLURM_PROCID="11", SLURM_LOCALID="3")
  assert distributed.launch_spec(env).kwargs["local_device_ids"] == [3]
  # Two tasks per node share the node's 8 GPUs in halves.
  env.update(SLURM_STEP_TASKS_PER_NODE="2(x2)", SLURM_LOCALID="1")
  assert distributed.launch_spec(env).kwargs["local_device_ids"] == [4, 5, 6, 7]
  # SLURM bound each task to its own GPU (--gpus-per-task=1): the task uses what it sees.
  env.update(SLURM_STEP_TASKS_PER_NODE="8(x2)", CUDA_VISIBLE_DEVICES="3")
  assert distributed.launch_spec(env).kwargs["local_device_ids"] is None
  # JAX_LOCAL_DEVICE_IDS wins.
  assert distributed.launch_spec(dict(env, JAX_LOCAL_DEVICE_IDS="0,1")).kwargs[
      "local_device_ids"] == [0, 1]


def test_sbatch_without_srun_is_one_process():
  """The batch script of `sbatch --ntasks=2` has SLURM_NTASKS=2 but no step: not distributed."""
  env = {"SLURM_JOB_ID": "4242", "SLURM_NTASKS": "2", "SLURM_PROCID": "0", "SLURM_LOCALID": "0",
         "SLURM_JOB_NODELIST": "gpu[007-008]", "SLURM_NODELIST": "gpu[007-008]"}
  spec = distributed.launch_spec(env)
  assert spec.kwargs is None and "srun" in spec.how
  # A one-task srun step is one process too.
  one = dict(SRUN_ONE_TASK_PER_NODE, SLURM_NTASKS="1", SLURM_STEP_NUM_TASKS="1", SLURM_PROCID="0")
  assert distributed.launch_spec(one).kwargs is None


def test_first_host_of_a_node_list():
  for node_list, host in [("node001", "node001"), ("node001,host2", "node001"),
                          ("node[001-015],host2", "node001"), ("gpu[007,009-012]", "gpu007"),
                          ("a-b[3]", "a-b3")]:
    assert distributed.first_host(node_list) == host
