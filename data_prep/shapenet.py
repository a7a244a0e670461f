"""Imports the 3D-R2N2 ShapeNet layout (ShapeNetRendering + ShapeNetVox32) into our records.

Input layout (Choy et al. 2016, http://cvgl.stanford.edu/3d-r2n2/):
  ShapeNetRendering/<synset>/<id>/rendering/{00..23}.png    24 RGBA 137x137 Blender renders
  ShapeNetRendering/<synset>/<id>/rendering/renderings.txt  the png names, one a line
  ShapeNetRendering/<synset>/<id>/rendering/rendering_metadata.txt
      one line per view: azimuth elevation in-plane-rotation distance-ratio fov
  ShapeNetVox32/<synset>/<id>/model.binvox                  32^3 binvox occupancy

Pixels are kept exactly as stored (RGBA uint8). A PNG stored in another mode is converted with
PIL's `convert("RGBA")` (RGB -> alpha 255 everywhere, so no mask; palette -> alpha from its
transparency table) and counted in the report.

Voxels (binvox spec, https://www.patrickmin.com/binvox/binvox.html): the run-length data is in
"xzy" order (y runs fastest, then z, then x), so the flat array reshaped to (32, 32, 32) is
indexed [x, z, y] and one transpose (0, 2, 1) gives [x, y, z], as 3D-R2N2 / Pix2Vox read it
(binvox_rw.read_as_3d_array, fix_coords=True). Binvox keeps the mesh's own axes and ShapeNetCore
v1 meshes are +y up, so this is our voxels[i, j, k] at (x, y, z) with +y up. The header maps
cell (i, j, k) to model coordinates  p = translate + scale * ((i, j, k) + 0.5) / 32 ; 3D-R2N2
voxelised with `binvox -d 32 -cb` (tools/voxelize_models.py: the model centred in its bounding
cube), so the grid is the model's bounding cube and our unit-cube frame is
  p_ours = (p_model - centre) / scale,  centre = translate + scale / 2.

Cameras, derived from 3D-R2N2's renderer (lib/blender_renderer.py, tools/render_models.py, config
RENDERING.MAX_CAMERA_DIST = 1.75):
  * Blender imports the .obj with its defaults (forward -Z, up Y): blender = B @ model with
    B = [[1, 0, 0], [0, 0, -1], [0, 1, 0]] (model +y up becomes Blender +z up).
  * The camera sits at (distance_ratio * 1.75, 0, 0) in the frame of an empty at the origin, with
    a local rotation that makes it look down -X with +Z up (euler ZXY (0, 90, 90) degrees); the
    empty is rotated by euler XYZ (-in_plane, -elevation, -azimuth) degrees.
  * Hence, in model coordinates, the camera centre is
      d * (cos(el) cos(az), sin(el), cos(el) sin(az)),  d = 1.75 * distance_ratio,
    it looks at the model origin with +y up (rolled by the in-plane angle, always 0 in the
    data); Blender cameras already use the OpenGL convention (look down -Z, +Y up).
  * setViewpoint ignores the fov column (always 25): the renders use Blender's default camera,
    a 35 mm lens on a 32 mm sensor, so f = 35 / 32 * 137 = 149.84 px and fov = 2 atan(16 / 35) =
    49.13 degrees (horizontal = vertical for a square image); we store that fov, not the 25.
    The principal point is the image centre: (68, 68) with OpenCV pixel centres at integers
    (68.5 in the edge-based convention that pyrender's IntrinsicsCamera and the Occupancy
    Networks conversion script of these cameras use).
  * Stored per view: pose = the camera moved into our unit-cube frame; distance = d / scale (the
    camera's distance to the point it looks at, in unit-cube units); azimuth and elevation as in
    the metadata (degrees).
  The same numbers (35 mm / 32 mm, 1.75, the axis swap B) appear in Occupancy Networks' script
  that converts these metadata files to camera matrices, an independent check of this reading.
Uncertainties: we have not seen the original .blend (we assume Blender's default camera), the
binvox header is trusted to describe the grid in the same model frame the renders used, and the
in-plane rotation sign is unverified (it is always 0 in the released data).

Splits: "r2n2" = per category, sorted object ids, first int(0.8 n) train, the rest test (3D-R2N2
DATASET_PORTION [0, 0.8] / [0.8, 1]); validation is the last int(0.05 n_train) of the train
portion (our choice; R2N2 had no validation split). Or a Pix2Vox-style json: a list of
{taxonomy_id, taxonomy_name, train, val, test} (val -> validation). Membership is decided on the
listed ids; an object whose files are missing or broken is skipped and reported.
"""

import dataclasses
import json
import math
import os
import time

import numpy as np
from PIL import Image
from trimesh.exchange import binvox as trimesh_binvox
from trimesh.voxel import runlength

from data_prep import pipeline, records

DATASET_NAME = "shapenet_r2n2"
NUM_VIEWS = 24  # Every ShapeNetRendering object has 24 views; others are skipped.
MAX_CAMERA_DIST = 1.75  # 3D-R2N2 cfg.RENDERING.MAX_CAMERA_DIST: distance = ratio * this.
LENS_MM = 35.0  # Blender's default camera.
SENSOR_MM = 32.0
TRAIN_FRACTION = 0.8
VALIDATION_FRACTION = 0.05  # Of the train portion, taken from its end.
VOXEL_METHOD = "ShapeNetVox32 binvox (3D-R2N2: binvox -d 32 -cb -dc -aw)"

# The 13 3D-R2N2 classes, named as in Pix2Vox's ShapeNet.json.
SYNSET_NAMES = {
    "02691156": "aeroplane",
    "02828884": "bench",
    "02933112": "cabinet",
    "02958343": "car",
    "03001627": "chair",
    "03211117": "display",
    "03636649": "lamp",
    "03691459": "speaker",
    "04090263": "rifle",
    "04256520": "sofa",
    "04379243": "table",
    "04401088": "telephone",
    "04530566": "watercraft",
}
# Other names of these classes (3D-R2N2 paper, ShapeNet taxonomy) accepted by `classes`.
_ALIASES = {
    "airplane": "02691156", "plane": "02691156", "monitor": "03211117",
    "loudspeaker": "03691459", "firearm": "04090263", "couch": "04256520",
    "cellphone": "04401088", "phone": "04401088", "boat": "04530566", "vessel": "04530566",
}
# Blender's .obj importer (forward -Z, up Y): blender_coords = _OBJ_TO_BLENDER @ model_coords.
_OBJ_TO_BLENDER = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])


class ShapeNetError(ValueError):
  """A file of one object is missing or malformed; the object is skipped."""

  @property
  def reason(self):  # What the report says (pipeline._process).
    return str(self)


def _rotation(axis, degrees):
  """(3, 3) right-handed rotation about 'x', 'y' or 'z'."""
  c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
  i, j = {"x": (1, 2), "y": (2, 0), "z": (0, 1)}[axis]
  r = np.eye(3)
  r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
  return r


def intrinsics():
  """(3, 3) OpenCV K of the 137x137 renders (Blender default 35 mm lens, 32 mm sensor)."""
  f = LENS_MM / SENSOR_MM * records.IMAGE_SIZE
  c = (records.IMAGE_SIZE - 1) / 2.0  # Image centre, pixel centres at integers.
  return np.array([[f, 0.0, c], [0.0, f, c], [0.0, 0.0, 1.0]])


def field_of_view():
  """The renders' field of view in degrees (horizontal = vertical)."""
  return math.degrees(2.0 * math.atan(SENSOR_MM / 2.0 / LENS_MM))


def blender_camera_pose(azimuth, elevation, in_plane, distance_ratio):
  """(4, 4) camera-to-model pose (OpenGL convention) of one 3D-R2N2 view, in model coordinates.

  Replays lib/blender_renderer.py's scene graph: camera at (ratio * 1.75, 0, 0) with local
  euler ZXY (0, 90, 90) degrees (Blender's ZXY matrix is Ry @ Rx @ Rz), parented to an empty
  with euler XYZ (-in_plane, -elevation, -azimuth) (matrix Rz @ Ry @ Rx), then expressed in the
  .obj's frame.
  """
  camera_local = _rotation("y", 90.0) @ _rotation("z", 90.0)
  parent = (_rotation("z", -azimuth) @ _rotation("y", -elevation)
            @ _rotation("x", -in_plane))
  blender_to_model = _OBJ_TO_BLENDER.T
  pose = np.eye(4)
  pose[:3, :3] = blender_to_model @ parent @ camera_local
  pose[:3, 3] = blender_to_model @ parent @ np.array([distance_ratio * MAX_CAMERA_DIST, 0, 0])
  return pose


def read_metadata(path):
  """(V, 5) float64 rows of rendering_metadata.txt: az, el, in-plane, distance ratio, fov."""
  if not os.path.isfile(path):
    raise ShapeNetError(f"missing {path}")
  rows = []
  with open(path, encoding="utf-8", errors="replace") as f:
    for line_number, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        row = [float(value) for value in line.split()]
      except ValueError:
        row = []
      if len(row) != 5 or not np.all(np.isfinite(row)):
        raise ShapeNetError(
            f"{path}:{line_number}: expected 5 numbers (azimuth elevation in-plane "
            f"distance-ratio fov), got {line.strip()!r}")
      if row[3] <= 0:
        raise ShapeNetError(f"{path}:{line_number}: distance ratio {row[3]} is not positive")
      rows.append(row)
  return np.array(rows, dtype=np.float64).reshape(-1, 5)


def read_binvox(path):
  """Reads a 32^3 binvox file.

  Returns:
    voxels: (32, 32, 32) bool, voxels[i, j, k] = cell at model (x, y, z) index (i, j, k).
    translate: (3,) float64, the grid's min corner in model coordinates.
    scale: float, the grid's side in model units.
  """
  if not os.path.isfile(path):
    raise ShapeNetError(f"missing {path}")
  try:
    with open(path, "rb") as f:
      parsed = trimesh_binvox.parse_binvox(f)
  except (ValueError, UnicodeDecodeError, IndexError) as e:
    raise ShapeNetError(f"{path}: bad binvox header ({e})") from e
  shape = tuple(int(n) for n in parsed.shape)
  n = records.VOXEL_RESOLUTION
  if shape != (n, n, n):
    raise ShapeNetError(f"{path}: dims {shape}, expected {(n, n, n)}")
  if parsed.rle_data.size % 2:
    raise ShapeNetError(f"{path}: truncated run-length data (odd byte count)")
  flat = runlength.rle_to_dense(parsed.rle_data, dtype=np.uint8)
  if flat.size != n**3:
    raise ShapeNetError(
        f"{path}: truncated or corrupt run-length data ({flat.size} cells, expected {n**3})")
  if flat.max(initial=0) > 1:
    raise ShapeNetError(f"{path}: voxel values other than 0/1")
  translate = np.asarray(parsed.translate, dtype=np.float64)
  scale = float(parsed.scale)
  if translate.shape != (3,) or not np.all(np.isfinite(translate)):
    raise ShapeNetError(f"{path}: bad translate {parsed.translate}")
  if not (np.isfinite(scale) and scale > 0):
    raise ShapeNetError(f"{path}: bad scale {scale}")
  # binvox order is [x, z, y] (y fastest): swap the last two axes to get [x, y, z].
  voxels = flat.reshape(shape).transpose(0, 2, 1).astype(bool)
  return voxels, translate, scale


def read_view(path):
  """(137, 137, 4) uint8 RGBA pixels of one PNG, and its original PIL mode."""
  if not os.path.isfile(path):
    raise ShapeNetError(f"missing {path}")
  try:
    with Image.open(path) as image:
      image.load()
      mode = image.mode
      if mode != "RGBA":
        image = image.convert("RGBA")
      pixels = np.asarray(image, dtype=np.uint8)
  except (OSError, SyntaxError, ValueError) as e:
    raise ShapeNetError(f"{path}: unreadable image ({e})") from e
  size = records.IMAGE_SIZE
  if pixels.shape != (size, size, 4):
    raise ShapeNetError(f"{path}: size {pixels.shape[1]}x{pixels.shape[0]}, expected {size}x{size}")
  return pixels, mode


def _view_names(rendering_dir, num_rows):
  """PNG names from renderings.txt, or 00.png.. when that list is absent."""
  path = os.path.join(rendering_dir, "renderings.txt")
  if not os.path.isfile(path):
    return [f"{i:02d}.png" for i in range(num_rows)]
  with open(path, encoding="utf-8", errors="replace") as f:
    names = [line.strip() for line in f if line.strip()]
  if len(names) != num_rows:
    raise ShapeNetError(
        f"{path}: {len(names)} images listed but rendering_metadata.txt has {num_rows} lines")
  return names


def load_object(rendering_root, voxel_root, synset, model_id, category):
  """Reads one object into a record example (DESIGN.md section 4).

  Returns:
    (example, modes): the example dict and the PIL modes of the PNGs that were not RGBA.
  Raises:
    ShapeNetError: a file is missing or malformed.
  """
  rendering_dir = os.path.join(rendering_root, synset, model_id, "rendering")
  metadata = read_metadata(os.path.join(rendering_dir, "rendering_metadata.txt"))
  if len(metadata) != NUM_VIEWS:
    raise ShapeNetError(
        f"{rendering_dir}/rendering_metadata.txt: {len(metadata)} views, expected {NUM_VIEWS}")
  names = _view_names(rendering_dir, len(metadata))
  voxels, translate, scale = read_binvox(os.path.join(voxel_root, synset, model_id, "model.binvox"))
  views, modes = [], []
  for name in names:
    pixels, mode = read_view(os.path.join(rendering_dir, name))
    views.append(pixels)
    if mode != "RGBA":
      modes.append(mode)

  # Model frame -> our unit-cube frame: p_ours = (p_model - centre) / scale.
  centre = translate + scale / 2.0
  poses = []
  for azimuth, elevation, in_plane, ratio, _ in metadata:
    pose = blender_camera_pose(azimuth, elevation, in_plane, ratio)
    pose[:3, 3] = (pose[:3, 3] - centre) / scale
    poses.append(pose)
  num_views = len(metadata)
  example = {
      "views": np.stack(views),
      "voxels": voxels,
      "K": np.repeat(intrinsics()[None], num_views, axis=0).astype(np.float32),
      "pose": np.stack(poses).astype(np.float32),
      "azimuth": metadata[:, 0].astype(np.float32),
      "elevation": metadata[:, 1].astype(np.float32),
      "distance": (metadata[:, 3] * MAX_CAMERA_DIST / scale).astype(np.float32),
      "fov": np.full(num_views, field_of_view(), dtype=np.float32),
      "category": category,
      "synset": synset,
      "object_id": f"{synset}/{model_id}",
      "voxel_method": VOXEL_METHOD,
  }
  return example, modes


_CONVERTED = "PNGs converted to RGBA from mode "  # Report note of an object with non-RGBA PNGs.


@dataclasses.dataclass(frozen=True)
class _ShapeNetExample:
  """Pipeline example_fn: the record of one object (item.object_id = "<synset>/<model id>")."""
  rendering_root: str
  voxel_root: str

  def __call__(self, item):
    synset, model_id = item.object_id.split("/", 1)
    example, modes = load_object(self.rendering_root, self.voxel_root, synset, model_id,
                                 item.category)
    return example, [_CONVERTED + mode for mode in sorted(set(modes))]


def resolve_classes(classes):
  """Synset ids of `classes` (ids or names, a list or a comma-separated string); None -> None."""
  if classes is None:
    return None
  if isinstance(classes, str):
    classes = classes.split(",")
  by_name = {name: synset for synset, name in SYNSET_NAMES.items()}
  by_name.update(_ALIASES)
  synsets = []
  for value in (c.strip() for c in classes):
    if not value:
      continue
    synset = value if value.isdigit() else by_name.get(value.lower())
    if synset is None:
      raise ValueError(
          f"unknown ShapeNet class {value!r}: use a synset id or one of {sorted(by_name)}")
    synsets.append(synset)
  if not synsets:
    raise ValueError("`classes` names no class")
  return sorted(set(synsets))


def _list_dirs(path):
  return sorted(e.name for e in os.scandir(path) if e.is_dir()) if os.path.isdir(path) else []


def r2n2_split(rendering_root, voxel_root, synsets=None):
  """{split: [(synset, model_id, category)]} by the 3D-R2N2 protocol over the ids on disk.

  Ids are the union of the object folders of both roots (an object with one side missing is
  then skipped and reported, not silently left out).
  """
  if synsets is None:
    synsets = sorted(set(_list_dirs(rendering_root)) | set(_list_dirs(voxel_root)))
  plan = {split: [] for split in records.SPLITS}
  for synset in synsets:
    ids = sorted(set(_list_dirs(os.path.join(rendering_root, synset)))
                 | set(_list_dirs(os.path.join(voxel_root, synset))))
    category = SYNSET_NAMES.get(synset, synset)
    num_train = int(len(ids) * TRAIN_FRACTION)
    num_validation = int(num_train * VALIDATION_FRACTION)
    portions = {
        "train": ids[:num_train - num_validation],
        "validation": ids[num_train - num_validation:num_train],
        "test": ids[num_train:],
    }
    for split, split_ids in portions.items():
      plan[split].extend((synset, i, category) for i in split_ids)
  return plan


def pix2vox_split(json_path, synsets=None):
  """{split: [(synset, model_id, category)]} from a Pix2Vox-style ShapeNet.json."""
  try:
    with open(json_path, encoding="utf-8") as f:
      taxonomies = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise ValueError(f"cannot read split file {json_path}: {e}") from e
  if not isinstance(taxonomies, list):
    raise ValueError(f"{json_path}: expected a list of taxonomies, got {type(taxonomies).__name__}")
  plan = {split: [] for split in records.SPLITS}
  for index, taxonomy in enumerate(taxonomies):
    missing = {"taxonomy_id", "train", "val", "test"} - set(taxonomy)
    if missing:
      raise ValueError(f"{json_path}: taxonomy #{index} lacks {sorted(missing)}")
    synset = str(taxonomy["taxonomy_id"])
    if synsets is not None and synset not in synsets:
      continue
    category = SYNSET_NAMES.get(synset, taxonomy.get("taxonomy_name") or synset)
    for split, key in (("train", "train"), ("validation", "val"), ("test", "test")):
      plan[split].extend((synset, str(i), category) for i in taxonomy[key])
  return plan


def build_shapenet(rendering_dir, voxel_dir, data_dir, split="r2n2", classes=None, workers=None,
                   beam=False, beam_options=None):
  """Imports ShapeNetRendering + ShapeNetVox32 as the TFDS dataset `shapenet_r2n2`.

  Args:
    rendering_dir: the ShapeNetRendering folder (<synset>/<id>/rendering/...).
    voxel_dir: the ShapeNetVox32 folder (<synset>/<id>/model.binvox).
    data_dir: TFDS data dir; the dataset lands in data_dir/shapenet_r2n2/<version>.
    split: "r2n2" (sorted ids, 80% train / 20% test, validation = last 5% of train) or the path
      of a Pix2Vox-style json.
    classes: synset ids or names to keep (list or comma-separated string); None keeps all.
    workers: processes reading objects (default: all cores; 1 reads in this process), the
      shared pipeline's (data_prep.pipeline.build_examples; objects go straight to the writer).
    beam, beam_options: read and write with Apache Beam instead (see pipeline.build_examples).
  Returns:
    (dataset_dir, report): report holds counts per split and category, the skipped objects with
    reasons, the objects whose PNGs were converted, the seconds taken, and "text" (the
    pipeline's report); it is also written as report.json / report.txt beside dataset_dir.
  Raises:
    ValueError: bad arguments or split file; RuntimeError: no object could be read.
    FileExistsError: the dataset already exists.
  """
  start = time.time()
  for path in (rendering_dir, voxel_dir):
    if not os.path.isdir(path):
      raise ValueError(f"not a directory: {path}")
  synsets = resolve_classes(classes)
  if split == "r2n2":
    plan = r2n2_split(rendering_dir, voxel_dir, synsets)
  else:
    plan = pix2vox_split(split, synsets)
  planned = sum(len(v) for v in plan.values())
  if not planned:
    raise RuntimeError(f"no objects found under {rendering_dir} / {voxel_dir} for classes "
                       f"{synsets or 'all'} and split {split!r}")
  version_dir = pipeline.dataset_path(data_dir, DATASET_NAME)
  if os.path.exists(version_dir):
    raise FileExistsError(f"{version_dir} already exists; remove it or choose another data_dir")

  items = []
  for split_name in records.SPLITS:
    for synset, model_id, category in plan[split_name]:
      object_id = f"{synset}/{model_id}"
      items.append(pipeline.Item(object_id=object_id, category=category, synset=synset,
                                 split=split_name, source=object_id))
  seen = set()
  for item in items:
    if item.object_id in seen:
      raise ValueError(f"{split}: object {item.object_id} is listed more than once")
    seen.add(item.object_id)
  try:
    dataset_dir, build = pipeline.build_examples(
        DATASET_NAME, None, data_dir, items, _ShapeNetExample(str(rendering_dir), str(voxel_dir)),
        workers=workers, cache=False, beam=beam, beam_options=beam_options,
        description="3D-R2N2 ShapeNet (ShapeNetRendering + ShapeNetVox32), imported by "
                    "data_prep.shapenet")
  except pipeline.NothingUsable as e:
    raise pipeline.NothingUsable(f"no usable ShapeNet object: {e}", e.report) from None

  counts = {s: {} for s in records.SPLITS}
  for split_name, members in build.by_split.items():
    for item in members:
      counts[split_name][item.category] = counts[split_name].get(item.category, 0) + 1
  outcomes = build.outcomes
  report = {
      "dataset_dir": dataset_dir,
      "rendering_dir": str(rendering_dir),
      "voxel_dir": str(voxel_dir),
      "split": str(split),
      "classes": synsets,
      "counts": counts,
      "totals": {s: sum(c.values()) for s, c in counts.items()},
      "splits_written": sorted(s for s, members in build.by_split.items() if members),
      "skipped": [{"object_id": it.object_id, "split": it.split,
                   "reason": "; ".join(outcomes[it.object_id].notes)}
                  for it in items if outcomes[it.object_id].status != "ok"],
      "converted_views": {
          it.object_id: [n[len(_CONVERTED):] for n in outcomes[it.object_id].notes
                         if n.startswith(_CONVERTED)]
          for it in items if outcomes[it.object_id].status == "ok"
          and any(n.startswith(_CONVERTED) for n in outcomes[it.object_id].notes)},
      "seconds": time.time() - start,
  }
  report_dir = os.path.dirname(dataset_dir)
  with open(os.path.join(report_dir, "report.json"), "w", encoding="utf-8") as f:
    json.dump(report, f, indent=1)
  with open(os.path.join(report_dir, "report.txt"), "w", encoding="utf-8") as f:
    f.write(build.text)
  report["text"] = build.text
  return dataset_dir, report
