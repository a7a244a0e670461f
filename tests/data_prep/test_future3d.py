"""3D-FUTURE import on a tiny replica of the release layout."""

import json
import os

import numpy as np
import pytest
import trimesh

from data_prep import future3d, meshes, records, render, voxelize

pytestmark = pytest.mark.slow  # Renders with EGL (pyrender): not in the fast tier.

MODELS = {  # model_id: (super-category, fine category, mesh)
    "a1": ("Sofa", "Three-seat / Multi-seat Sofa", trimesh.creation.box((1.0, 0.4, 0.5))),
    "b2": ("Sofa", "Loveseat Sofa", trimesh.creation.box((0.7, 0.4, 0.5))),
    "c3": ("Lighting", "Floor Lamp", trimesh.creation.cylinder(0.05, 1.0)),
    "d4": ("Table", "Coffee Table", trimesh.creation.cylinder(0.4, 0.2)),
    "e5": ("Table", "Dining Table", trimesh.creation.box((1.0, 0.1, 0.6))),
}
MISSING = "f6"  # Listed in model_info.json, but its folder is missing.


@pytest.fixture(scope="module")
def release(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("future3d"))
  info = []
  for model_id, (sup, fine, mesh) in MODELS.items():
    folder = os.path.join(root, future3d.MODEL_DIR, model_id)
    os.makedirs(folder)
    mesh.export(os.path.join(folder, future3d.MESH_NAME))
    info.append({"model_id": model_id, "super-category": sup, "category": fine, "style": None})
  info.append({"model_id": MISSING, "super-category": "Bed", "category": "King-size Bed"})
  with open(os.path.join(root, future3d.MODEL_DIR, "model_info.json"), "w") as f:
    json.dump(info, f)
  return root


def test_records_match_the_release(release, tmp_path):
  dataset_dir, report = future3d.build_future3d(release, tmp_path, views=2, workers=1)
  seen = {}
  for split in records.SPLITS:
    for ex in records.load_split(dataset_dir, split):
      model_id = records.decode_text(ex["object_id"])
      seen[model_id] = split
      sup, fine, _ = MODELS[model_id]
      assert records.decode_text(ex["category"]) == sup
      assert records.decode_text(ex["synset"]) == fine
      mesh, _ = meshes.load_mesh(
          os.path.join(release, future3d.MODEL_DIR, model_id, future3d.MESH_NAME))
      vox, _ = voxelize.voxelize(mesh)
      np.testing.assert_array_equal(ex["voxels"], vox)
      # The first view's projected voxels land on the object's pixels.
      uv, _ = render.project(voxelize.cell_centres()[np.argwhere(vox)], ex["K"][0].astype(float),
                             ex["pose"][0].astype(float))
      uv = np.round(uv).astype(int)
      assert (ex["views"][0][uv[:, 1], uv[:, 0], 3] > 0).mean() > 0.8  # Surface cells overhang.
  assert set(seen) == set(MODELS)
  assert {"train", "validation", "test"} <= set(seen.values())
  assert "Skipped inputs: 1" in report and MISSING in report and "no such file" in report


def test_official_test_split_is_used(release):
  with open(os.path.join(release, future3d.MODEL_DIR, "model_info_test.json"), "w") as f:
    json.dump([{"model_id": "c3", "super-category": "Lighting", "category": "Floor Lamp"}], f)
  try:
    splits = {it.object_id: it.split for it in future3d.model_items(release, seed=0)}
  finally:
    os.remove(os.path.join(release, future3d.MODEL_DIR, "model_info_test.json"))
  assert [i for i, s in splits.items() if s == "test"] == ["c3"]
  assert set(splits.values()) == {"train", "validation", "test"}
