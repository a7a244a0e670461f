"""The training state: model parameters, the paper's Adam with weight decay and schedule, step."""

from flax.training import train_state
import jax
import jax.numpy as jnp
import optax

from r2n2_jax import input_pipeline
from r2n2_jax.models import build_model


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
