"""Procedural furniture: the default embedded dataset (no download needed).

Each object is assembled from trimesh primitives (boxes, cylinders, spheres, cones) with random
proportions, part variations (armrests or not, round or square tops, number of shelves, legs or a
pedestal, ...) and a random colour per part. `ensure_procedural_dataset` renders and voxelises
them with the shared pipeline (data_prep.pipeline) into a TFDS dataset.
"""

import numpy as np
import trimesh

from data_prep import meshes, pipeline

DATASET_NAME = "procedural_furniture"
_PALETTES = {  # Base colours (RGB) per material; every part gets a jittered one.
    "wood": [(150, 100, 60), (190, 140, 90), (110, 70, 40), (210, 180, 140)],
    "fabric": [(60, 90, 160), (170, 50, 50), (70, 130, 80), (120, 120, 125), (200, 170, 90)],
    "metal": [(60, 60, 65), (170, 170, 175), (200, 190, 160)],
    "paint": [(235, 235, 230), (40, 40, 45), (220, 200, 60), (90, 160, 200)],
}


class _Builder:
  """Collects coloured primitive parts (y up, floor at y = 0, object roughly unit-sized)."""

  def __init__(self, rng):
    self.rng = rng
    self.parts = []
    self.colours = {k: np.array(v[rng.integers(len(v))], float) for k, v in _PALETTES.items()}

  def colour(self, material):
    rgb = np.clip(self.colours[material] + self.rng.normal(0, 12, 3), 0, 255)
    return np.append(rgb, 255).astype(np.uint8)

  def _add(self, mesh, material):
    mesh.visual.face_colors = self.colour(material)
    self.parts.append(mesh)

  def box(self, centre, size, material):
    self._add(trimesh.creation.box(extents=size,
                                   transform=trimesh.transformations.translation_matrix(centre)),
              material)

  def cylinder(self, centre, radius, height, material, axis="y", sections=24):
    rot = {"y": trimesh.transformations.rotation_matrix(np.pi / 2, [1, 0, 0]),
           "x": trimesh.transformations.rotation_matrix(np.pi / 2, [0, 1, 0]),
           "z": np.eye(4)}[axis]
    m = trimesh.creation.cylinder(radius=radius, height=height, sections=sections, transform=rot)
    m.apply_translation(centre)
    self._add(m, material)

  def sphere(self, centre, radius, material):
    m = trimesh.creation.icosphere(subdivisions=2, radius=radius)
    m.apply_translation(centre)
    self._add(m, material)

  def cone(self, base_centre, radius, height, material):
    m = trimesh.creation.cone(radius=radius, height=height, sections=24,
                              transform=trimesh.transformations.rotation_matrix(-np.pi / 2,
                                                                                [1, 0, 0]))
    m.apply_translation(base_centre)
    self._add(m, material)

  def legs(self, w, d, h, t, material, inset=0.0, round_legs=False):
    """Four legs of thickness t and height h under a w x d footprint (centred at the origin)."""
    for sx in (-1, 1):
      for sz in (-1, 1):
        c = (sx * (w / 2 - t / 2 - inset), h / 2, sz * (d / 2 - t / 2 - inset))
        if round_legs:
          self.cylinder(c, t / 2, h, material, sections=12)
        else:
          self.box(c, (t, h, t), material)

  def mesh(self):
    return trimesh.util.concatenate(self.parts)


def _u(rng, lo, hi):
  return float(rng.uniform(lo, hi))


def _chair(b, rng):
  w, d = _u(rng, 0.4, 0.6), _u(rng, 0.4, 0.6)
  seat_h, seat_t = _u(rng, 0.4, 0.5), _u(rng, 0.04, 0.08)
  mat = "wood" if rng.random() < 0.5 else "metal"
  if rng.random() < 0.75:
    b.legs(w, d, seat_h, _u(rng, 0.03, 0.06), mat, round_legs=rng.random() < 0.5)
  else:  # Office chair: pedestal and star base.
    b.cylinder((0, seat_h / 2, 0), 0.03, seat_h, "metal")
    for a in range(5):
      ang = 2 * np.pi * a / 5
      b.box((0.15 * np.cos(ang), 0.03, 0.15 * np.sin(ang)), (0.06, 0.04, 0.06), "metal")
      b.box((0.08 * np.cos(ang), 0.03, 0.08 * np.sin(ang)), (0.04, 0.03, 0.04), "metal")
  b.box((0, seat_h + seat_t / 2, 0), (w, seat_t, d), "fabric")
  back_h = _u(rng, 0.35, 0.6)
  back_t = _u(rng, 0.03, 0.07)
  if rng.random() < 0.6:  # Solid back.
    b.box((0, seat_h + seat_t + back_h / 2, -d / 2 + back_t / 2), (w, back_h, back_t), "fabric")
  else:  # Slatted back.
    n = int(rng.integers(2, 6))
    for k in range(n):
      x = -w / 2 + 0.03 + k * (w - 0.06) / (n - 1)
      b.box((x, seat_h + seat_t + back_h / 2, -d / 2 + 0.02), (0.03, back_h, 0.03), mat)
    b.box((0, seat_h + seat_t + back_h - 0.03, -d / 2 + 0.02), (w, 0.06, 0.04), mat)
  if rng.random() < 0.4:  # Armrests.
    arm_h = _u(rng, 0.15, 0.25)
    for s in (-1, 1):
      b.box((s * (w / 2 - 0.025), seat_h + seat_t + arm_h, 0), (0.05, 0.04, d * 0.9), mat)
      b.box((s * (w / 2 - 0.025), seat_h + seat_t + arm_h / 2, d / 2 - 0.05), (0.04, arm_h, 0.04),
            mat)


def _table(b, rng):
  h, t = _u(rng, 0.6, 0.8), _u(rng, 0.03, 0.07)
  if rng.random() < 0.35:  # Round top.
    r = _u(rng, 0.35, 0.6)
    b.cylinder((0, h - t / 2, 0), r, t, "wood", sections=32)
    w = d = 1.2 * r
  else:
    w, d = _u(rng, 0.8, 1.6), _u(rng, 0.5, 0.9)
    b.box((0, h - t / 2, 0), (w, t, d), "wood")
  if rng.random() < 0.3:  # Pedestal.
    b.cylinder((0, (h - t) / 2, 0), _u(rng, 0.04, 0.08), h - t, "metal")
    b.cylinder((0, 0.02, 0), _u(rng, 0.2, 0.3), 0.04, "metal")
  else:
    b.legs(w * 0.95, d * 0.95, h - t, _u(rng, 0.04, 0.08), "wood", inset=_u(rng, 0, 0.05),
           round_legs=rng.random() < 0.4)
    if rng.random() < 0.4:  # Lower shelf.
      b.box((0, h * 0.25, 0), (w * 0.85, 0.03, d * 0.85), "wood")


def _lamp(b, rng):
  h = _u(rng, 0.8, 1.6)
  base_r = _u(rng, 0.1, 0.2)
  if rng.random() < 0.5:
    b.cylinder((0, 0.02, 0), base_r, 0.04, "metal")
  else:
    b.box((0, 0.03, 0), (2 * base_r, 0.06, 2 * base_r), "metal")
  b.cylinder((0, h / 2, 0), _u(rng, 0.01, 0.025), h, "metal", sections=12)
  shade_r, shade_h = _u(rng, 0.12, 0.3), _u(rng, 0.12, 0.3)
  if rng.random() < 0.5:
    b.cone((0, h - shade_h * 0.3, 0), shade_r, shade_h, "paint")
  elif rng.random() < 0.5:
    b.cylinder((0, h, 0), shade_r, shade_h, "paint")
  else:
    b.sphere((0, h, 0), shade_r * 0.8, "paint")


def _sofa(b, rng):
  w, d = _u(rng, 1.4, 2.2), _u(rng, 0.7, 0.95)
  seat_h = _u(rng, 0.35, 0.45)
  foot = _u(rng, 0.0, 0.1)
  if foot > 0.03:
    b.legs(w, d, foot, 0.05, "wood")
  b.box((0, foot + (seat_h - foot) / 2, 0), (w, seat_h - foot, d), "fabric")
  back_h, back_t = _u(rng, 0.3, 0.5), _u(rng, 0.12, 0.25)
  b.box((0, seat_h + back_h / 2, -d / 2 + back_t / 2), (w, back_h, back_t), "fabric")
  n = int(rng.integers(1, 4))  # Seat cushions.
  for k in range(n):
    cw = (w - 0.1) / n
    b.box((-w / 2 + 0.05 + cw * (k + 0.5), seat_h + 0.05, back_t / 2), (cw * 0.95, 0.1,
                                                                     d - back_t), "fabric")
  if rng.random() < 0.8:  # Armrests.
    arm_w, arm_h = _u(rng, 0.1, 0.25), _u(rng, 0.15, 0.3)
    for s in (-1, 1):
      b.box((s * (w / 2 - arm_w / 2), foot + (seat_h - foot + arm_h) / 2, 0),
            (arm_w, seat_h - foot + arm_h, d), "fabric")


def _bed(b, rng):
  w, l = _u(rng, 1.0, 1.8), _u(rng, 1.9, 2.2)
  frame_h = _u(rng, 0.2, 0.35)
  b.box((0, frame_h / 2 + 0.05, 0), (w, frame_h, l), "wood")
  b.legs(w, l, 0.05, 0.08, "wood")
  mat_h = _u(rng, 0.15, 0.3)
  b.box((0, 0.05 + frame_h + mat_h / 2, 0), (w * 0.96, mat_h, l * 0.97), "paint")
  head_h = _u(rng, 0.4, 0.9)
  b.box((0, (0.05 + frame_h + head_h) / 2, -l / 2 - 0.03), (w, 0.05 + frame_h + head_h, 0.06),
        "wood")
  if rng.random() < 0.5:  # Footboard.
    foot_h = _u(rng, 0.05, 0.3)
    b.box((0, (0.05 + frame_h + foot_h) / 2, l / 2 + 0.03), (w, 0.05 + frame_h + foot_h, 0.06),
          "wood")
  for s in ((-1, 1) if rng.random() < 0.6 else (0,)):  # Pillows.
    b.box((s * w / 4 if s else 0, 0.05 + frame_h + mat_h + 0.05, -l / 2 + 0.25),
          (w * (0.4 if s else 0.8), 0.1, 0.3), "fabric")


def _bookshelf(b, rng):
  w, d, h = _u(rng, 0.5, 1.2), _u(rng, 0.25, 0.4), _u(rng, 0.8, 2.0)
  t = _u(rng, 0.02, 0.04)
  for s in (-1, 1):
    b.box((s * (w / 2 - t / 2), h / 2, 0), (t, h, d), "wood")
  n = int(rng.integers(2, 7))
  for k in range(n + 1):
    b.box((0, t / 2 + k * (h - t) / n, 0), (w - 2 * t, t, d), "wood")
  if rng.random() < 0.6:  # Back panel.
    b.box((0, h / 2, -d / 2 + t / 4), (w, h, t / 2), "wood")
  for k in range(n):  # Some books.
    if rng.random() < 0.5:
      bw = _u(rng, 0.1, w - 2 * t - 0.05)
      bh = _u(rng, 0.4, 0.8) * (h - t) / n
      b.box((-w / 2 + t + bw / 2 + 0.01, t + k * (h - t) / n + bh / 2, 0), (bw, bh, d * 0.8),
            "fabric")


def _cabinet(b, rng):
  w, d, h = _u(rng, 0.5, 1.4), _u(rng, 0.35, 0.6), _u(rng, 0.5, 1.4)
  foot = _u(rng, 0.0, 0.15)
  if foot > 0.04:
    b.legs(w, d, foot, 0.05, "metal", round_legs=True)
  b.box((0, foot + h / 2, 0), (w, h, d), "wood")
  if rng.random() < 0.5:  # Drawers.
    n = int(rng.integers(2, 6))
    for k in range(n):
      y = foot + (k + 0.5) * h / n
      b.box((0, y, d / 2 + 0.01), (w * 0.9, h / n * 0.85, 0.02), "paint")
      b.box((0, y, d / 2 + 0.03), (0.12, 0.02, 0.02), "metal")
  else:  # Doors.
    n = int(rng.integers(1, 3))
    for k in range(n):
      x = -w / 2 + (k + 0.5) * w / n
      b.box((x, foot + h / 2, d / 2 + 0.01), (w / n * 0.94, h * 0.94, 0.02), "paint")
      b.box((x + (0.35 if k == 0 else -0.35) * w / n, foot + h / 2, d / 2 + 0.03),
            (0.02, 0.12, 0.02), "metal")


def _stool(b, rng):
  h = _u(rng, 0.45, 0.8)
  round_seat = rng.random() < 0.6
  r = _u(rng, 0.15, 0.22)
  if round_seat:
    b.cylinder((0, h - 0.025, 0), r, 0.05, "wood")
  else:
    b.box((0, h - 0.025, 0), (2 * r, 0.05, 2 * r), "wood")
  n = int(rng.choice([3, 4]))
  spread = _u(rng, 0.8, 1.3) * r
  for k in range(n):
    ang = 2 * np.pi * k / n + np.pi / 4
    b.cylinder((spread * 0.8 * np.cos(ang), (h - 0.05) / 2, spread * 0.8 * np.sin(ang)), 0.02,
               h - 0.05, "metal" if rng.random() < 0.5 else "wood", sections=10)
  if rng.random() < 0.5:  # Foot ring.
    b.cylinder((0, h * 0.3, 0), spread * 0.8, 0.02, "metal", sections=24)


def _bench(b, rng):
  w, d = _u(rng, 1.0, 1.8), _u(rng, 0.3, 0.45)
  h = _u(rng, 0.4, 0.5)
  n = int(rng.integers(1, 4))  # Slats.
  for k in range(n):
    b.box((0, h - 0.02, -d / 2 + (k + 0.5) * d / n), (w, 0.04, d / n * 0.9), "wood")
  if rng.random() < 0.5:
    b.legs(w * 0.9, d, h - 0.04, 0.05, "metal")
  else:  # Panel ends.
    for s in (-1, 1):
      b.box((s * (w / 2 - 0.1), (h - 0.04) / 2, 0), (0.05, h - 0.04, d), "wood")
  if rng.random() < 0.4:  # Backrest.
    back_h = _u(rng, 0.25, 0.45)
    for s in (-1, 1):
      b.box((s * (w / 2 - 0.1), h + back_h / 2, -d / 2 + 0.02), (0.05, back_h, 0.04), "metal")
    b.box((0, h + back_h - 0.08, -d / 2 + 0.02), (w, 0.14, 0.04), "wood")


def _desk(b, rng):
  w, d, h = _u(rng, 1.0, 1.6), _u(rng, 0.5, 0.8), _u(rng, 0.7, 0.78)
  b.box((0, h - 0.02, 0), (w, 0.04, d), "wood")
  pw = _u(rng, 0.3, 0.45)
  sides = (-1, 1) if rng.random() < 0.4 else (int(rng.choice([-1, 1])),)
  for s in sides:  # Drawer pedestal(s).
    b.box((s * (w / 2 - pw / 2), (h - 0.04) / 2, 0), (pw, h - 0.04, d * 0.95), "paint")
  if len(sides) == 1:
    b.box((-sides[0] * (w / 2 - 0.02), (h - 0.04) / 2, 0), (0.04, h - 0.04, d * 0.95), "wood")
  if rng.random() < 0.5:  # Monitor.
    mw = _u(rng, 0.4, 0.7)
    b.box((0, h + 0.15, -d / 4), (0.04, 0.3, 0.04), "metal")
    b.box((0, h + 0.3, -d / 4 + 0.03), (mw, mw * 0.6, 0.03), "metal")


CATEGORIES = {
    "chair": _chair, "table": _table, "lamp": _lamp, "sofa": _sofa, "bed": _bed,
    "bookshelf": _bookshelf, "cabinet": _cabinet, "stool": _stool, "bench": _bench,
    "desk": _desk,
}


def category_of(index):
  """Category of object `index` (cycling through CATEGORIES keeps them balanced)."""
  names = sorted(CATEGORIES)
  return names[index % len(names)]


def generate(category, rng):
  """A random normalised Trimesh (face colours per part) of one category."""
  b = _Builder(rng)
  CATEGORIES[category](b, rng)
  mesh, _ = meshes.prepare_mesh(b.mesh(), f"<procedural {category}>")
  return mesh


def _procedural_mesh(item):
  """Pipeline loader: the object's mesh from its (seed, index) spec."""
  seed, index = item.source
  return generate(item.category, np.random.default_rng([seed, index, 0])), []


def build_procedural(data_dir, num_objects, views, seed, workers=None, beam=False,
                     beam_options=None):
  """Builds (or reuses) the procedural dataset; returns (dataset_dir, report text)."""
  categories = [category_of(i) for i in range(num_objects)]
  object_ids = [f"{c}_{i:06d}" for i, c in enumerate(categories)]
  splits = pipeline.assign_splits(object_ids, categories, seed)
  items = [pipeline.Item(object_id=o, category=c, synset="", split=s, source=(seed, i))
           for i, (o, c, s) in enumerate(zip(object_ids, categories, splits))]
  return pipeline.build_dataset(
      DATASET_NAME, config_name(num_objects, views, seed), data_dir, items, _procedural_mesh,
      views=views, seed=seed, workers=workers, beam=beam, beam_options=beam_options,
      description="Procedural furniture rendered with pyrender.")


def config_name(num_objects, views, seed):
  """The TFDS config (sub-directory) name of the procedural dataset with these settings."""
  return f"n{num_objects}_v{views}_s{seed}"


def existing_procedural_dataset(data_dir, num_objects, views, seed):
  """The built procedural dataset's directory, or None if it has not been built (builds nothing)."""
  return pipeline.existing_dataset(data_dir, DATASET_NAME, config_name(num_objects, views, seed))


def ensure_procedural_dataset(data_dir, num_objects, views, seed, workers=None):
  """Builds (first call) or reuses the procedural dataset; returns its TFDS dataset directory.

  The directory is data_dir/procedural_furniture/n{num_objects}_v{views}_s{seed}/1.0.0; splits
  80/10/10 stratified by category, deterministic from the seed; workers processes (default all
  cores) render in parallel.
  """
  return build_procedural(data_dir, num_objects, views, seed, workers)[0]
