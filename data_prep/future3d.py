"""3D-FUTURE (Fu et al. 2021) -> records.

Layout: DIR/3D-FUTURE-model/<model_id>/normalized_model.obj (+ its .mtl and texture.png), and
model_info.json (a list of {"model_id", "super-category", "category", ...}) in DIR or in
DIR/3D-FUTURE-model. category = super-category (e.g. "Sofa"), synset = the fine category
(e.g. "Three-seat / Multi-seat Sofa"). Splits: the ids listed in a model_info_test.json next to
model_info.json form the test split when that file is there (the rest train/validation by seed);
otherwise 80/10/10 stratified by super-category from the seed.
"""

import json
import os

from data_prep import pipeline

DATASET_NAME = "future3d"
MODEL_DIR = "3D-FUTURE-model"
MESH_NAME = "normalized_model.obj"


def _find(input_dir, name):
  for path in (os.path.join(input_dir, name), os.path.join(input_dir, MODEL_DIR, name)):
    if os.path.isfile(path):
      return path
  return None


def _read_info(path):
  with open(path) as f:
    info = json.load(f)
  return {str(m["model_id"]): m for m in info}


def model_items(input_dir, seed=0):
  """[Item] for every model folder that model_info lists (unlisted folders get category
  "unknown"); the source is the model's normalized_model.obj."""
  info_path = _find(input_dir, "model_info.json")
  if info_path is None:
    raise FileNotFoundError(f"{input_dir}: no model_info.json (in it or in {MODEL_DIR}/)")
  info = _read_info(info_path)
  test_path = _find(input_dir, "model_info_test.json")
  test_ids = set()
  if test_path:
    test_info = _read_info(test_path)
    test_ids = set(test_info)
    info.update(test_info)
  model_dir = os.path.join(input_dir, MODEL_DIR)
  folders = os.listdir(model_dir) if os.path.isdir(model_dir) else []
  ids = sorted(set(info) | {i for i in folders if os.path.isdir(os.path.join(model_dir, i))})
  cats = [str(info.get(i, {}).get("super-category") or "unknown") for i in ids]
  fine = [str(info.get(i, {}).get("category") or "") for i in ids]
  if test_ids:  # Official test split; the rest 90/10 train/validation by seed.
    rest = [k for k, i in enumerate(ids) if i not in test_ids]
    rest_splits = pipeline.assign_splits([ids[k] for k in rest], [cats[k] for k in rest], seed,
                                         fractions=(0.9, 0.1, 0.0))
    splits = ["test"] * len(ids)
    for k, s in zip(rest, rest_splits):
      splits[k] = s
  else:
    splits = pipeline.assign_splits(ids, cats, seed)
  return [pipeline.Item(object_id=i, category=c, synset=f, split=s,
                        source=os.path.join(model_dir, i, MESH_NAME))
          for i, c, f, s in zip(ids, cats, fine, splits)]


def build_future3d(input_dir, data_dir, views=24, workers=None, seed=0, beam=False,
                   beam_options=None):
  """Renders + voxelises 3D-FUTURE models; returns (dataset_dir, report text)."""
  items = model_items(input_dir, seed)
  return pipeline.build_dataset(DATASET_NAME, f"v{views}_s{seed}", data_dir, items,
                                pipeline.load_mesh_file, views=views, seed=seed,
                                workers=workers, description=f"3D-FUTURE models from {input_dir}.",
                                beam=beam, beam_options=beam_options)
