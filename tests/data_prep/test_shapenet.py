"""ShapeNet R2N2 importer: a replica of the ShapeNetRendering/ShapeNetVox32 layout, read back."""

import json
import os
import pathlib

import numpy as np
import pytest
from PIL import Image
from scipy.spatial.transform import Rotation
from trimesh import transformations
from trimesh.exchange import binvox as trimesh_binvox
from trimesh.voxel import VoxelGrid

from data_prep import records
from data_prep import render as data_prep_render
from data_prep import shapenet

N = records.VOXEL_RESOLUTION
SIZE = records.IMAGE_SIZE


def _write_binvox(path, dense_xyz, translate=(-0.5, -0.5, -0.5), scale=1.0):
  """Writes dense[x, y, z] with trimesh's binvox exporter (binvox 'xzy' order)."""
  grid = VoxelGrid(dense_xyz, transform=transformations.scale_and_translate(
      scale=scale / (N - 1), translate=translate))
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "wb") as f:
    f.write(trimesh_binvox.export_binvox(grid))


def _metadata_lines(rng):
  rows = np.c_[rng.uniform(0, 360, 24), rng.uniform(25, 30, 24), np.zeros(24),
               rng.uniform(0.65, 0.95, 24), np.full(24, 25.0)]
  return rows, "".join(" ".join(repr(float(v)) for v in row) + "\n" for row in rows)


def _write_object(root, synset, model_id, rng, rgb_view=None):
  """Writes one replica object; returns what the importer should read back."""
  rendering = os.path.join(root, "ShapeNetRendering", synset, model_id, "rendering")
  os.makedirs(rendering)
  views = rng.integers(0, 256, (24, SIZE, SIZE, 4), dtype=np.uint8)
  for i, view in enumerate(views):
    if i == rgb_view:
      Image.fromarray(view[..., :3], "RGB").save(os.path.join(rendering, f"{i:02d}.png"))
      view[..., 3] = 255  # PIL's RGB -> RGBA conversion.
    else:
      Image.fromarray(view, "RGBA").save(os.path.join(rendering, f"{i:02d}.png"))
  rows, text = _metadata_lines(rng)
  with open(os.path.join(rendering, "rendering_metadata.txt"), "w") as f:
    f.write(text)
  with open(os.path.join(rendering, "renderings.txt"), "w") as f:
    f.write("".join(f"{i:02d}.png\n" for i in range(24)))
  # Asymmetric occupancy: a wrong transpose or flip cannot reproduce it.
  dense = rng.random((N, N, N)) < 0.3
  dense[:20, :5, :2] = True
  translate, scale = rng.uniform(-0.6, -0.3, 3), rng.uniform(0.7, 1.1)
  _write_binvox(os.path.join(root, "ShapeNetVox32", synset, model_id, "model.binvox"),
                dense, translate, scale)
  return {"views": views, "voxels": dense, "rows": rows, "translate": translate, "scale": scale}


@pytest.fixture(scope="module")
def replica(tmp_path_factory):
  """2 wanted synsets (+1 filtered out) with good and broken objects."""
  root = str(tmp_path_factory.mktemp("shapenet"))
  rng = np.random.default_rng(0)
  layout = {"02691156": [f"a{i:02d}" for i in range(5)],
            "03001627": [f"c{i:02d}" for i in range(6)], "04401088": ["t00", "t01"]}
  truth = {}
  for synset, ids in layout.items():
    for model_id in ids:
      truth[f"{synset}/{model_id}"] = _write_object(
          root, synset, model_id, rng, rgb_view=3 if model_id == "c05" else None)
  render = os.path.join(root, "ShapeNetRendering")
  vox = os.path.join(root, "ShapeNetVox32")
  broken = {
      "02691156/a01": "missing",  # binvox gone
      "02691156/a04": "truncated",  # binvox cut short
      "03001627/c01": "missing",  # a png gone
      "03001627/c02": "rendering_metadata.txt:5",  # malformed line
      "03001627/c04": "unreadable image",  # png cut short
  }
  os.remove(os.path.join(vox, "02691156/a01/model.binvox"))
  path = pathlib.Path(vox, "02691156/a04/model.binvox")
  path.write_bytes(path.read_bytes()[:-41])
  os.remove(os.path.join(render, "03001627/c01/rendering/07.png"))
  path = pathlib.Path(render, "03001627/c02/rendering/rendering_metadata.txt")
  lines = path.read_text().splitlines(keepends=True)
  lines[4] = "12.5 27.0 0 not-a-number 25\n"
  path.write_text("".join(lines))
  path = pathlib.Path(render, "03001627/c04/rendering/11.png")
  path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])
  return {"root": root, "render": render, "vox": vox, "truth": truth, "broken": broken}


def _read_all(dataset_dir, split):
  source = records.load_split(dataset_dir, split)
  return {records.decode_text(e["object_id"]): e for e in (source[i] for i in range(len(source)))}


def _check_example(example, truth, synset, category):
  np.testing.assert_array_equal(example["views"], truth["views"])
  np.testing.assert_array_equal(example["voxels"], truth["voxels"])
  rows = truth["rows"]
  np.testing.assert_array_equal(example["azimuth"], rows[:, 0].astype(np.float32))
  np.testing.assert_array_equal(example["elevation"], rows[:, 1].astype(np.float32))
  np.testing.assert_allclose(example["distance"], rows[:, 3] * 1.75 / truth["scale"], rtol=1e-6)
  np.testing.assert_allclose(example["fov"], np.degrees(2 * np.arctan(16 / 35)), rtol=1e-6)
  f = 35 / 32 * SIZE
  np.testing.assert_allclose(example["K"], np.broadcast_to(
      [[f, 0, 68.0], [0, f, 68.0], [0, 0, 1]], (24, 3, 3)), rtol=1e-6)
  # Camera centres: d (cos el cos az, sin el, cos el sin az) in the model frame, in unit-cube units.
  az, el = np.radians(rows[:, 0]), np.radians(rows[:, 1])
  centre_model = (rows[:, 3:4] * 1.75) * np.c_[np.cos(el) * np.cos(az), np.sin(el),
                                                 np.cos(el) * np.sin(az)]
  centre = (centre_model - (truth["translate"] + truth["scale"] / 2)) / truth["scale"]
  np.testing.assert_allclose(example["pose"][:, :3, 3], centre, atol=1e-5)
  assert records.decode_text(example["synset"]) == synset
  assert records.decode_text(example["category"]) == category
  assert records.decode_text(example["voxel_method"]).startswith("ShapeNetVox32")


@pytest.mark.slow  # A whole build (TFDS writer) of the replica.
def test_r2n2_import_reads_pixels_voxels_cameras_and_reports_broken(replica, tmp_path):
  dataset_dir, report = shapenet.build_shapenet(
      replica["render"], replica["vox"], tmp_path / "data", classes=["aeroplane", "03001627"],
      workers=2)
  # 80/20 by sorted id; 5 -> 4 + 1, 6 -> 4 + 2; int(4 * 0.05) = 0 validation objects.
  planned = {"train": ["02691156/a00", "02691156/a01", "02691156/a02", "02691156/a03",
                       "03001627/c00", "03001627/c01", "03001627/c02", "03001627/c03"],
             "test": ["02691156/a04", "03001627/c04", "03001627/c05"]}
  names = {"02691156": "aeroplane", "03001627": "chair"}
  for split, ids in planned.items():
    landed = _read_all(dataset_dir, split)
    assert sorted(landed) == sorted(i for i in ids if i not in replica["broken"])
    for object_id, example in landed.items():
      synset = object_id.split("/")[0]
      _check_example(example, replica["truth"][object_id], synset, names[synset])
  assert sorted(s["object_id"] for s in report["skipped"]) == sorted(replica["broken"])
  for skip in report["skipped"]:
    assert replica["broken"][skip["object_id"]] in skip["reason"], skip
  assert report["counts"]["train"] == {"aeroplane": 3, "chair": 2}
  assert report["counts"]["test"] == {"chair": 1}
  assert report["splits_written"] == ["test", "train"]
  assert report["converted_views"] == {"03001627/c05": ["RGB"]}
  report_dir = os.path.dirname(dataset_dir)
  saved = json.loads(pathlib.Path(report_dir, "report.json").read_text())
  assert saved["totals"]["train"] == 5
  assert "02691156/a01" in pathlib.Path(report_dir, "report.txt").read_text()
  with pytest.raises(FileExistsError, match="already exists"):
    shapenet.build_shapenet(replica["render"], replica["vox"], tmp_path / "data", workers=1)


def test_pix2vox_json_split(replica, tmp_path):
  split_file = tmp_path / "ShapeNet.json"
  split_file.write_text(json.dumps([
      {"taxonomy_id": "02691156", "taxonomy_name": "aeroplane",
       "train": ["a03", "a00"], "val": ["a02"], "test": ["a01", "zz"]},
      {"taxonomy_id": "04401088", "taxonomy_name": "telephone",
       "train": ["t01"], "val": ["t00"], "test": []},
  ]))
  dataset_dir, report = shapenet.build_shapenet(
      replica["render"], replica["vox"], tmp_path / "data", split=str(split_file), workers=1)
  assert sorted(_read_all(dataset_dir, "train")) == ["02691156/a00", "02691156/a03",
                                                     "04401088/t01"]
  validation = _read_all(dataset_dir, "validation")
  assert sorted(validation) == ["02691156/a02", "04401088/t00"]
  _check_example(validation["04401088/t00"], replica["truth"]["04401088/t00"], "04401088",
                 "telephone")
  # Every test object is broken or absent, and TFDS cannot store an empty split.
  assert report["splits_written"] == ["train", "validation"]
  assert {s["object_id"] for s in report["skipped"]} == {"02691156/a01", "02691156/zz"}


def test_r2n2_split_carves_validation_from_end_of_train(tmp_path):
  ids = [f"{i:03d}" for i in range(50)]
  for i in reversed(ids):
    os.makedirs(tmp_path / "r" / "03001627" / i)
  os.makedirs(tmp_path / "v" / "03001627" / "999")  # Voxels only: listed, then skipped at load.
  plan = shapenet.r2n2_split(str(tmp_path / "r"), str(tmp_path / "v"))
  all_ids = ids + ["999"]  # 51 ids: int(40.8) = 40 train, of which int(2.0) = 2 validation.
  assert [m for _, m, _ in plan["train"]] == all_ids[:38]
  assert [m for _, m, _ in plan["validation"]] == all_ids[38:40]
  assert [m for _, m, _ in plan["test"]] == all_ids[40:]
  assert {c for split in plan.values() for _, _, c in split} == {"chair"}


def test_binvox_is_read_in_the_spec_order(tmp_path):
  """binvox spec: flat index = x * 32 * 32 + z * 32 + y (y fastest)."""
  x, y, z = 1, 2, 30
  flat = np.zeros(N**3, np.uint8)
  flat[x * N * N + z * N + y] = 1
  path = tmp_path / "one.binvox"
  path.write_bytes(
      trimesh_binvox.binvox_header((N, N, N), (0.1, 0.2, 0.3), 0.5).encode() + _rle(flat))
  voxels, translate, scale = shapenet.read_binvox(str(path))
  assert np.argwhere(voxels).tolist() == [[x, y, z]]
  np.testing.assert_allclose(translate, [0.1, 0.2, 0.3])
  assert scale == 0.5


def _rle(flat):
  """Plain binvox run-length bytes (value, count <= 255) of a flat 0/1 array."""
  out, start = bytearray(), 0
  while start < len(flat):
    end = start
    while end < len(flat) and flat[end] == flat[start] and end - start < 255:
      end += 1
    out += bytes([int(flat[start]), end - start])
    start = end
  return bytes(out)


def test_classes_resolve_names_aliases_and_ids():
  assert shapenet.resolve_classes("airplane, chair,04379243") == ["02691156", "03001627",
                                                                  "04379243"]
  assert shapenet.resolve_classes(None) is None
  with pytest.raises(ValueError, match="unknown ShapeNet class 'spaceship'"):
    shapenet.resolve_classes(["spaceship"])


def test_nothing_usable_raises(tmp_path):
  rendering = tmp_path / "ShapeNetRendering" / "03001627" / "x" / "rendering"
  os.makedirs(rendering)
  (rendering / "rendering_metadata.txt").write_text("1 2 3\n")
  os.makedirs(tmp_path / "ShapeNetVox32")
  with pytest.raises(RuntimeError, match="no usable ShapeNet object"):
    shapenet.build_shapenet(tmp_path / "ShapeNetRendering", tmp_path / "ShapeNetVox32",
                            tmp_path / "data", workers=1)


def _blender_scene_pose(azimuth, elevation, distance):
  """Camera-to-model pose of 3D-R2N2's Blender scene, rebuilt with scipy's euler conventions.

  Blender euler mode 'XYZ' is scipy's extrinsic "xyz", 'ZXY' is extrinsic "zxy"; the .obj import
  maps model (x, y, z) to Blender (x, -z, y).
  """
  parent = Rotation.from_euler("xyz", [0.0, -elevation, -azimuth], degrees=True).as_matrix()
  local = Rotation.from_euler("zxy", [90.0, 0.0, 90.0], degrees=True).as_matrix()
  to_model = np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]]).T
  pose = np.eye(4)
  pose[:3, :3] = to_model @ parent @ local
  pose[:3, 3] = to_model @ parent @ [distance, 0.0, 0.0]
  return pose


def _alpha(pyrender, renderer, mesh, pose, fx, cx):
  """(137, 137) bool silhouette of `mesh` seen from `pose` (cx in pyrender's edge convention)."""
  scene = pyrender.Scene(bg_color=[0, 0, 0, 0], ambient_light=[1.0, 1.0, 1.0])
  scene.add(pyrender.Mesh.from_trimesh(mesh))
  scene.add(pyrender.IntrinsicsCamera(fx, fx, cx, cx, znear=0.05, zfar=10.0), pose=pose)
  _, depth = renderer.render(scene)
  return depth > 0


@pytest.mark.slow  # Renders with EGL.
def test_cameras_project_voxels_onto_a_blender_like_replica(tmp_path):
  """Renders a known shape from 3D-R2N2's Blender camera rig (rebuilt independently, pyrender as
  the rasteriser, the image centre as principal point), imports it and checks that the stored
  K / pose project the voxels onto the alpha masks."""
  os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
  pyrender = pytest.importorskip("pyrender")
  import trimesh
  try:  # The process's shared renderer: deleting one of our own would end every other's context.
    renderer = data_prep_render.renderer(SIZE)
  except Exception as e:  # No EGL/OSMesa on this machine.
    pytest.skip(f"no offscreen OpenGL: {e}")
  # A chiral union of grid-aligned boxes (cell ranges), so voxels equal the mesh exactly.
  boxes = [((0, 0, 8), (32, 6, 24)), ((0, 6, 8), (8, 28, 16)), ((20, 6, 16), (32, 12, 24))]
  dense = np.zeros((N, N, N), bool)
  for lo, hi in boxes:
    dense[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = True
  translate, scale = np.array([-0.25, -0.3, -0.35]), 0.6
  model_mesh = trimesh.util.concatenate([
      trimesh.creation.box(bounds=translate + scale * np.array([lo, hi]) / N) for lo, hi in boxes])
  rng = np.random.default_rng(1)
  rows = np.c_[np.arange(24) * 15.0 + rng.uniform(0, 5, 24), rng.uniform(25, 30, 24),
               np.zeros(24), rng.uniform(0.65, 0.95, 24), np.full(24, 25.0)]
  synset, model_id = "03001627", "replica"
  rendering = tmp_path / "ShapeNetRendering" / synset / model_id / "rendering"
  os.makedirs(rendering)
  f = 35.0 / 32.0 * SIZE
  for i, (azimuth, elevation, _, ratio, _) in enumerate(rows):
    mask = _alpha(pyrender, renderer, model_mesh,
                  _blender_scene_pose(azimuth, elevation, 1.75 * ratio), f, SIZE / 2)
    rgba = np.zeros((SIZE, SIZE, 4), np.uint8)
    rgba[mask] = (200, 120, 40, 255)
    Image.fromarray(rgba, "RGBA").save(rendering / f"{i:02d}.png")
  (rendering / "rendering_metadata.txt").write_text(
      "".join(" ".join(str(v) for v in row) + "\n" for row in rows))
  _write_binvox(str(tmp_path / "ShapeNetVox32" / synset / model_id / "model.binvox"),
                dense, translate, scale)

  shapenet.build_shapenet(tmp_path / "ShapeNetRendering", tmp_path / "ShapeNetVox32",
                          tmp_path / "data", workers=1)
  example = records.load_split(tmp_path / "data" / "shapenet_r2n2" / records.VERSION, "test")[0]
  voxels = example["voxels"]
  centres = -0.5 + (np.argwhere(voxels) + 0.5) / N
  voxel_mesh = trimesh.util.concatenate([
      trimesh.creation.box(bounds=-0.5 + np.array([lo, hi]) / N) for lo, hi in boxes])

  def inside_fraction(pose, K, alpha):
    """DESIGN.md section 4 projection of the occupied cell centres; share landing on alpha."""
    q = (np.linalg.inv(pose) @ np.c_[centres, np.ones(len(centres))].T).T
    x, y, z = q[:, 0], -q[:, 1], -q[:, 2]
    u = np.rint(K[0, 0] * x / z + K[0, 2]).astype(int)
    v = np.rint(K[1, 1] * y / z + K[1, 2]).astype(int)
    ok = (u >= 0) & (u < SIZE) & (v >= 0) & (v < SIZE)
    return np.mean(ok & alpha[v.clip(0, SIZE - 1), u.clip(0, SIZE - 1)])

  mirrored = []
  for i in range(24):
    alpha = example["views"][i, ..., 3] > 0
    pose, K = example["pose"][i].astype(np.float64), example["K"][i].astype(np.float64)
    assert inside_fraction(pose, K, alpha) == 1.0, i
    silhouette = _alpha(pyrender, renderer, voxel_mesh, pose, K[0, 0], K[0, 2] + 0.5)
    iou = (silhouette & alpha).sum() / (silhouette | alpha).sum()
    assert iou > 0.98, (i, iou)
    wrong = shapenet.blender_camera_pose(-rows[i, 0], rows[i, 1], 0.0, rows[i, 3])
    wrong[:3, 3] = (wrong[:3, 3] - (translate + scale / 2)) / scale
    mirrored.append(inside_fraction(wrong, K, alpha))
  assert np.mean(mirrored) < 0.9  # The check can tell a mirrored azimuth apart.
