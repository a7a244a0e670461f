"""Renders and voxels agree with the record camera convention (DESIGN.md section 4)."""

import numpy as np
import pytest
import scipy.ndimage
import trimesh

from data_prep import meshes, procedural, records, render, voxelize

pytestmark = pytest.mark.slow  # Renders with EGL (pyrender): not in the fast tier.

NUM_VIEWS = 4


def _meshes():
  rng = np.random.default_rng(3)
  out = {
      "box": trimesh.creation.box((1.0, 0.6, 0.4)),
      "cylinder": trimesh.creation.cylinder(0.3, 1.0),
      "annulus": trimesh.creation.annulus(0.25, 0.5, 0.3),
  }
  for category in ("chair", "lamp", "table", "bookshelf", "cabinet"):
    out[category] = procedural.generate(category, rng)
  return {k: meshes.prepare_mesh(m)[0] for k, m in out.items()}


@pytest.fixture(scope="module")
def rendered():
  """{name: (mesh, voxels, method, render dict)} for a few meshes."""
  out = {}
  for i, (name, mesh) in enumerate(_meshes().items()):
    vox, method = voxelize.voxelize(mesh)
    out[name] = (mesh, vox, method, render.render_views(mesh, NUM_VIEWS, np.random.default_rng(i)))
  return out


def _voxel_silhouette(vox, K, pose, sub=4):
  """Boolean (137, 137) image covered by the occupied cells (each sampled sub^3 times)."""
  centres = voxelize.cell_centres()[np.argwhere(vox)]
  offsets = np.stack(np.meshgrid(*[np.linspace(-0.49, 0.49, sub)] * 3, indexing="ij"), -1)
  points = (centres[:, None, :] + offsets.reshape(1, -1, 3) / voxelize.RES).reshape(-1, 3)
  uv, _ = render.project(points, K.astype(np.float64), pose.astype(np.float64))
  uv = np.round(uv).astype(int)
  inside = np.all((uv >= 0) & (uv < records.IMAGE_SIZE), axis=1)
  sil = np.zeros((records.IMAGE_SIZE,) * 2, bool)
  sil[uv[inside, 1], uv[inside, 0]] = True
  return sil


def test_record_fields(rendered):
  _, _, _, r = rendered["box"]
  assert r["views"].shape == (NUM_VIEWS, 137, 137, 4) and r["views"].dtype == np.uint8
  for key, shape in (("K", (3, 3)), ("pose", (4, 4))):
    assert r[key].shape == (NUM_VIEWS,) + shape and r[key].dtype == np.float32
  for key in ("azimuth", "elevation", "distance", "fov"):
    assert r[key].shape == (NUM_VIEWS,) and r[key].dtype == np.float32
  # Azimuths evenly spaced, elevations in range, camera at `distance` looking at the origin.
  steps = np.diff(np.sort(r["azimuth"]))
  np.testing.assert_allclose(steps, 360 / NUM_VIEWS, atol=1e-3)
  assert np.all((r["elevation"] >= render.ELEVATION_RANGE[0]) &
                (r["elevation"] <= render.ELEVATION_RANGE[1]))
  for pose, dist in zip(r["pose"], r["distance"]):
    np.testing.assert_allclose(np.linalg.norm(pose[:3, 3]), dist, rtol=1e-5)
    np.testing.assert_allclose(pose[:3, :3] @ pose[:3, :3].T, np.eye(3), atol=1e-5)
    forward = -pose[:3, 2]  # The camera looks down -Z.
    np.testing.assert_allclose(forward, -pose[:3, 3] / dist, atol=1e-5)
  np.testing.assert_allclose(r["K"][0, :2, 2], [68.0, 68.0])
  f = 68.5 / np.tan(np.radians(r["fov"][0] / 2))
  np.testing.assert_allclose(r["K"][0, [0, 1], [0, 1]], [f, f], rtol=1e-5)


def test_known_point_lands_on_its_pixel():
  """A red ball above a grey box appears exactly where the convention projects it."""
  box = trimesh.creation.box((1.0, 0.5, 0.3))
  box.visual.face_colors = [128, 128, 128, 255]
  ball = trimesh.creation.icosphere(subdivisions=3, radius=0.08)
  ball.apply_translation([0.35, 0.4, 0.1])  # Cameras look down on it: never hidden.
  ball.visual.face_colors = [255, 0, 0, 255]
  mesh, _ = meshes.prepare_mesh(trimesh.util.concatenate([box, ball]))
  ball_centre = np.asarray(ball.vertices.mean(0))
  lo, hi = trimesh.util.concatenate([box, ball]).bounds
  ball_centre = (ball_centre - (lo + hi) / 2) / (hi - lo).max()
  r = render.render_views(mesh, 8, np.random.default_rng(0))
  red = (r["views"][..., 0] > 150) & (r["views"][..., 1] < 60) & (r["views"][..., 3] > 0)
  for view_red, K, pose in zip(red, r["K"], r["pose"]):
    assert view_red.sum() > 50
    uv, _ = render.project(ball_centre[None], K.astype(float), pose.astype(float))
    rows, cols = np.nonzero(view_red)
    # The visible ball is a disc around the projected centre (perspective shifts it by well
    # under a pixel here); a half-pixel or flipped-axis error would show.
    assert abs(cols.mean() - uv[0, 0]) < 0.5 and abs(rows.mean() - uv[0, 1]) < 0.5, (
        uv, cols.mean(), rows.mean())


@pytest.mark.parametrize("name", ["box", "cylinder", "annulus", "chair", "lamp", "table",
                                  "bookshelf", "cabinet"])
def test_voxel_silhouette_matches_alpha(rendered, name):
  """The occupied cells, projected with the record's K and pose, cover the alpha mask and reach
  at most one cell beyond it; for bulky shapes the silhouettes' IoU is high."""
  mesh, vox, _, r = rendered[name]
  for view, K, pose, dist in zip(r["views"], r["K"], r["pose"], r["distance"]):
    mask = view[..., 3] >= 128
    sil = _voxel_silhouette(vox, K, pose)
    assert (mask & sil).sum() >= 0.99 * mask.sum(), name
    # One cell's diagonal seen from the nearest possible depth, in pixels.
    cell_px = K[0, 0] * np.sqrt(3) / voxelize.RES / (dist - np.sqrt(3) / 2)
    radius = int(np.ceil(cell_px)) + 1
    disk = np.hypot(*np.mgrid[-radius:radius + 1, -radius:radius + 1]) <= radius
    assert np.all(sil <= scipy.ndimage.binary_dilation(mask, disk)), name
    if name in ("box", "cylinder", "annulus", "cabinet"):
      # Thin parts (lamp poles, table tops) are fatter in 32^3 cells, so IoU is for bulky shapes.
      iou = (mask & sil).sum() / (mask | sil).sum()
      assert iou > 0.75, (name, iou)


def test_object_inside_centre_crop(rendered):
  border = (records.IMAGE_SIZE - records.CROP_SIZE) // 2
  for name, (_, _, _, r) in rendered.items():
    alpha = r["views"][..., 3]
    assert alpha.max() == 255
    inner = alpha[:, border:-border, border:-border]
    assert alpha.sum() == inner.sum(), name
    assert np.all(r["views"][alpha == 0][:, :3] == 0)  # Transparent background.


def test_closed_mesh_voxels_are_solid():
  mesh, _ = meshes.prepare_mesh(trimesh.creation.box((1.0, 0.6, 0.4)))
  vox, method = voxelize.voxelize(mesh)
  assert method == "parity"
  c = voxelize.cell_centres()
  x, y, z = np.meshgrid(c, c, c, indexing="ij")
  inside = (np.abs(x) < 0.5) & (np.abs(y) < 0.3) & (np.abs(z) < 0.2)
  assert np.all(vox[inside])  # Every interior cell is filled.
  # Nothing is filled more than one cell beyond the surface.
  grown = (np.abs(x) < 0.5 + 1 / 32) & (np.abs(y) < 0.3 + 1 / 32) & (np.abs(z) < 0.2 + 1 / 32)
  assert not np.any(vox & ~grown)


def test_sphere_volume():
  mesh, _ = meshes.prepare_mesh(trimesh.creation.icosphere(subdivisions=4))
  vox, method = voxelize.voxelize(mesh)
  assert method == "parity"
  expected = 4 / 3 * np.pi * 0.5**3 * voxelize.RES**3
  assert 0.95 * expected < vox.sum() < 1.2 * expected  # Surface cells add a little.


def test_overlapping_closed_parts_are_filled():
  """Parity on the union of overlapping parts would empty the overlap; per part it does not."""
  a = trimesh.creation.box((1.0, 0.4, 0.4))
  b = trimesh.creation.box((0.4, 1.0, 0.4))
  mesh, _ = meshes.prepare_mesh(trimesh.util.concatenate([a, b]))
  vox, method = voxelize.voxelize(mesh)
  assert method == "parity"
  assert vox[14:18, 14:18, 14:18].all()  # The centre lies in both boxes.


def test_open_and_unwelded_meshes():
  # A cup (box without its top face): surface cells only, the inside stays empty.
  box = trimesh.creation.box((1.0, 1.0, 1.0))
  top = box.face_normals[:, 1] > 0.5
  cup, _ = meshes.prepare_mesh(trimesh.Trimesh(box.vertices, box.faces[~top]))
  vox, method = voxelize.voxelize(cup)
  assert method == "surface_fill_holes"
  assert vox[0, 16, 16] and vox[16, 0, 16] and not vox[16, 16, 16]
  assert not vox[10:22, 10:22, 10:22].any()
  # A closed box whose triangles share no vertices is not watertight: holes are filled.
  soup = trimesh.Trimesh(box.vertices[box.faces].reshape(-1, 3),
                         np.arange(len(box.faces) * 3).reshape(-1, 3), process=False)
  mesh, _ = meshes.prepare_mesh(soup)
  vox, method = voxelize.voxelize(mesh)
  assert method == "surface_fill_holes"
  assert vox.all()


@pytest.mark.parametrize("name", ["cylinder", "annulus", "sphere"])
def test_parity_fill_agrees_with_trimesh_contains(name):
  """The vectorised column scan gives trimesh's ray-containment answer at the cell centres."""
  mesh = {"cylinder": trimesh.creation.cylinder(0.3, 1.0),
          "annulus": trimesh.creation.annulus(0.25, 0.5, 0.3),
          "sphere": trimesh.creation.icosphere(subdivisions=3)}[name]
  mesh, _ = meshes.prepare_mesh(mesh)
  c = voxelize.cell_centres()
  idx = np.random.default_rng(0).integers(0, voxelize.RES, (3000, 3))  # Keeps the test fast.
  expected = mesh.contains(c[idx])
  np.testing.assert_array_equal(voxelize.parity_fill(mesh)[idx[:, 0], idx[:, 1], idx[:, 2]],
                                expected)
  assert 0.1 < expected.mean() < 0.9


def test_renderers_of_several_sizes_keep_working_side_by_side():
  """pyrender's delete() terminates the process's EGL display under every other renderer; none of
  data_prep's or visualize's renderers is ever deleted, so all sizes work in any order (deleting
  the previous size's renderer broke the others: GLError 12296 at eglMakeCurrent)."""
  import gc  # pylint: disable=g-import-not-at-top
  from r2n2_jax import visualize  # pylint: disable=g-import-not-at-top
  mesh = meshes.prepare_mesh(trimesh.creation.box((1.0, 0.6, 0.4)))[0]
  voxels = np.zeros((8, 8, 8), bool)
  voxels[2:6, 2:6, 3:5] = True
  first = render.render_views(mesh, 1, np.random.default_rng(0))["views"]
  small = visualize.render_voxels(voxels, size=64)
  for size in (96, 160):
    assert render.render_views(mesh, 1, np.random.default_rng(0), size=size)["views"][0, ..., 3].any()
    assert visualize.render_voxels(voxels, size=size).std() > 0
  gc.collect()
  np.testing.assert_array_equal(render.render_views(mesh, 1, np.random.default_rng(0))["views"], first)
  np.testing.assert_array_equal(visualize.render_voxels(voxels, size=64), small)
