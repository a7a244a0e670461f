"""Any folder of mesh files -> records (category = the top-level sub-folder name)."""

import os

from data_prep import meshes, pipeline

NO_CATEGORY = "uncategorized"  # Category of files directly under the input folder.


def find_meshes(input_dir):
  """Sorted [(relative posix path, category)] of every mesh file under input_dir, recursively."""
  found = []
  for root, dirs, files in os.walk(input_dir):
    dirs.sort()
    for name in sorted(files):
      if name.lower().endswith(meshes.MESH_EXTENSIONS):
        rel = os.path.relpath(os.path.join(root, name), input_dir).replace(os.sep, "/")
        found.append((rel, rel.split("/")[0] if "/" in rel else NO_CATEGORY))
  return found


def build_mesh_folder(input_dir, data_dir, name, views=24, workers=None, split_seed=0,
                      beam=False, beam_options=None):
  """Renders + voxelises every mesh under input_dir; returns (dataset_dir, report text).

  object_id is the relative path (with extension); splits 80/10/10 stratified by category from
  split_seed. Broken files are skipped and listed in the report. beam: see pipeline.build_dataset.
  """
  found = find_meshes(input_dir)
  if not found:
    raise pipeline.NothingUsable(f"{input_dir}: no mesh files ({' '.join(meshes.MESH_EXTENSIONS)})")
  ids = [rel for rel, _ in found]  # The extension stays: a.obj and a.ply are two objects.
  categories = [c for _, c in found]
  splits = pipeline.assign_splits(ids, categories, split_seed)
  items = [pipeline.Item(object_id=i, category=c, synset="", split=s,
                         source=os.path.join(input_dir, i))
           for i, c, s in zip(ids, categories, splits)]
  return pipeline.build_dataset(name, f"v{views}_s{split_seed}", data_dir, items,
                                pipeline.load_mesh_file, views=views, seed=split_seed,
                                workers=workers, description=f"Meshes from {input_dir}.",
                                beam=beam, beam_options=beam_options)
