"""Training: state, pure train/eval steps, pmap over local devices, checkpoints, metrics, the loop."""

import functools
import os
import time

from absl import logging
import flax
from flax.training import train_state
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import numpy as np
import optax

from r2n2_jax import checkpoints
from r2n2_jax import input_pipeline
from r2n2_jax import metrics
from r2n2_jax.models import build_model

IOU_THRESHOLD = 0.4  # The R2N2 protocol's threshold for validation IoU.


class NonFiniteLossError(FloatingPointError):
  """The training loss became NaN or infinite."""


def learning_rate_schedule(config):
  """Piecewise-constant: learning_rate, times lr_decay at each of lr_decay_steps."""
  return optax.piecewise_constant_schedule(
      config.learning_rate, {int(s): config.lr_decay for s in config.lr_decay_steps})


def _is_weight(path, _):
  """Weight decay applies to kernels, not biases (any parameter named 'bias')."""
  return getattr(path[-1], "key", None) != "bias"


def create_optimizer(config):
  """Adam with L2 weight decay on weights only, added to the gradient as in the original code."""
  decay_mask = lambda params: jax.tree_util.tree_map_with_path(_is_weight, params)
  return optax.chain(
      optax.add_decayed_weights(config.weight_decay, mask=decay_mask),
      optax.scale_by_adam(b1=config.adam_b1, b2=config.adam_b2),
      optax.scale_by_learning_rate(learning_rate_schedule(config)),
  )


def create_train_state(config, rng):
  """Initialised TrainState (params, Adam state, step 0) of config.model."""
  model = build_model(config.model)
  views = jnp.zeros((1, 1, input_pipeline.CROP, input_pipeline.CROP, 3), jnp.float32)
  params = jax.jit(model.init)(rng, views, jnp.ones((1, 1), bool))["params"]
  return train_state.TrainState.create(apply_fn=model.apply, params=params,
                                       tx=create_optimizer(config))


def state_to_pytree(state):
  """The checkpointed part of a TrainState."""
  return {"params": state.params, "opt_state": state.opt_state, "step": state.step}


def _forward(params, apply_fn, batch):
  views = input_pipeline.model_input(batch)
  return apply_fn({"params": params}, views, batch["view_mask"])


def train_step(state, batch, axis_name=None):
  """One Adam step on the mean voxel cross-entropy; grads averaged over `axis_name` if given."""

  def loss_fn(params):
    logits = _forward(params, state.apply_fn, batch)
    return metrics.voxel_cross_entropy(logits, batch["voxels"]).mean(), logits

  (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  iou = metrics.iou_per_object(metrics.occupancy_probability(logits), batch["voxels"],
                               IOU_THRESHOLD).mean()
  step_metrics = {"loss": loss, "iou": iou}
  if axis_name is not None:
    grads = jax.lax.pmean(grads, axis_name)
    step_metrics = jax.lax.pmean(step_metrics, axis_name)
  return state.apply_gradients(grads=grads), step_metrics


def eval_step(state, batch, axis_name=None):
  """Sums of loss and IoU@0.4 over the valid examples of a batch, and their count."""
  logits = _forward(state.params, state.apply_fn, batch)
  valid = batch["valid"].astype(jnp.float32)
  loss = metrics.voxel_cross_entropy(logits, batch["voxels"])
  probs = metrics.occupancy_probability(logits)
  iou = metrics.iou_per_object(probs, batch["voxels"], IOU_THRESHOLD)
  sums = {"loss": jnp.sum(loss * valid), "iou": jnp.sum(iou * valid), "count": jnp.sum(valid)}
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


def _shard(batch):
  """Host batch (B, ...) -> (local_devices, B / local_devices, ...)."""
  n = jax.local_device_count()
  return jax.tree.map(lambda x: x.reshape((n, -1) + x.shape[1:]), batch)


def check_finite(step, loss):
  if not np.isfinite(loss):
    raise NonFiniteLossError(f"Non-finite training loss {loss} at step {step}; stopping.")


def evaluate(config, p_eval_step, p_state, data_dir, writer, step):
  """Validation loss and IoU@0.4 over config.num_eval_batches batches; logs them and an image."""
  totals, image = None, None
  for batch in input_pipeline.create_eval_iterator(
      config, data_dir, config.eval_split, config.eval_views, config.num_eval_batches,
      jax.process_index(), jax.process_count()):
    sums, probs = p_eval_step(p_state, _shard(batch))
    sums = jax.tree.map(lambda x: float(x[0]), sums)
    totals = sums if totals is None else {k: totals[k] + sums[k] for k in sums}
    if image is None:
      image = reconstruction_image(batch["views"][0, 0], np.asarray(probs[0, 0]), batch["voxels"][0])
  if not totals or totals["count"] == 0:
    raise ValueError(f"Split {config.eval_split!r} of {data_dir} has no examples to evaluate")
  results = {"eval/loss": totals["loss"] / totals["count"],
             "eval/iou_0.4": totals["iou"] / totals["count"]}
  writer.scalars(step, results)
  writer.image(step, "eval/reconstruction", image)
  return results


def _validate_batch_sizes(config):
  devices = jax.device_count()
  for name in ("batch_size", "eval_batch_size"):
    if config[name] % devices:
      raise ValueError(f"config.{name}={config[name]} must be divisible by the {devices} devices")


def _prepare_data(config):
  """The dataset directory; process 0 builds it on first use while the others wait."""
  if jax.process_index() == 0:
    data_dir = input_pipeline.dataset_dir(config)
  multihost_utils.sync_global_devices("r2n2_dataset_ready")
  if jax.process_index() != 0:
    data_dir = input_pipeline.dataset_dir(config)
  return data_dir


def train_and_evaluate(config, workdir):
  """Trains config's model in `workdir`, resuming from its latest checkpoint; returns final metrics."""
  workdir = os.path.abspath(os.path.expanduser(workdir))
  os.makedirs(workdir, exist_ok=True)
  _validate_batch_sizes(config)
  if jax.process_index() == 0:
    checkpoints.save_config(workdir, config)
  data_dir = _prepare_data(config)

  state = create_train_state(config, jax.random.key(config.seed))
  manager = checkpoints.create_manager(workdir, config.keep_checkpoints)
  if manager.latest_step() is not None:
    restored = checkpoints.restore(manager, jax.eval_shape(lambda: state_to_pytree(state)))
    state = state.replace(**restored)
    logging.info("Resumed from %s at step %d", manager.directory, int(state.step))
  start_step = int(state.step)

  p_train_step = jax.pmap(functools.partial(train_step, axis_name="batch"), axis_name="batch",
                          donate_argnums=(0,))
  p_eval_step = jax.pmap(functools.partial(eval_step, axis_name="batch"), axis_name="batch")
  p_state = flax.jax_utils.replicate(state)
  del state
  schedule = learning_rate_schedule(config)
  writer = MetricsWriter(workdir)
  train_iter = input_pipeline.create_train_iterator(
      config, data_dir, start_step, jax.process_index(), jax.process_count())

  results = {}
  last_log_time, last_log_step = time.time(), start_step
  for step in range(start_step + 1, config.num_train_steps + 1):
    batch = next(train_iter)
    p_state, step_metrics = p_train_step(p_state, _shard(batch))
    loss = float(step_metrics["loss"][0])
    check_finite(step, loss)
    is_last = step == config.num_train_steps
    if step % config.log_every_steps == 0 or is_last:
      now = time.time()
      steps_per_sec = (step - last_log_step) / (now - last_log_time)
      results = {"train/loss": loss, "train/iou_0.4": float(step_metrics["iou"][0]),
                 "train/learning_rate": float(schedule(step - 1)),
                 "train/steps_per_sec": steps_per_sec,
                 "train/views_per_sec": steps_per_sec * float(np.sum(batch["view_mask"])) *
                                        jax.process_count()}
      writer.scalars(step, results)
      last_log_time, last_log_step = now, step
    if step % config.eval_every_steps == 0 or is_last:
      results.update(evaluate(config, p_eval_step, p_state, data_dir, writer, step))
    if step % config.checkpoint_every_steps == 0 or is_last:
      host_state = jax.device_get(flax.jax_utils.unreplicate(p_state))
      checkpoints.save(manager, step, state_to_pytree(host_state))
  manager.wait_until_finished()
  manager.close()
  writer.close()
  return results
