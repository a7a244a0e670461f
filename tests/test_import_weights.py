"""import_weights: the original Theano weight files in and out, exact against a numpy reference of
the original networks (tests/original_reference.py) with random weights in the original layout."""

import io
import json
import os
import pickle
import struct
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest

from configs import residual_gru_k3
from configs import simple_gru_k3
from r2n2_jax import checkpoints
from r2n2_jax import evaluate
from r2n2_jax import import_weights
from r2n2_jax import original_format
from r2n2_jax import predict
from r2n2_jax import train
from r2n2_jax.models import layers
import original_reference as ref

NETWORKS = ("GRUNet", "ResidualGRUNet")
MAX_VIEWS = 5
DATASET = "/data/shapenet_r2n2/r2n2/1.0.0"  # Only recorded in config.json by these tests.
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def save_like_the_original(path, arrays):
  """What the original's Net.save does: np.save of a list of differently shaped arrays."""
  packed = np.empty(len(arrays), dtype=object)
  for i, a in enumerate(arrays):
    packed[i] = a
  np.save(path, packed, allow_pickle=True)


def test_parameter_counts_are_the_originals_and_ours():
  for network, config, tensors, values in (("ResidualGRUNet", residual_gru_k3, 63, 35_968_706),
                                           ("GRUNet", simple_gru_k3, 33, 32_207_266)):
    shapes = ref.tensor_shapes(network)
    assert len(shapes) == tensors and sum(int(np.prod(s)) for _, s in shapes) == values
    ours = import_weights.abstract_state(config.get_config())["params"]
    assert sum(x.size for x in jax.tree.leaves(ours)) == values
    assert original_format.original_shapes(ours, network) == [s for _, s in shapes]


# --- Each layout conversion against the reference's layer, at small sizes (fast) ---------------

def _converter(network, tensor):
  return {name: conv for name, _, _, conv in original_format.layout(network)}[tensor]


def test_conv2d_kernels_are_flipped_into_cross_correlations():
  rng = np.random.default_rng(0)
  for kh, kw in ((7, 7), (3, 3), (1, 1)):
    w = rng.normal(size=(5, 4, kh, kw)).astype(np.float32)
    b = rng.normal(size=5).astype(np.float32)
    x = rng.normal(size=(2, 4, 9, 11)).astype(np.float32)
    to_ours, to_original = _converter("ResidualGRUNet", "conv1a.W")
    kernel = to_ours(w)
    ours = layers._conv2d(jnp.asarray(x.transpose(0, 2, 3, 1)), jnp.asarray(kernel)) + b
    np.testing.assert_allclose(np.asarray(ours).transpose(0, 3, 1, 2), ref.conv2d(x, w, b),
                               atol=1e-5)
    np.testing.assert_array_equal(to_original(kernel), w)


@pytest.mark.parametrize("impl", ["xla", "depth2d"])
def test_conv3d_kernels_are_flipped_and_moved_to_dhwio(impl):
  rng = np.random.default_rng(1)
  for k in (3, 1):
    w = rng.normal(size=(5, k, 4, k, k)).astype(np.float32)
    x = rng.normal(size=(2, 6, 4, 5, 7)).astype(np.float32)  # (N, D, C, H, W)
    to_ours, to_original = _converter("ResidualGRUNet", "conv7a.W")
    kernel = to_ours(w)
    ours = layers.conv3d(jnp.asarray(x.transpose(0, 1, 3, 4, 2)), jnp.asarray(kernel),
                         (((k - 1) // 2,) * 2,) * 3, impl)
    np.testing.assert_allclose(np.asarray(ours).transpose(0, 1, 4, 2, 3), ref.conv3d(x, w),
                               atol=1e-5)
    np.testing.assert_array_equal(to_original(kernel), w)


def test_fc_and_gate_input_kernels_follow_our_flattening_orders():
  rng = np.random.default_rng(2)
  to_ours, to_original = _converter("GRUNet", "fc7.W")
  w = rng.normal(size=ref.FC7).astype(np.float32)
  feature_map = rng.normal(size=(2, 256, 3, 3)).astype(np.float32)  # (N, C, H, W)
  ours = feature_map.transpose(0, 2, 3, 1).reshape(2, -1) @ to_ours(w)  # We flatten (H, W, C).
  np.testing.assert_allclose(ours, feature_map.reshape(2, -1) @ w, rtol=1e-5, atol=1e-4)
  np.testing.assert_array_equal(to_original(to_ours(w)), w)

  to_ours, to_original = _converter("GRUNet", "t_x_rs.Wx")
  wx = rng.normal(size=(1024, 8192)).astype(np.float32)
  features = rng.normal(size=(2, 1024)).astype(np.float32)
  theirs = (features @ wx).reshape(2, 4, 128, 4, 4)  # (N, D, C, H, W)
  ours = (to_ours(wx) @ features.T).T.reshape(2, 4, 4, 4, 128)  # As GateInputProjection.
  np.testing.assert_allclose(ours, theirs.transpose(0, 1, 3, 4, 2), rtol=1e-5, atol=1e-4)
  np.testing.assert_array_equal(to_original(to_ours(wx)), wx)


# --- Importing files ---------------------------------------------------------------------------

# Importing writes a real weights file and a checkpoint of the full network (~130 MB each): the
# tests that need one are in the slow tier; the layout and refusal tests above and below are not.
@pytest.fixture(scope="module", params=[pytest.param(n, marks=pytest.mark.slow) for n in NETWORKS])
def imported(request, tmp_path_factory):
  """(network, original arrays, their .npy file, the imported workdir)."""
  network = request.param
  root = tmp_path_factory.mktemp(f"import_{network}")
  arrays = ref.random_weights(network, seed=NETWORKS.index(network))
  path = str(root / f"{network}.npy")
  save_like_the_original(path, arrays)
  workdir = str(root / "W")
  import_weights.main(["--original", path, "--workdir", workdir, "--dataset", DATASET])
  return network, arrays, path, workdir


def test_import_writes_the_variant_config_with_the_originals_input_handling(imported):
  network, _, _, workdir = imported
  with open(os.path.join(workdir, "config.json")) as f:
    written = json.load(f)
  module = residual_gru_k3 if network == "ResidualGRUNet" else simple_gru_k3
  config = module.get_config("original")
  config.dataset = DATASET
  assert written == json.loads(config.to_json_best_effort())
  assert written["model"]["input_mean"] == [0, 0, 0] and written["model"]["input_std"] == [1, 1, 1]
  assert checkpoints.latest_step(workdir) == 0


def test_checkpoint_holds_the_arrays_a_fresh_adam_state_and_step_0(imported):
  network, arrays, _, workdir = imported
  config = checkpoints.load_config(workdir)
  abstract = import_weights.abstract_state(config)
  with checkpoints.create_manager(workdir) as manager:
    restored = checkpoints.restore_newest_intact(manager, abstract)
  assert int(restored["step"]) == 0
  moments = [x for x in jax.tree.leaves(restored["opt_state"]) if x.size > 1]
  assert moments and all(not np.any(np.asarray(x)) for x in moments)
  back = original_format.to_arrays(restored["params"], network)
  assert len(back) == len(arrays)
  for a, b in zip(back, arrays):
    np.testing.assert_array_equal(a, b)


def test_export_round_trip_is_bit_exact(imported, tmp_path):
  network, arrays, path, workdir = imported
  out = str(tmp_path / "exported.npy")
  import_weights.main(["--workdir", workdir, "--export-original", out])
  exported = np.load(out, allow_pickle=True)
  assert exported.dtype == object and len(exported) == len(arrays)
  for a, b in zip(exported, np.load(path, allow_pickle=True)):
    assert a.dtype == b.dtype and a.shape == b.shape
    assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("field,value,message", [
    ("cell", "lstm", "no original counterpart; only simple_gru_k3"),
    ("width", 0.125, "model width 0.125 has no original counterpart")])
def test_export_refuses_models_without_an_original(tmp_path, field, value, message):
  workdir = str(tmp_path / "run")
  os.makedirs(workdir)
  config = simple_gru_k3.get_config()
  config.model[field] = value
  checkpoints.save_config(workdir, config)
  with pytest.raises(SystemExit) as exit_info:
    import_weights.main(["--workdir", workdir, "--export-original", str(tmp_path / "x.npy")])
  assert message in str(exit_info.value)
  assert "\n" not in str(exit_info.value)


def _main_error(args):
  with pytest.raises(SystemExit) as exit_info:
    import_weights.main(args)
  message = str(exit_info.value)
  assert message.startswith("import_weights: ") and "\n" not in message
  return message


def test_wrong_number_of_arrays_is_one_line(tmp_path):
  path = str(tmp_path / "short.npy")
  save_like_the_original(path, ref.random_weights("GRUNet")[:-1])
  message = _main_error(["--original", path, "--workdir", str(tmp_path / "W")])
  assert "32 arrays" in message and "63" in message and "33" in message
  assert not os.path.exists(tmp_path / "W")


@pytest.mark.slow  # Two full-size weight files.
def test_wrong_shape_names_the_index_and_both_shapes(tmp_path):
  arrays = ref.random_weights("GRUNet")
  arrays[18] = arrays[18][:, :4096]  # t_x_s_reset.Wx (1024, 8192)
  path = str(tmp_path / "bad.npy")
  save_like_the_original(path, arrays)
  message = _main_error(["--original", path, "--workdir", str(tmp_path / "W")])
  assert "array 18 (t_x_s_reset.Wx)" in message
  assert "(1024, 4096)" in message and "(1024, 8192)" in message
  assert not os.path.exists(tmp_path / "W")
  arrays = ref.random_weights("GRUNet")
  arrays[0] = arrays[0].astype(np.int32)
  save_like_the_original(path, arrays)
  message = _main_error(["--original", path, "--workdir", str(tmp_path / "W")])
  assert "array 0 (conv1.W) has dtype int32, expected float" in message
  assert not os.path.exists(tmp_path / "W")


def test_importing_into_a_workdir_with_checkpoints_is_refused(imported):
  _, _, path, workdir = imported
  assert "already holds checkpoints" in _main_error(["--original", path, "--workdir", workdir])


# --- Safe loading ------------------------------------------------------------------------------

class _RunsACommand:
  def __init__(self, command):
    self.command = command

  def __reduce__(self):
    return os.system, (self.command,)


def _object_npy(path, payload):
  """A .npy whose header says 'object array' and whose body is `payload` (pickle bytes)."""
  with open(path, "wb") as f:
    np.lib.format.write_array_header_1_0(
        f, {"descr": "|O", "fortran_order": False, "shape": (2,)})
    f.write(payload)


def test_a_pickle_that_runs_code_is_refused_and_nothing_runs(tmp_path):
  marker = tmp_path / "pwned"
  path = str(tmp_path / "evil.npy")
  payload = [np.zeros(3, np.float32), _RunsACommand(f"touch {marker}")]
  _object_npy(path, pickle.dumps(np.array(payload, dtype=object), protocol=2))
  with pytest.raises(ValueError, match=r"refusing to load (posix|os|nt)\.system"):
    original_format.load_arrays(path)
  assert not marker.exists()
  message = _main_error(["--original", path, "--workdir", str(tmp_path / "W")])
  assert "evil.npy" in message and "refusing" in message and not marker.exists()
  # The payload is real: numpy's own loader runs it.
  np.load(path, allow_pickle=True)
  assert marker.exists()


def test_other_classes_and_codecs_are_refused(tmp_path):
  path = str(tmp_path / "dict.npy")
  _object_npy(path, pickle.dumps(np.array([io.BytesIO(), 1], dtype=object)))
  with pytest.raises(ValueError, match=r"dict\.npy: not an original .*refusing to load"):
    original_format.load_arrays(path)
  with pytest.raises(pickle.UnpicklingError, match="not allowed"):
    original_format._latin1_encode("x", "rot13")


def test_not_a_list_of_arrays_is_one_line(tmp_path):
  path = str(tmp_path / "plain.npy")
  np.save(path, np.zeros((3, 4), np.float32))
  with pytest.raises(ValueError, match=r"plain\.npy: not an original .* float32 array of shape"):
    original_format.load_arrays(path)
  path = str(tmp_path / "text.npy")
  with open(path, "w") as f:
    f.write("hello")
  with pytest.raises(ValueError, match=r"text\.npy: not an original 3D-R2N2 weight file"):
    original_format.load_arrays(path)


class _Py2Str(bytes):
  """Written with Python 2's str opcode (BINSTRING), as a Python 2 pickle stores array bytes."""


class _Py2Pickler(pickle._Pickler):  # pylint: disable=protected-access
  dispatch = dict(pickle._Pickler.dispatch)  # pylint: disable=protected-access

  def save_py2_str(self, obj):
    self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + bytes(obj))
    self.memoize(obj)

  dispatch[_Py2Str] = save_py2_str

  def reducer_override(self, obj):
    if isinstance(obj, np.ndarray):
      data = list(obj) if obj.dtype.hasobject else _Py2Str(obj.tobytes())
      return (original_format._RECONSTRUCT, (np.ndarray, (0,), _Py2Str(b"b")),
              (1, obj.shape, obj.dtype, False, data))
    return NotImplemented


def test_python2_numpy1_files_load(tmp_path):
  """Protocol 2, numpy.core.multiarray (numpy 1.x's name), array bytes as Python 2 str."""
  arrays = [np.arange(6, dtype=np.float32).reshape(2, 3), np.linspace(0, 1, 4).astype(np.float32)]
  packed = np.empty(2, dtype=object)
  packed[0], packed[1] = arrays
  buffer = io.BytesIO()
  _Py2Pickler(buffer, protocol=2).dump(packed)
  payload = buffer.getvalue()
  assert pickle.BINSTRING in payload and b"_codecs" not in payload
  payload = payload.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
  assert b"cnumpy.core.multiarray\n_reconstruct\n" in payload
  path = str(tmp_path / "py2.npy")
  _object_npy(path, payload)
  loaded = original_format.load_arrays(path)
  assert len(loaded) == 2
  for a, b in zip(loaded, arrays):
    np.testing.assert_array_equal(a, b)
    assert a.dtype == b.dtype
  # Python 3 protocol 2 stores bytes through _codecs.encode(..., 'latin1'): allowed too.
  path3 = str(tmp_path / "py3_protocol2.npy")
  _object_npy(path3, pickle.dumps(packed, protocol=2))
  assert all(np.array_equal(a, b) for a, b in zip(original_format.load_arrays(path3), arrays))


# --- Exactness against the original networks ---------------------------------------------------

def _images(seed, n):
  """n 127x127 RGB uint8 images: a coloured blob on a light background, with noise."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[:127, :127]
  images = []
  for _ in range(n):
    cy, cx, r = rng.uniform(40, 87), rng.uniform(40, 87), rng.uniform(15, 35)
    image = np.full((127, 127, 3), 240.0) + rng.normal(0, 8, (127, 127, 3))
    image[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.uniform(0, 200, 3)
    images.append(np.clip(np.rint(image), 0, 255).astype(np.uint8))
  return np.stack(images)


@pytest.fixture(scope="module")
def reference_probs(imported):
  """The original network's P(occupied) (V, 32, 32, 32) after 1..5 views, and the images."""
  network, arrays, _, _ = imported
  images = _images(7, MAX_VIEWS)
  views = (images.astype(np.float32) / 255.0).transpose(0, 3, 1, 2)[:, None]  # As demo.py.
  states = ref.hidden_states(arrays, network, views)
  probs = ref.decode(ref.named(arrays, network), network, np.concatenate(states))
  return images, probs


@pytest.mark.slow
def test_imported_network_gives_the_originals_probabilities_for_1_to_5_views(imported,
                                                                             reference_probs):
  _, _, _, workdir = imported
  images, expected = reference_probs
  # Informative: neither saturated nor constant (the random weights keep the units alive).
  assert expected.std() > 0.02 and expected.max() - expected.min() > 0.3
  predictor = predict.Predictor(workdir)
  views = np.stack([predict.preprocess_image(np.concatenate(
      [im, np.full(im.shape[:2] + (1,), 255, np.uint8)], -1)) for im in images])
  for n in range(1, MAX_VIEWS + 1):
    probs = predictor(views[:n])
    assert np.abs(probs - expected[n - 1]).max() <= 1e-5, n
  # Every view changes the result by far more than the tolerance (the recurrence is exercised).
  assert all(np.abs(expected[n] - expected[n - 1]).max() > 1e-3 for n in range(1, MAX_VIEWS))


@pytest.mark.slow
def test_predict_cli_on_127_pngs_gives_the_originals_probabilities(imported, reference_probs,
                                                                   tmp_path):
  _, _, _, workdir = imported
  images, expected = reference_probs
  paths = []
  for i, image in enumerate(images[:2]):
    paths.append(str(tmp_path / f"v{i}.png"))
    Image.fromarray(image).save(paths[-1])
  out = str(tmp_path / "p.npy")
  env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
  result = subprocess.run([sys.executable, "-m", "r2n2_jax.predict", "--workdir", workdir,
                           "--images", *paths, "--output", out], cwd=REPO, env=env,
                          capture_output=True, text=True, check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  assert np.abs(np.load(out) - expected[1]).max() <= 1e-5


def test_127_images_are_taken_as_they_are():
  rgba = np.random.default_rng(3).integers(0, 256, (127, 127, 4), dtype=np.uint8)
  rgba[..., 3] = 255
  np.testing.assert_array_equal(predict.preprocess_image(rgba), rgba[..., :3] / np.float32(255))


@pytest.mark.slow
def test_fine_tuning_starts_from_the_imported_weights(tiny_config, tmp_path):
  arrays = ref.random_weights("GRUNet", seed=5)
  path = str(tmp_path / "GRUNet.npy")
  save_like_the_original(path, arrays)
  workdir = str(tmp_path / "W")
  import_weights.import_original(path, workdir)
  config = simple_gru_k3.get_config("tiny,original")
  config.data_dir = tiny_config.data_dir
  config.num_train_steps = 1
  train.train_and_evaluate(config, workdir)
  assert checkpoints.latest_step(workdir) == 1
  variables, _ = checkpoints.restore_variables(workdir, config, 1)
  tuned = original_format.to_arrays(jax.device_get(variables["params"]), "GRUNet")
  # One Adam step moves each parameter by at most ~learning_rate; a fresh init would differ by O(1).
  for a, b in zip(tuned, arrays):
    assert np.abs(a - b).max() < 10 * config.learning_rate
  assert any(np.abs(a - b).max() > 0 for a, b in zip(tuned, arrays))
  # And evaluate restores the fine-tuned workdir (its config.json is now the launch config).
  results = evaluate.evaluate(checkpoints.load_config(workdir), workdir, "test", max_objects=2,
                              batch_size=2, view_counts=[1, 2])
  assert results["step"] == 1 and results["num_objects"] == 2
