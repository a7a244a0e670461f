"""Training: pure train/eval steps, pmap over local devices, and the loop (validation, checkpoints,
progress lines, preemption).

The loop never waits for the device between steps: batches are put on the devices two steps
ahead, metrics stay there until a log or progress line or a checkpoint needs them, and the host
runs at most two steps ahead of the device (so queued batches cannot pile up in device memory).
"""

import functools
import os
import signal
import time

from absl import logging
import flax
import jax
from jax.experimental import multihost_utils
import numpy as np

from r2n2_jax import checkpoints
from r2n2_jax import input_pipeline
from r2n2_jax import metrics
from r2n2_jax import preemption
from r2n2_jax import train_state

AXIS = "batch"  # The pmap axis; replicated state and prefetched batches use it as their mesh axis.
PROGRESS_EVERY_SECS = 30.0  # A progress line at least this often, whatever log_every_steps is.
GPU_SIZED_BATCH = 36  # The paper's batch: on a CPU a step of it takes minutes.


class NonFiniteLossError(FloatingPointError):
  """The training loss (or the parameters about to be saved) became NaN or infinite."""


def _forward(params, apply_fn, batch):
  views = input_pipeline.model_input(batch)
  return apply_fn({"params": params}, views, batch["view_mask"])


def train_step(state, batch, axis_name=None):
  """One Adam step on the mean voxel cross-entropy; grads averaged over `axis_name` if given.

  Metrics: loss and IoU@0.4 (means over the batch) and the number of real views it held.
  """

  def loss_fn(params):
    logits = _forward(params, state.apply_fn, batch)
    return metrics.voxel_cross_entropy(logits, batch["voxels"]).mean(), logits

  (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  iou = metrics.iou_per_object(metrics.occupancy_probability(logits), batch["voxels"],
                               metrics.IOU_THRESHOLD).mean()
  step_metrics = {"loss": loss, "iou": iou}
  views = batch["view_mask"].sum(dtype=np.float32)
  if axis_name is not None:
    grads = jax.lax.pmean(grads, axis_name)
    step_metrics = jax.lax.pmean(step_metrics, axis_name)
    views = jax.lax.psum(views, axis_name)
  return state.apply_gradients(grads=grads), dict(step_metrics, views=views)


def eval_step(state, batch, axis_name=None):
  """Sums of loss and IoU@0.4 over the valid examples of a batch, and their count."""
  logits = _forward(state.params, state.apply_fn, batch)
  valid = batch["valid"].astype(np.float32)
  loss = metrics.voxel_cross_entropy(logits, batch["voxels"])
  probs = metrics.occupancy_probability(logits)
  iou = metrics.iou_per_object(probs, batch["voxels"], metrics.IOU_THRESHOLD)
  sums = {"loss": (loss * valid).sum(), "iou": (iou * valid).sum(), "count": valid.sum()}
  if axis_name is not None:
    sums = jax.lax.psum(sums, axis_name)
  return sums, probs


def reconstruction_image(views, probs, voxels):
  """A (H, W, 3) uint8 panel: first input view | prediction and ground truth max-projections."""
  def projections(grid):
    # Occupancy seen along x, y (from above) and z; each (32, 32), upscaled 4x.
    tiles = [grid.max(axis=a) for a in range(3)]
    return np.concatenate([np.kron(t, np.ones((4, 4))) for t in tiles], axis=1)

  panel = np.concatenate([projections(probs), projections(voxels.astype(np.float32))], axis=0)
  panel = np.repeat((panel * 255).astype(np.uint8)[..., None], 3, axis=-1)
  view = np.zeros((panel.shape[0], views.shape[1], 3), np.uint8)
  view[:views.shape[0]] = views[:panel.shape[0]]
  return np.concatenate([view, panel], axis=1)


class MetricsWriter:
  """TensorBoard scalars/images in the workdir (process 0 only) and a log line per write."""

  def __init__(self, workdir):
    self.writer = None
    if jax.process_index() == 0:
      from tensorboardX import SummaryWriter  # No TensorFlow needed.
      self.writer = SummaryWriter(workdir)

  def scalars(self, step, values):
    logging.info("step %d: %s", step, ", ".join(f"{k}={v:.5g}" for k, v in values.items()))
    if self.writer:
      for k, v in values.items():
        self.writer.add_scalar(k, float(v), step)

  def image(self, step, name, image):
    if self.writer:
      self.writer.add_image(name, image, step, dataformats="HWC")

  def close(self):
    if self.writer:
      self.writer.close()


def _duration(seconds):
  minutes, s = divmod(int(round(seconds)), 60)
  hours, m = divmod(minutes, 60)
  days, h = divmod(hours, 24)
  return (f"{days}d " if days else "") + f"{h}:{m:02d}:{s:02d}"


class TrainingMonitor:
  """Per-step metrics kept on the device and fetched only for a log line, a progress line or a
  checkpoint; every fetch checks that each step's loss was finite."""

  def __init__(self, config, start_step, writer):
    self.num_steps, self.log_every = config.num_train_steps, config.log_every_steps
    self.schedule = train_state.learning_rate_schedule(config)
    self.writer, self.start_step = writer, start_step
    self.pending = []  # (step, device metrics) not fetched yet.
    self.checked_step = start_step  # Every step up to this one had a finite loss.
    self.sums, self.views_since_progress = {}, 0.0  # Fetched values since the last log line.
    self.log_time = self.progress_time = time.time()
    self.log_step = self.progress_step = start_step

  def add(self, step, step_metrics):
    self.pending.append((step, step_metrics))
    if len(self.pending) >= 3:  # At most two steps queued on the device.
      jax.block_until_ready(self.pending[-3][1]["loss"])

  def fetch(self):
    """Brings the pending metrics to the host; NonFiniteLossError names the first bad step."""
    if not self.pending:
      return
    steps = [s for s, _ in self.pending]
    values = _first_local([m for _, m in self.pending])
    self.pending = []
    for step, value in zip(steps, values):
      value = {k: float(v) for k, v in value.items()}
      if not np.isfinite(value["loss"]):
        raise NonFiniteLossError(
            f"Non-finite training loss {value['loss']} at step {step} (checked steps "
            f"{self.checked_step + 1}-{steps[-1]}); stopping without saving a checkpoint of it.")
      for k, v in value.items():
        self.sums[k] = self.sums.get(k, 0.0) + v
      self.views_since_progress += value["views"]
    self.checked_step = steps[-1]

  def step_done(self, step):
    """A log line at log steps (its values returned), a progress line at the first step and
    every ~30 s."""
    results = {}
    if step % self.log_every == 0 or step == self.num_steps:
      results = self._log(step)
    if step == self.start_step + 1 or time.time() - self.progress_time >= PROGRESS_EVERY_SECS:
      self._progress(step)
    return results

  def _log(self, step):
    self.fetch()
    now, count = time.time(), step - self.log_step
    results = {"train/loss": self.sums["loss"] / count, "train/iou_0.4": self.sums["iou"] / count,
               "train/learning_rate": float(self.schedule(step - 1)),
               "train/steps_per_sec": count / (now - self.log_time),
               "train/views_per_sec": self.sums["views"] / (now - self.log_time)}
    self.writer.scalars(step, results)
    self.sums, self.log_time, self.log_step = {}, now, step
    return results

  def _progress(self, step):
    self.fetch()  # Waits for the step: the times below are of finished steps.
    now = time.time()
    seconds = (now - self.progress_time) / (step - self.progress_step)
    views = self.views_since_progress / (now - self.progress_time)
    if step == self.start_step + 1:
      timing = f"first step {now - self.progress_time:.1f} s (compilation included)"
    else:
      timing = (f"{seconds:.3g} s/step, {views:.3g} views/s, "
                f"ETA {_duration(seconds * (self.num_steps - step))}")
    logging.info("progress: step %d/%d, %s", step, self.num_steps, timing)
    self.progress_time, self.progress_step, self.views_since_progress = now, step, 0.0


def _shard(batch):
  """Host batch (B, ...) -> (local_devices, B / local_devices, ...)."""
  n = jax.local_device_count()
  return jax.tree.map(lambda x: x.reshape((n, -1) + x.shape[1:]), batch)


def _first_local(tree):
  """Element 0 of the leading (device) axis of pmap outputs, i.e. this process's first device's
  copy, fetched to the host without computation (other processes' devices are not addressable)."""
  return jax.tree.map(lambda x: x[0], jax.device_get(
      jax.tree.map(lambda x: x.addressable_data(0), tree)))


def validate(config, p_eval_step, p_state, data_dir, writer, step):
  """Validation loss and IoU@0.4 over config.num_eval_batches global batches; logs them and an
  image.

  Every process runs the same number of (padded) batches, so the collectives stay in step.
  """
  all_sums, image = [], None
  for batch in input_pipeline.create_eval_iterator(
      config, data_dir, config.eval_split, config.eval_views, config.num_eval_batches,
      jax.process_index(), jax.process_count()):
    sums, probs = p_eval_step(p_state, _shard(batch))
    all_sums.append(sums)
    if image is None and batch["valid"][0]:
      image = reconstruction_image(batch["views"][0, 0], _first_local(probs)[0], batch["voxels"][0])
  all_sums = _first_local(all_sums)
  totals = {k: sum(np.float64(s[k]) for s in all_sums) for k in ("loss", "iou", "count")}
  if not all_sums or totals["count"] == 0:
    raise ValueError(f"Split {config.eval_split!r} of {data_dir} has no examples to evaluate")
  results = {"eval/loss": totals["loss"] / totals["count"],
             "eval/iou_0.4": totals["iou"] / totals["count"]}
  writer.scalars(step, results)
  if image is not None:
    writer.image(step, "eval/reconstruction", image)
  return results


def _save(manager, step, p_state, monitor):
  """Checkpoints `step`, never with non-finite parameters or after a non-finite loss."""
  monitor.fetch()
  pytree = train_state.state_to_pytree(_first_local(p_state))
  for path, leaf in jax.tree_util.tree_leaves_with_path(pytree):
    if np.issubdtype(np.asarray(leaf).dtype, np.floating) and not np.isfinite(leaf).all():
      raise NonFiniteLossError(f"Non-finite values in {jax.tree_util.keystr(path)} after step "
                               f"{step}; stopping without saving a checkpoint of it.")
  checkpoints.save(manager, step, pytree)


def _hint_if_gpu_sized(config):
  if jax.default_backend() == "cpu" and config.batch_size >= GPU_SIZED_BATCH:
    logging.warning("config.batch_size=%d is sized for GPUs: on this CPU a step takes minutes. "
                    "For a CPU-sized run add ':tiny' to the config, e.g. "
                    "--config configs/simple_gru_k1.py:tiny", config.batch_size)


def prepare_dataset(config):
  """The dataset directory of config; the procedural default is built on first use (rendering)."""
  if config.dataset == "procedural":
    from data_prep import procedural  # pylint: disable=import-outside-toplevel  (rendering deps)
    p = config.procedural
    procedural.ensure_procedural_dataset(os.path.expanduser(config.data_dir), p.num_objects,
                                         p.views, p.seed)
  return input_pipeline.dataset_dir(config)


def _prepare_data(config):
  """The dataset directory; process 0 builds it on first use while the others wait."""
  if jax.process_index() == 0:
    prepare_dataset(config)
  multihost_utils.sync_global_devices("r2n2_dataset_ready")
  return input_pipeline.dataset_dir(config)


def train_and_evaluate(config, workdir):
  """Trains config's model in `workdir`, resuming from its latest checkpoint; returns final metrics.

  Raises preemption.Interrupted after checkpointing the step where a SIGTERM or Ctrl-C stopped it.
  """
  workdir = os.path.abspath(os.path.expanduser(workdir))
  # Validates the config, locks the workdir, checks the config against its checkpoints, writes
  # config.json (see checkpoints.open_workdir); the lock is held until training returns.
  with checkpoints.open_workdir(workdir, config):
    return _train_and_evaluate(config, workdir)


def _train_and_evaluate(config, workdir):
  _hint_if_gpu_sized(config)
  data_dir = _prepare_data(config)

  state = train_state.create_train_state(config, jax.random.key(config.seed))
  manager = checkpoints.create_manager(workdir, config.keep_checkpoints)
  # The newest checkpoint that passes its checksums and shapes (damaged newer ones moved aside).
  restored = checkpoints.restore_newest_intact(
      manager, jax.eval_shape(lambda: train_state.state_to_pytree(state)))
  if restored is not None:
    state = state.replace(**restored)
    logging.info("Resumed from %s at step %d", manager.directory, int(state.step))
  start_step = int(state.step)

  p_train_step = jax.pmap(functools.partial(train_step, axis_name=AXIS), axis_name=AXIS,
                          donate_argnums=(0,))
  p_eval_step = jax.pmap(functools.partial(eval_step, axis_name=AXIS), axis_name=AXIS)
  # On the mesh the step returns its state on (axis AXIS): step 2 reuses step 1's compilation.
  p_state = flax.jax_utils.replicate(state, axis_name=AXIS)
  del state
  writer = MetricsWriter(workdir)
  monitor = TrainingMonitor(config, start_step, writer)
  batches = flax.jax_utils.prefetch_to_device(
      map(_shard, input_pipeline.create_train_iterator(
          config, data_dir, start_step, jax.process_index(), jax.process_count())),
      2, axis_name=AXIS)

  results, step, stop = {}, start_step, None
  try:
    with preemption.StopOnSignal() as signals:
      for step in range(start_step + 1, config.num_train_steps + 1):
        p_state, step_metrics = p_train_step(p_state, next(batches))
        monitor.add(step, step_metrics)
        stop = signals.should_stop(step)
        is_last = step == config.num_train_steps
        results.update(monitor.step_done(step))
        if (step % config.eval_every_steps == 0 or is_last) and not stop:
          results.update(validate(config, p_eval_step, p_state, data_dir, writer, step))
        if step % config.checkpoint_every_steps == 0 or is_last or stop:
          _save(manager, step, p_state, monitor)
        if stop:
          break
  finally:
    manager.wait_until_finished()
    manager.close()
    writer.close()
  if stop:
    logging.warning("Stopped by %s after step %d; checkpoint saved in %s. Run the same command "
                    "to resume.", signal.Signals(signals.signum).name, step, manager.directory)
    raise preemption.Interrupted(signals.signum, step)
  return results
