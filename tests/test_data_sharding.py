"""Hosts' shares of the data: independent of the number of hosts, and evaluation in lockstep."""

import numpy as np
import pytest

from r2n2_jax import input_pipeline


def _assert_split(whole, parts):
  for key in whole:
    np.testing.assert_array_equal(whole[key], np.concatenate([p[key] for p in parts]))


@pytest.mark.parametrize("per_example_views", [False, True])
def test_training_batches_do_not_depend_on_the_number_of_hosts(tiny_config, per_example_views):
  """Each host reads its slice of the batch one host would read, at every step, from any step."""
  config = tiny_config.copy_and_resolve_references()
  config.batch_size, config.per_example_views = 4, per_example_views
  data_dir = input_pipeline.dataset_dir(config)
  for start in (0, 5):
    expected = [b for b, _ in zip(input_pipeline.create_train_iterator(config, data_dir, start),
                                  range(3))]
    for hosts in (2, 4):
      parts = [input_pipeline.create_train_iterator(config, data_dir, start, p, hosts)
               for p in range(hosts)]
      for whole in expected:
        _assert_split(whole, [next(it) for it in parts])


@pytest.mark.parametrize("eval_batch_size,hosts,num_batches", [
    (2, 2, -1), (6, 2, -1), (8, 4, -1), (3, 3, -1), (3, 3, 1), (12, 4, 1)])
def test_every_host_evaluates_the_same_number_of_batches(tiny_config, eval_batch_size, hosts,
                                                         num_batches):
  """The 4 validation objects in global batches; hosts past the end get padding (valid False)."""
  config = tiny_config.copy_and_resolve_references()
  config.eval_batch_size = eval_batch_size
  data_dir = input_pipeline.dataset_dir(config)
  whole = list(input_pipeline.create_eval_iterator(config, data_dir, "validation", 2, num_batches))
  parts = [list(input_pipeline.create_eval_iterator(config, data_dir, "validation", 2, num_batches,
                                                    p, hosts)) for p in range(hosts)]
  assert all(len(p) == len(whole) for p in parts)
  for i, batch in enumerate(whole):
    _assert_split(batch, [p[i] for p in parts])
  expected = 4 if num_batches < 0 else min(4, num_batches * eval_batch_size)
  assert sum(int(b["valid"].sum()) for b in whole) == expected
