"""Mesh-folder import: broken inputs are skipped with reasons, good ones become records; the CLI."""

import os

import numpy as np
import pytest
import trimesh

from data_prep import __main__ as cli
from data_prep import mesh_folder, meshes, pipeline, records, voxelize
from r2n2_jax import input_pipeline

pytestmark = pytest.mark.slow  # Renders with EGL (pyrender): not in the fast tier.

GOOD = {"chairs/box.obj", "tables/cylinder.ply", "lamps/two_parts.glb", "sphere.stl",
        "chairs/no_texture.obj"}
BROKEN = {
    "garbage.glb": "unreadable",
    "empty.stl": "empty file",
    "truncated.glb": "unreadable",
    "nan.obj": "non-finite",
    "flat.obj": "zero surface area",
}


def _write(path, data):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "wb" if isinstance(data, bytes) else "w") as f:
    f.write(data)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("meshes"))
  for sub in ("chairs", "tables", "lamps"):
    os.makedirs(os.path.join(root, sub))
  trimesh.creation.box((1.0, 0.5, 0.3)).export(os.path.join(root, "chairs", "box.obj"))
  trimesh.creation.cylinder(0.3, 0.8).export(os.path.join(root, "tables", "cylinder.ply"))
  scene = trimesh.Scene([trimesh.creation.cylinder(0.05, 1.0),
                         trimesh.creation.cone(0.3, 0.3).apply_translation([0, 0, 0.5])])
  glb = scene.export(file_type="glb")
  _write(os.path.join(root, "lamps", "two_parts.glb"), glb)
  trimesh.creation.icosphere().export(os.path.join(root, "sphere.stl"))
  box_obj = trimesh.creation.box().export(file_type="obj")
  _write(os.path.join(root, "chairs", "no_texture.obj"),
         "mtllib missing.mtl\nusemtl wood\n" + box_obj)
  _write(os.path.join(root, "garbage.glb"), b"glTF this is not a real binary gltf" * 10)
  _write(os.path.join(root, "empty.stl"), b"")
  _write(os.path.join(root, "truncated.glb"), glb[:len(glb) // 2])
  _write(os.path.join(root, "nan.obj"), "v 0 0 0\nv 1 0 0\nv nan 1 0\nv 0 0 1\nf 1 2 3\nf 1 2 4\n")
  _write(os.path.join(root, "flat.obj"), "v 0 0 0\nv 1 0 0\nv 2 0 0\nf 1 2 3\n")
  return root


def test_load_mesh_reasons(folder):
  for name, reason in BROKEN.items():
    with pytest.raises(meshes.MeshError) as e:
      meshes.load_mesh(os.path.join(folder, name))
    assert reason in str(e.value) and name in str(e.value), str(e.value)
  mesh, _ = meshes.load_mesh(os.path.join(folder, "lamps", "two_parts.glb"))
  assert mesh.body_count == 2  # Both scene parts are merged into one mesh.
  np.testing.assert_allclose(mesh.extents.max(), 1.0)


def test_huge_mesh_is_capped():
  mesh, notes = meshes.prepare_mesh(trimesh.creation.icosphere(subdivisions=5), max_faces=2000)
  assert len(mesh.faces) <= 2000 and notes and "simplified" in notes[0]


def test_broken_inputs_are_skipped_with_reasons(folder, tmp_path):
  dataset_dir, report = mesh_folder.build_mesh_folder(folder, tmp_path, "folder", views=2,
                                                      workers=1)
  ids = {}
  for split in records.SPLITS:
    try:
      source = records.load_split(dataset_dir, split)
    except Exception:  # Splits left empty by skipped inputs are not written.
      continue
    for ex in source:
      ids[records.decode_text(ex["object_id"])] = records.decode_text(ex["category"])
  assert set(ids) == GOOD
  assert ids["chairs/box.obj"] == "chairs" and ids["sphere.stl"] == mesh_folder.NO_CATEGORY
  assert f"Skipped inputs: {len(BROKEN)}" in report
  for name, reason in BROKEN.items():
    assert any(name in line and reason in line for line in report.splitlines()), name
  assert open(os.path.join(dataset_dir, pipeline.REPORT_NAME)).read() == report


_calls = []


def _interrupting_loader(item):
  """Loads like the pipeline but 'crashes' (Ctrl-C) on the third object."""
  _calls.append(item.object_id)
  if len(_calls) == 3:
    raise KeyboardInterrupt
  return pipeline.load_mesh_file(item)


def _counting_loader(item):
  _calls.append(item.object_id)
  return pipeline.load_mesh_file(item)


def test_rerun_after_interruption_resumes(folder, tmp_path):
  found = [(p, c) for p, c in mesh_folder.find_meshes(folder) if p in GOOD]
  items = [pipeline.Item(p, c, "", "train", os.path.join(folder, p)) for p, c in found]
  _calls.clear()
  with pytest.raises(KeyboardInterrupt):
    pipeline.build_dataset("resume", "v2", tmp_path, items, _interrupting_loader, views=2, seed=0,
                           workers=1)
  finished = _calls[:2]
  work_dir = os.path.join(tmp_path, "_work", "resume", "v2")
  cached = {f: os.path.getmtime(os.path.join(work_dir, f)) for f in os.listdir(work_dir)}
  assert len(cached) == 2
  _calls.clear()
  dataset_dir, report = pipeline.build_dataset("resume", "v2", tmp_path, items, _counting_loader,
                                               views=2, seed=0, workers=1, keep_work=True)
  assert sorted(_calls) == sorted(set(p for p, _ in found) - set(finished))  # Not redone.
  assert "Objects resumed from an earlier run: 2" in report
  for f, mtime in cached.items():
    assert os.path.getmtime(os.path.join(work_dir, f)) == mtime
  assert len(records.load_split(dataset_dir, "train")) == len(GOOD)


def test_records_match_their_inputs(folder, tmp_path):
  dataset_dir, _ = mesh_folder.build_mesh_folder(folder, tmp_path, "folder", views=2, workers=1)
  for split in records.SPLITS:
    try:
      source = records.load_split(dataset_dir, split)
    except Exception:
      continue
    for ex in source:
      mesh, _ = meshes.load_mesh(os.path.join(folder, records.decode_text(ex["object_id"])))
      vox, method = voxelize.voxelize(mesh)
      np.testing.assert_array_equal(ex["voxels"], vox)
      assert records.decode_text(ex["voxel_method"]) == method


def test_cli(folder, tmp_path, capsys):
  argv = ["mesh-folder", "--input", folder, "--data-dir", str(tmp_path), "--name", "cli",
          "--views", "2", "--workers", "1", "--split-seed", "3"]
  assert cli.main(argv) == 0
  out = capsys.readouterr().out
  assert "Skipped inputs: 5" in out and "Dataset written to" in out
  dataset_dir = os.path.join(tmp_path, "cli", "v2_s3", "1.0.0")
  assert os.path.isdir(dataset_dir)
  # The training flags for this data: its path and its views' statistics.
  mean, std = input_pipeline.view_statistics(dataset_dir)
  assert f"--config.dataset={dataset_dir} " in out
  assert "--config.model.input_mean='({:.3f},{:.3f},{:.3f})'".format(*mean) in out
  assert "--config.model.input_std='({:.3f},{:.3f},{:.3f})'".format(*std) in out
  broken_only = tmp_path / "broken"
  broken_only.mkdir()
  (broken_only / "empty.stl").write_bytes(b"")
  assert cli.main(["mesh-folder", "--input", str(broken_only), "--data-dir", str(tmp_path),
                   "--name", "none", "--views", "2", "--workers", "1"]) == 1
  assert "empty file" in capsys.readouterr().err
