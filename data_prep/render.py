"""Offscreen pyrender views of a normalised mesh, with the record's camera convention.

Convention (DESIGN.md section 4): `pose` is camera-to-world in OpenGL convention (the camera looks
down its -Z axis, +Y up); a world point p lands at q = inv(pose) @ p, (x, y, z) = (q.x, -q.y, -q.z),
u = K[0,0] x / z + K[0,2], v = K[1,1] y / z + K[1,2], with integer (u, v) the centre of pixel
column u / row v of the 137x137 image.
"""

import os

import numpy as np

from data_prep import records

FOV = 30.0  # Vertical = horizontal field of view in degrees.
ELEVATION_RANGE = (10.0, 40.0)  # Elevation is drawn uniformly in this range (degrees).
FIT_RADIUS = 58.0  # Pixels: every vertex projects within this of the image centre (crop half 63).
_AMBIENT = 0.35
_LIGHT_INTENSITY = 3.0

# OffscreenRenderers of this process by size, created once (~100 ms each) and never deleted:
# pyrender's EGL `delete()` (also run by its __del__) calls eglTerminate on the process-wide
# display, after which every other renderer of the process fails (GLError 12296 at
# eglMakeCurrent, tests/data_prep/test_render_voxelize.py). r2n2_jax.visualize renders with these
# too, so the process has one set of renderers.
_renderers = {}


def configure_process():
  """Process set-up for rendering, for entry points and worker initializers (before pyrender is
  imported): headless EGL unless PYOPENGL_PLATFORM says otherwise, and Mesa's llvmpipe (software
  GL) rasterising in the calling thread: with one worker process per core, its helper threads
  only contend (measured: ~185 vs ~130 views per CPU second, benchmarks/prep_speed.py)."""
  os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
  os.environ.setdefault("LP_NUM_THREADS", "0")


def _pyrender():
  """pyrender, imported on first use: PyOpenGL fixes its platform at import, and a process that
  renders without an entry point's set-up is headless too (EGL unless PYOPENGL_PLATFORM is set)."""
  os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
  import pyrender  # pylint: disable=import-outside-toplevel
  return pyrender


def renderer(size):
  """This process's (size, size) pyrender OffscreenRenderer (never deleted: see _renderers)."""
  if size not in _renderers:
    _renderers[size] = _pyrender().OffscreenRenderer(size, size)
  return _renderers[size]


def intrinsics(fov=FOV, size=records.IMAGE_SIZE):
  """(3, 3) float64 OpenCV intrinsics of a square image with the given field of view (degrees)."""
  f = (size / 2) / np.tan(np.radians(fov) / 2)
  c = (size - 1) / 2  # Pixel (0, 0) is centred at (0, 0); the image spans [-0.5, size - 0.5].
  return np.array([[f, 0, c], [0, f, c], [0, 0, 1]])


def look_at_pose(azimuth, elevation, distance):
  """(4, 4) camera-to-world (OpenGL) on a sphere around the origin, looking at it, +Y up.

  Azimuth 0 puts the camera on +Z; positive azimuth turns towards +X (degrees).
  """
  az, el = np.radians(azimuth), np.radians(elevation)
  back = np.array([np.cos(el) * np.sin(az), np.sin(el), np.cos(el) * np.cos(az)])  # Camera +Z.
  right = np.cross([0.0, 1.0, 0.0], back)
  right /= np.linalg.norm(right)
  up = np.cross(back, right)
  pose = np.eye(4)
  pose[:3, :3] = np.stack([right, up, back], axis=1)
  pose[:3, 3] = distance * back
  return pose


def project(points, K, pose):
  """Projects (N, 3) world points with the record convention; returns (N, 2) (u, v), (N,) z."""
  q = np.linalg.inv(pose) @ np.concatenate([points, np.ones((len(points), 1))], axis=1).T
  x, y, z = q[0], -q[1], -q[2]
  return np.stack([K[0, 0] * x / z + K[0, 2], K[1, 1] * y / z + K[1, 2]], axis=1), z


def fit_distance(vertices, azimuth, elevation, fov=FOV, radius=FIT_RADIUS,
                 size=records.IMAGE_SIZE):
  """Smallest camera distance at which all vertices project within `radius` pixels (per axis)."""
  rot = look_at_pose(azimuth, elevation, 1.0)[:3, :3]
  cam = vertices @ rot  # Camera-frame coordinates of the points for a camera at the origin.
  f = intrinsics(fov, size)[0, 0]
  # With the camera at distance d on its +Z axis, depth = d - cam_z; need f |cam_xy| / depth <= r.
  return float(np.max(cam[:, 2] + f * np.abs(cam[:, :2]).max(axis=1) / radius))


def view_angles(num_views, rng):
  """(azimuth, elevation) arrays (degrees): azimuth evenly spaced from a random start, elevation
  jittered uniformly in ELEVATION_RANGE."""
  azimuth = (rng.uniform(0, 360) + np.arange(num_views) * 360.0 / num_views) % 360
  elevation = rng.uniform(*ELEVATION_RANGE, size=num_views)
  return azimuth, elevation


def render_views(mesh, num_views, rng, fov=FOV, size=records.IMAGE_SIZE):
  """Renders a normalised Trimesh from num_views cameras on a sphere.

  Returns a dict of the record's per-view fields: views (V, size, size, 4) uint8 RGBA (alpha =
  object coverage, transparent background), K (V, 3, 3), pose (V, 4, 4), azimuth, elevation,
  distance, fov (V,), all float32 except views.
  """
  pyrender = _pyrender()
  azimuth, elevation = view_angles(num_views, rng)
  hull = mesh.convex_hull.vertices if len(mesh.vertices) > 64 else mesh.vertices
  distance = np.array([fit_distance(hull, a, e, fov, size=size)
                       for a, e in zip(azimuth, elevation)])
  K = intrinsics(fov, size)
  poses = np.stack([look_at_pose(a, e, d) for a, e, d in zip(azimuth, elevation, distance)])

  scene = pyrender.Scene(bg_color=[0.0, 0.0, 0.0, 0.0], ambient_light=[_AMBIENT] * 3)
  scene.add(pyrender.Mesh.from_trimesh(mesh, smooth=False))
  # pyrender's IntrinsicsCamera maps to GL window coordinates (y up, pixel centres at +0.5)
  # wx = fx X + (W - cx), wy = fy Y + cy; these arguments give OpenCV's (cx, cy) = K[:2, 2].
  camera = pyrender.IntrinsicsCamera(
      fx=K[0, 0], fy=K[1, 1], cx=size - 0.5 - K[0, 2], cy=size - 0.5 - K[1, 2],
      znear=0.05, zfar=100.0)
  camera_node = scene.add(camera)
  # A key light from the upper left of the camera, moving with it.
  light_node = scene.add(pyrender.DirectionalLight(intensity=_LIGHT_INTENSITY))
  key = look_at_pose(-35.0, 35.0, 1.0)
  offscreen = renderer(size)
  flags = pyrender.RenderFlags.RGBA
  if not mesh.is_watertight:  # Open surfaces must show their back faces (costs ~30% more).
    flags |= pyrender.RenderFlags.SKIP_CULL_FACES
  views = np.empty((num_views, size, size, 4), np.uint8)
  for i, pose in enumerate(poses):
    scene.set_pose(camera_node, pose)
    scene.set_pose(light_node, pose @ key)
    views[i], _ = offscreen.render(scene, flags=flags)
  return {
      "views": views,
      "K": np.broadcast_to(K, (num_views, 3, 3)).astype(np.float32),
      "pose": poses.astype(np.float32),
      "azimuth": azimuth.astype(np.float32),
      "elevation": elevation.astype(np.float32),
      "distance": distance.astype(np.float32),
      "fov": np.full(num_views, fov, np.float32),
  }
