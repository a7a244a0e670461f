"""How a run was launched: one process, JAX_COORDINATOR_ADDRESS, or a SLURM step; the
`jax.distributed.initialize` arguments that follow, and the start-up line saying what was found.

`launch_spec(env)` is a pure function of the environment, so every launcher is testable with a
dict. Why not jax's own SLURM auto-detection alone: it restricts every task to the one GPU
SLURM_LOCALID even when the task is alone on its node (`srun -N 2`: an 8-GPU node trains on one
GPU), and under `sbatch --ntasks=2` without srun it has no step node list and fails with
"coordinator_address should be defined".
"""

import dataclasses
import os
import re

from absl import logging
import jax

# jax's SLURM rule for the coordinator port (jax/_src/clusters/slurm_cluster.py), so that jobs
# mixing this launcher and jax's auto-detection meet on the same port.
_PORT_BASE, _PORT_RANGE = 65535 - 2 ** 12 + 1, 2 ** 12


@dataclasses.dataclass(frozen=True)
class LaunchSpec:
  """kwargs: jax.distributed.initialize arguments, None for a single process; how: in words."""
  kwargs: dict | None
  how: str


def _int(env, name):
  try:
    return int(env[name])
  except ValueError:
    raise ValueError(f"Environment variable {name}={env[name]!r} is not an integer") from None


def first_host(node_list):
  """The first host name of a SLURM node list: 'gpu[003-010,12],cpu1' -> 'gpu003'."""
  match = re.match(r"([^,\[]*)(?:\[([^,\-\]]*))?", node_list)
  return match.group(1) + (match.group(2) or "")


def _expand_counts(counts):
  """SLURM's tasks-per-node notation '2(x3),1' -> [2, 2, 2, 1]."""
  out = []
  for part in counts.split(","):
    match = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", part.strip())
    if not match:
      return []
    out += [int(match.group(1))] * int(match.group(2) or 1)
  return out


def _tasks_on_this_node(env):
  counts = _expand_counts(env.get("SLURM_STEP_TASKS_PER_NODE", env.get("SLURM_TASKS_PER_NODE", "")))
  node = int(env.get("SLURM_NODEID", "0") or 0)
  if node < len(counts):
    return counts[node]
  return max(counts) if counts else 1


def _slurm_local_devices(env):
  """None (every device the task sees) or the device ordinals of this task on its node.

  Alone on its node, a task uses all of the node's GPUs. Several tasks on a node share the GPUs
  the node's CUDA_VISIBLE_DEVICES lists, in equal consecutive slices by SLURM_LOCALID (one task
  per GPU: GPU SLURM_LOCALID); where SLURM already bound each task to fewer GPUs than there are
  tasks (--gpus-per-task, --gpu-bind), the task uses what it sees.
  """
  tasks = _tasks_on_this_node(env)
  if tasks <= 1:
    return None
  local_id = _int(env, "SLURM_LOCALID")
  visible = [d for d in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
  if not visible:
    return [local_id]
  if len(visible) < tasks:
    return None
  per_task = len(visible) // tasks
  return list(range(local_id * per_task, (local_id + 1) * per_task))


def _slurm_step(env):
  """(num_processes, process_id, coordinator) of an srun step, or None outside one."""
  if not all(name in env for name in ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_PROCID")):
    return None
  ntasks = _int(env, "SLURM_STEP_NUM_TASKS" if "SLURM_STEP_NUM_TASKS" in env else "SLURM_NTASKS")
  port = env.get("JAX_COORDINATOR_PORT") or _PORT_BASE + _int(env, "SLURM_JOB_ID") % _PORT_RANGE
  return ntasks, _int(env, "SLURM_PROCID"), f"{first_host(env['SLURM_STEP_NODELIST'])}:{port}"


def _explicit_local_devices(env):
  ids = env.get("JAX_LOCAL_DEVICE_IDS", "").strip()
  return [int(i) for i in ids.split(",")] if ids else None


def launch_spec(env, distributed=None):
  """How to start JAX in a process with environment `env` (a mapping of strings).

  distributed: None detects; False forces a single process; True forces
  jax.distributed.initialize (with jax's own auto-detection where nothing here is recognised).
  """
  if distributed is False:
    return LaunchSpec(None, "single process (--nodistributed)")
  step = _slurm_step(env)
  if env.get("JAX_COORDINATOR_ADDRESS"):
    missing = [n for n in ("JAX_NUM_PROCESSES", "JAX_PROCESS_ID") if n not in env]
    if missing and not step:
      raise ValueError(f"JAX_COORDINATOR_ADDRESS is set but {' and '.join(missing)} not: set "
                       "JAX_NUM_PROCESSES and JAX_PROCESS_ID on every process")
    if missing:
      num, pid = step[:2]
    else:
      num, pid = _int(env, "JAX_NUM_PROCESSES"), _int(env, "JAX_PROCESS_ID")
    local = _explicit_local_devices(env) or (_slurm_local_devices(env) if step else None)
    kwargs = dict(coordinator_address=env["JAX_COORDINATOR_ADDRESS"], num_processes=num,
                  process_id=pid, local_device_ids=local, cluster_detection_method="deactivate")
    return LaunchSpec(kwargs, f"JAX_COORDINATOR_ADDRESS={env['JAX_COORDINATOR_ADDRESS']}")
  if step and (step[0] > 1 or distributed):
    num, pid, coordinator = step
    local = _explicit_local_devices(env) or _slurm_local_devices(env)
    kwargs = dict(coordinator_address=coordinator, num_processes=num, process_id=pid,
                  local_device_ids=local, cluster_detection_method="deactivate")
    devices = "all local devices" if local is None else f"local devices {local}"
    return LaunchSpec(kwargs, f"SLURM step of {num} tasks, {_tasks_on_this_node(env)} on this "
                              f"node, {devices}, coordinator {coordinator}")
  if distributed:
    return LaunchSpec({}, "jax.distributed auto-detection (--distributed)")
  if "SLURM_JOB_ID" in env and int(env.get("SLURM_NTASKS", "1") or 1) > 1 and not step:
    return LaunchSpec(None, f"single process: SLURM allocation of {env['SLURM_NTASKS']} tasks, "
                            "but not started by srun (`srun python launch.py ...` uses them all)")
  return LaunchSpec(None, "single process")


def initialize(distributed=None, env=None):
  """Calls jax.distributed.initialize where the launch asks for it; returns the LaunchSpec."""
  spec = launch_spec(os.environ if env is None else env, distributed)
  if spec.kwargs is not None:
    jax.distributed.initialize(**spec.kwargs)
  return spec


def log_startup(spec):
  """One line: process i of n, how it was launched, local and global devices."""
  local = jax.local_devices()
  logging.info("JAX process %d of %d (%s): %d local %s device(s) %s, %d in all",
               jax.process_index(), jax.process_count(), spec.how, len(local),
               jax.default_backend().upper(), local, jax.device_count())
