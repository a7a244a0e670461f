"""Pictures of results: voxel grids rendered as shaded cubes, galleries, IoU curves and bar charts.

Voxel grids are rendered offscreen with pyrender (EGL unless PYOPENGL_PLATFORM says otherwise;
pyrender is imported on the first rendering, after `process_setup.headless_rendering`). Charts
are matplotlib `Figure`s saved straight to PNG, without pyplot or a process-wide backend switch,
so nothing needs a display and importing this module changes nothing in the process.
"""

from matplotlib.figure import Figure
import numpy as np
import trimesh

from data_prep import render
from r2n2_jax import metrics
from r2n2_jax import process_setup

RENDER_SIZE = 192  # Pixels of a rendered voxel grid.
VOXEL_COLOUR = (0.55, 0.65, 0.85, 1.0)
BACKGROUND = (1.0, 1.0, 1.0, 1.0)


def voxel_boxes(voxels):
  """One box per occupied cell of a (R, R, R) bool grid, in the unit cube; None if empty.

  Cell (i, j, k) is centred at -0.5 + (ijk + 0.5) / R, +y up (DESIGN.md section 4).
  """
  voxels = np.asarray(voxels, bool)
  if not voxels.any():
    return None
  resolution = voxels.shape[0]
  transform = trimesh.transformations.scale_and_translate(
      1.0 / resolution, [-0.5 + 0.5 / resolution] * 3)
  return trimesh.voxel.VoxelGrid(voxels, transform=transform).as_boxes()


def _look_at(azimuth, elevation, distance):
  """Camera-to-world pose (OpenGL convention) on a sphere around the origin, +y up."""
  az, el = np.radians(azimuth), np.radians(elevation)
  eye = distance * np.array([np.cos(el) * np.sin(az), np.sin(el), np.cos(el) * np.cos(az)])
  back = eye / np.linalg.norm(eye)
  right = np.cross([0.0, 1.0, 0.0], back)
  right /= np.linalg.norm(right)
  pose = np.eye(4)
  pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = right, np.cross(back, right), back, eye
  return pose


def _pyrender():
  process_setup.headless_rendering()  # Must precede PyOpenGL's first import.
  import pyrender  # pylint: disable=import-outside-toplevel
  return pyrender


def render_voxels(voxels, size=RENDER_SIZE, azimuth=35.0, elevation=25.0):
  """Renders a (R, R, R) bool grid as flat-shaded cubes -> (size, size, 3) uint8 image."""
  pyrender = _pyrender()
  scene = pyrender.Scene(bg_color=BACKGROUND, ambient_light=(0.35, 0.35, 0.35))
  boxes = voxel_boxes(voxels)
  if boxes is not None:
    material = pyrender.MetallicRoughnessMaterial(baseColorFactor=VOXEL_COLOUR, metallicFactor=0.0,
                                                  roughnessFactor=0.9)
    scene.add(pyrender.Mesh.from_trimesh(boxes, material=material, smooth=False))
  pose = _look_at(azimuth, elevation, 2.2)
  scene.add(pyrender.PerspectiveCamera(yfov=np.radians(40.0)), pose=pose)
  scene.add(pyrender.DirectionalLight(intensity=3.0), pose=_look_at(azimuth - 40, 50.0, 1.0))
  colour, _ = render.renderer(size).render(scene)  # The process's renderers, never deleted.
  return np.asarray(colour[..., :3], np.uint8)


def save_iou_curves(curves, path, title=f"IoU@{metrics.IOU_THRESHOLD} vs number of views"):
  """Plots {label: {n_views: iou}} as one line each and writes a PNG."""
  fig = Figure(figsize=(5.0, 3.4), dpi=100)
  ax = fig.subplots()
  all_views = set()
  for label, curve in curves.items():
    views = sorted(int(n) for n in curve)
    all_views.update(views)
    ax.plot(views, [curve[str(n)] for n in views], marker="o", label=label)
  ax.set_xticks(sorted(all_views))  # View counts are integers.
  ax.set_ylim(0, 1)
  ax.set_xlabel("number of views")
  ax.set_ylabel(f"mean IoU @ {metrics.IOU_THRESHOLD}")
  ax.set_title(title)
  ax.grid(alpha=0.3)
  if len(curves) > 1:
    ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path)


def save_class_bars(iou_by_class, counts, path, title):
  """Bar chart of {category: iou} with the object count on each bar; writes a PNG."""
  names = sorted(iou_by_class)
  fig = Figure(figsize=(max(4.0, 0.6 * len(names) + 1.5), 3.4), dpi=100)
  ax = fig.subplots()
  bars = ax.bar(range(len(names)), [iou_by_class[n] for n in names], color="#6f8fd0")
  for bar, name in zip(bars, names):
    ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height(), f"n={counts[name]}",
            ha="center", va="bottom", fontsize=7)
  ax.set_xticks(range(len(names)))
  ax.set_xticklabels(names, rotation=45, ha="right", fontsize=8)
  ax.set_ylim(0, 1)
  ax.set_ylabel(f"mean IoU @ {metrics.IOU_THRESHOLD}")
  ax.set_title(title)
  fig.tight_layout()
  fig.savefig(path)


def save_gallery(rows, path, max_views_shown=4, pred_title="prediction"):
  """Reconstruction gallery, one object per row: input views | prediction | ground truth.

  rows: list of dicts with `views` (n, H, W, 3) float in [0, 1] or uint8, `pred` and `gt`
  (R, R, R) bool, and `label` (text shown on the left).
  """
  cols = max_views_shown + 2
  titles = [f"view {c + 1}" for c in range(max_views_shown)] + [pred_title, "ground truth"]
  fig = Figure(figsize=(1.5 * cols, 1.5 * len(rows)), dpi=100)
  axes = fig.subplots(len(rows), cols, squeeze=False)
  for r, row in enumerate(rows):
    views = row["views"][:max_views_shown]
    panels = list(views) + [None] * (max_views_shown - len(views))
    panels += [render_voxels(row["pred"]), render_voxels(row["gt"])]
    for c, (ax, image) in enumerate(zip(axes[r], panels)):
      ax.set_xticks([])
      ax.set_yticks([])
      for spine in ax.spines.values():
        spine.set_visible(image is not None)
      if image is not None:
        ax.imshow(image)
      if r == 0:
        ax.set_title(titles[c], fontsize=8)
    axes[r, 0].set_ylabel(row["label"], fontsize=7)
  fig.tight_layout()
  fig.savefig(path)
