"""Mesh loading, validation and normalisation (DESIGN.md section 5).

Every mesh source goes through `load_mesh` (a file) or `prepare_mesh` (an in-memory Trimesh):
merge multi-part scenes into one Trimesh, reject broken meshes with a `MeshError` naming the file,
cap huge meshes, and normalise (bounding box centred at the origin, longest side 1). Renders and
voxels are both made from the normalised mesh, so they share one transform.
"""

import os

import numpy as np
import trimesh

MESH_EXTENSIONS = (".obj", ".glb", ".gltf", ".ply", ".stl", ".off")
MAX_FACES = 200_000  # Meshes above this are simplified (rendering/voxelising cost ~ faces).
_MIN_EXTENT = 1e-6  # Longest bounding-box side below this is degenerate.


class MeshError(ValueError):
  """A mesh that cannot be used; `path` names the file and `reason` says why."""

  def __init__(self, path, reason):
    super().__init__(f"{path}: {reason}")
    self.path = str(path)
    self.reason = reason


def load_mesh(path, max_faces=MAX_FACES):
  """Loads, validates, caps and normalises a mesh file; returns (Trimesh, notes list of str).

  Raises MeshError(path, reason) for unreadable, empty, non-finite or degenerate meshes.
  """
  path = str(path)
  if not os.path.isfile(path):
    raise MeshError(path, "no such file")
  if os.path.getsize(path) == 0:
    raise MeshError(path, "empty file")
  try:
    loaded = trimesh.load(path, force="scene", process=False)
  except Exception as e:  # trimesh raises many types on bad files; all mean "unreadable".
    raise MeshError(path, f"unreadable ({type(e).__name__}: {e})") from e
  return prepare_mesh(loaded, path, max_faces=max_faces)


def merge_scene(scene, path):
  """Merges a trimesh Scene (all instances, transforms applied) into one Trimesh."""
  geoms = [g for g in scene.dump() if isinstance(g, trimesh.Trimesh) and len(g.faces)]
  if not geoms:
    raise MeshError(path, "no triangles in file")
  if len(geoms) == 1:
    return geoms[0]
  try:
    return trimesh.util.concatenate(geoms)
  except Exception:  # Incompatible texture visuals: fall back to per-vertex colours.
    for g in geoms:
      g.visual = g.visual.to_color()
    return trimesh.util.concatenate(geoms)


def prepare_mesh(mesh, path="<memory>", max_faces=MAX_FACES):
  """Validates, caps and normalises a Trimesh or Scene; returns (Trimesh, notes list of str)."""
  if isinstance(mesh, trimesh.Scene):
    mesh = merge_scene(mesh, path)
  if not isinstance(mesh, trimesh.Trimesh):
    raise MeshError(path, f"not a triangle mesh ({type(mesh).__name__})")
  notes = []
  vertices = np.asarray(mesh.vertices)
  if len(mesh.faces) == 0 or len(vertices) == 0:
    raise MeshError(path, "no triangles in file")
  if not np.all(np.isfinite(vertices)):
    raise MeshError(path, "non-finite (NaN/inf) vertex coordinates")
  faces = np.asarray(mesh.faces)
  if faces.min() < 0 or faces.max() >= len(vertices):
    raise MeshError(path, "face indices out of range")
  mesh.update_faces(mesh.nondegenerate_faces())
  mesh.remove_unreferenced_vertices()
  if len(mesh.faces) == 0 or mesh.area <= 0:
    raise MeshError(path, "zero surface area (all faces degenerate)")
  if mesh.extents.max() < _MIN_EXTENT:
    raise MeshError(path, f"degenerate extent {mesh.extents.max():.3g}")
  if len(mesh.faces) > max_faces:
    before = len(mesh.faces)
    mesh = simplify(mesh, max_faces)
    notes.append(f"simplified {before} -> {len(mesh.faces)} faces")
  return normalise(mesh), notes


def simplify(mesh, max_faces):
  """Quadric decimation to about max_faces faces (visuals become the mean face colour)."""
  colour = _mean_colour(mesh)
  out = mesh.simplify_quadric_decimation(face_count=max_faces)
  out.visual = trimesh.visual.ColorVisuals(out, face_colors=colour)
  return out


def _mean_colour(mesh):
  try:
    return np.asarray(mesh.visual.to_color().face_colors, np.float64).mean(0).astype(np.uint8)
  except Exception:  # Visuals that cannot become colours (e.g. broken textures): plain grey.
    return np.array([180, 180, 180, 255], np.uint8)


def normalise(mesh):
  """Centres the bounding box at the origin and scales the longest side to 1 (in place)."""
  lo, hi = mesh.bounds
  mesh.apply_translation(-(lo + hi) / 2)
  mesh.apply_scale(1.0 / (hi - lo).max())
  return mesh
