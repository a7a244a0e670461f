"""Data preparation throughput: meshes/s and rendered views/s (137x137, voxelisation included).

  PYTHONPATH=. python benchmarks/prep_speed.py [--num-meshes 40] [--views 24] [--workers N]

Measures, on a fixed set of procedural meshes, side by side in one run:
  - in this process: voxelise + render every mesh (and each stage alone);
  - all workers: the full pipeline (data_prep.pipeline.build_dataset: spawned worker processes,
    per-object cache files, the TFDS write), i.e. what `python -m data_prep` does.
Per-core figures divide by CPU seconds (process + children, all threads: llvmpipe rasterises on
helper threads), so they hold on a shared or busy machine; totals divide by wall-clock seconds.
"""

import argparse
import os
import resource
import tempfile
import time

import numpy as np

from data_prep import pipeline, procedural, render, voxelize


def _items(num_meshes):
  return [pipeline.Item(object_id=f"bench_{i:04d}", category=procedural.category_of(i), synset="",
                        split="train", source=(0, i)) for i in range(num_meshes)]


def _cpu_seconds():
  """CPU seconds used by this process and its waited-for children (all threads)."""
  own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
  return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--num-meshes", type=int, default=40)
  parser.add_argument("--views", type=int, default=24)
  parser.add_argument("--workers", type=int, default=os.cpu_count())
  args = parser.parse_args()
  render.configure_process()  # As `python -m data_prep` does (EGL, llvmpipe in one thread).
  items = _items(args.num_meshes)
  meshes = [procedural._procedural_mesh(item)[0] for item in items]
  render.render_views(meshes[0], 1, np.random.default_rng(0))  # Create the renderer first.

  start = time.perf_counter()
  for m in meshes:
    voxelize.voxelize(m)
  t_vox = time.perf_counter() - start
  start = time.perf_counter()
  for i, m in enumerate(meshes):
    render.render_views(m, args.views, np.random.default_rng(i))
  t_render = time.perf_counter() - start
  start, cpu = time.perf_counter(), _cpu_seconds()
  for item, m in zip(items, meshes):
    pipeline.make_example(item, m, args.views, seed=0)
  t_one, cpu_one = time.perf_counter() - start, _cpu_seconds() - cpu

  with tempfile.TemporaryDirectory() as data_dir:
    start, cpu = time.perf_counter(), _cpu_seconds()
    pipeline.build_dataset("bench", "v", data_dir, items, procedural._procedural_mesh, args.views,
                           seed=0, workers=args.workers)
    t_all, cpu_all = time.perf_counter() - start, _cpu_seconds() - cpu

  n, v = args.num_meshes, args.num_meshes * args.views
  faces = np.mean([len(m.faces) for m in meshes])
  print(f"{n} procedural meshes ({faces:.0f} faces on average) x {args.views} views of "
        f"137x137, {os.cpu_count()} cores")
  print(f"  voxelise only (1 core):          {1000 * t_vox / n:7.1f} ms/mesh")
  print(f"  render only (1 core):            {1000 * t_render / v:7.2f} ms/view")
  print(f"{'':38}{'meshes/s':>10}{'views/s':>10}{'meshes/s/core':>15}{'views/s/core':>14}")
  for label, wall, cpu in (("  this process, voxelise + render", t_one, cpu_one),
                           (f"  pipeline, {args.workers} workers", t_all, cpu_all)):
    print(f"{label:38}{n / wall:10.2f}{v / wall:10.1f}{n / cpu:15.2f}{v / cpu:14.1f}")
  print(f"  (pipeline wall time includes starting {args.workers} spawned workers and writing "
        "the TFDS dataset)")


if __name__ == "__main__":
  main()
