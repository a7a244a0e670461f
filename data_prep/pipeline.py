"""The mesh -> record pipeline shared by the rendering builders (procedural, folder, 3D-FUTURE).

`build_dataset` maps a per-object function (load mesh -> voxelise -> render) over `Item`s in
parallel worker processes (one pyrender renderer each), caches every finished object on disk in a
work directory (a re-run after an interruption skips finished objects), skips bad inputs with
their reason, writes the TFDS dataset and a human-readable report (prep_report.txt in the
dataset directory).
"""

import collections
import concurrent.futures
import dataclasses
import hashlib
import json
import multiprocessing
import os
import shutil
import time
import zlib

import numpy as np
import tqdm

from data_prep import meshes, records, render, voxelize

REPORT_NAME = "prep_report.txt"
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)  # train / validation / test


@dataclasses.dataclass(frozen=True)
class Item:
  """One object to prepare: `source` is what the builder's loader needs (a path, a spec)."""
  object_id: str
  category: str
  synset: str
  split: str
  source: object


class NothingUsable(RuntimeError):
  """Every input was skipped; the message lists why."""


def existing_dataset(data_dir, name, config):
  """The dataset directory if a finished dataset is there, else None."""
  path = os.path.join(str(data_dir), name, config, records.VERSION)
  return path if os.path.isfile(os.path.join(path, "dataset_info.json")) else None


def assign_splits(object_ids, categories, seed, fractions=SPLIT_FRACTIONS):
  """Split name per object: stratified by category, deterministic from the seed.

  Objects are shuffled within their category and ranked by their relative position there, so
  every category spreads over the splits in proportion; validation and test get at least one
  object each (if their fraction is not 0) when there are at least 3 objects.
  """
  n = len(object_ids)
  rng = np.random.default_rng(seed)
  rank = np.empty(n)
  by_cat = collections.defaultdict(list)
  for i, c in enumerate(categories):
    by_cat[c].append(i)
  for c in sorted(by_cat):
    members = sorted(by_cat[c], key=lambda i: object_ids[i])
    order = rng.permutation(len(members))
    for pos, i in zip(order, members):
      rank[i] = (pos + 0.5) / len(members)
  order = np.lexsort((rng.random(n), rank))
  count = lambda f: max(1, round(f * n)) if f > 0 and n >= 3 else (round(f * n) if n >= 3 else 0)
  n_val, n_test = count(fractions[1]), count(fractions[2])
  names = np.array(["train"] * (n - n_val - n_test) + ["validation"] * n_val + ["test"] * n_test)
  splits = np.empty(n, dtype=object)
  splits[order] = names
  return list(splits)


def load_mesh_file(item):
  """Loader for items whose source is a mesh file path."""
  return meshes.load_mesh(item.source)


def _cache_path(work_dir, object_id, suffix):
  return os.path.join(work_dir, hashlib.sha1(object_id.encode()).hexdigest()[:20] + suffix)


def _atomic_write(path, write_fn):
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "wb") as f:
    write_fn(f)
  os.replace(tmp, path)


def make_example(item, mesh, views, seed):
  """The record dict of one normalised mesh: voxels + `views` renders."""
  voxels, method = voxelize.voxelize(mesh)
  rng = np.random.default_rng([seed, zlib.crc32(item.object_id.encode())])
  example = render.render_views(mesh, views, rng)
  example.update(voxels=voxels, voxel_method=method, category=item.category,
                 synset=item.synset, object_id=item.object_id)
  return example


def _process(task):
  """Worker: prepares one item into the work directory; returns (item, status, notes, cached).

  Finished objects are cached; failures are not (so a fixed input file is retried on a re-run).
  """
  item, load_fn, views, seed, work_dir = task
  done = _cache_path(work_dir, item.object_id, ".npz")
  if os.path.exists(done):
    with np.load(done) as data:
      return item, "ok", json.loads(data["meta"].item())["notes"], True
  try:
    mesh, notes = load_fn(item)
    example = make_example(item, mesh, views, seed)
  except Exception as e:  # Any failure skips this object only; the reason goes in the report.
    return item, "skipped", [getattr(e, "reason", None) or f"{type(e).__name__}: {e}"], False
  meta = json.dumps({"notes": notes})
  _atomic_write(done, lambda f: np.savez_compressed(f, meta=meta, **{
      k: v for k, v in example.items() if k not in ("category", "synset", "object_id")}))
  return item, "ok", notes, False


def _load_example(item, work_dir):
  with np.load(_cache_path(work_dir, item.object_id, ".npz")) as data:
    example = {k: data[k] for k in data.files if k != "meta"}
  example["voxel_method"] = str(example["voxel_method"])
  example.update(category=item.category, synset=item.synset, object_id=item.object_id)
  return example


def run_items(items, load_fn, views, seed, work_dir, workers=None, desc="objects"):
  """Prepares every item (parallel, cached); returns {object_id: (status, notes, cached)}."""
  os.makedirs(work_dir, exist_ok=True)
  tasks = [(item, load_fn, views, seed, work_dir) for item in items]
  workers = min(workers or os.cpu_count() or 1, max(1, len(tasks)))
  results = {}
  with tqdm.tqdm(total=len(tasks), desc=desc, unit="obj") as bar:
    if workers == 1:
      outputs = map(_process, tasks)
    else:
      # spawn, not fork: the caller may be a multi-threaded JAX process or hold a GL context. (As
      # with any spawn pool, a calling script needs the `if __name__ == "__main__":` idiom.)
      pool = concurrent.futures.ProcessPoolExecutor(
          workers, mp_context=multiprocessing.get_context("spawn"))
      outputs = (f.result() for f in concurrent.futures.as_completed(
          [pool.submit(_process, t) for t in tasks]))
    try:
      for item, status, notes, cached in outputs:
        results[item.object_id] = (status, notes, cached)
        bar.update()
    finally:
      if workers > 1:
        pool.shutdown(cancel_futures=True)
  return results


def _beam_example(item, load_fn, views, seed, work_dir):
  """Beam map function: [(object_id, example)] of one item, [] when it is skipped."""
  _, status, _, _ = _process((item, load_fn, views, seed, work_dir))
  return [(item.object_id, _load_example(item, work_dir))] if status == "ok" else []


def _beam_splits(items, load_fn, views, seed, work_dir):
  """{split: Beam PTransform of (key, example)}; TFDS runs them (DirectRunner by default)."""
  import apache_beam as beam  # Optional dependency, only for --beam.
  os.makedirs(work_dir, exist_ok=True)
  return {s: (f"Create {s}" >> beam.Create([it for it in items if it.split == s])
              | f"Prepare {s}" >> beam.FlatMap(_beam_example, load_fn, views, seed, work_dir))
          for s in records.SPLITS if any(it.split == s for it in items)}


def build_dataset(name, config, data_dir, items, load_fn, views, seed, workers=None,
                  description=None, keep_work=False, beam=False):
  """Prepares `items` with `load_fn(item) -> (normalised Trimesh, notes)` and writes the dataset.

  Returns (dataset_dir, report text); a finished dataset of that name/config is reused as it is.
  Raises NothingUsable if every item was skipped. The work directory
  (data_dir/_work/name/config) is removed after a successful write unless keep_work.
  With beam=True the objects are prepared inside TFDS's Apache Beam pipeline instead of the
  local process pool (the work directory must then be on storage every Beam worker sees).
  """
  existing = existing_dataset(data_dir, name, config)
  if existing:
    report_path = os.path.join(existing, REPORT_NAME)
    if not os.path.exists(report_path):  # Interrupted just after the dataset was written.
      return existing, f"Dataset {name}/{config} (no preparation report)\n"
    with open(report_path) as f:
      return existing, f.read()
  start = time.time()
  ids = [item.object_id for item in items]
  if len(set(ids)) != len(ids):
    raise ValueError(f"{name}: object ids are not unique")
  work_dir = os.path.join(str(data_dir), "_work", name, config)
  if beam:
    dataset_dir = records.write_dataset(name, _beam_splits(items, load_fn, views, seed, work_dir),
                                        data_dir, config=config, description=description)
  # With Beam the finished objects are cached by now: this collects them (and retries failures
  # once, for their reasons).
  results = run_items(items, load_fn, views, seed, work_dir, 1 if beam else workers,
                      desc=f"{name}/{config}")
  good = [item for item in items if results[item.object_id][0] == "ok"]
  by_split = {s: [item for item in good if item.split == s] for s in records.SPLITS}
  report = _report(name, config, items, results, by_split, views, time.time() - start,
                   "Apache Beam" if beam else f"{workers or os.cpu_count()} worker(s)")
  if not good:
    with open(os.path.join(work_dir, REPORT_NAME), "w") as f:
      f.write(report)
    raise NothingUsable(f"{name}: no usable inputs\n{report}")
  if not beam:
    split_examples = {
        s: ((item.object_id, _load_example(item, work_dir)) for item in sorted(
            members, key=lambda it: it.object_id))
        for s, members in by_split.items() if members}
    dataset_dir = records.write_dataset(name, split_examples, data_dir, config=config,
                                        description=description)
  report += f"Total time (with writing): {time.time() - start:.1f} s\n"
  with open(os.path.join(dataset_dir, REPORT_NAME), "w") as f:
    f.write(report)
  if not keep_work:
    shutil.rmtree(work_dir, ignore_errors=True)
  return dataset_dir, report


def _report(name, config, items, results, by_split, views, seconds, runner):
  """Human-readable summary: counts per category and split, skipped inputs, notes, time."""
  lines = [f"Dataset {name}/{config}: {sum(len(v) for v in by_split.values())} objects "
           f"x {views} views", ""]
  counts = collections.defaultdict(collections.Counter)
  for s, members in by_split.items():
    for item in members:
      counts[item.category][s] += 1
  lines.append(f"{'category':<24}" + "".join(f"{s:>12}" for s in records.SPLITS))
  for c in sorted(counts):
    lines.append(f"{c:<24}" + "".join(f"{counts[c][s]:>12}" for s in records.SPLITS))
  lines.append(f"{'total':<24}" + "".join(f"{len(by_split[s]):>12}" for s in records.SPLITS))
  empty = [s for s in records.SPLITS if not by_split[s]]
  if empty:
    lines.append(f"Empty splits (not written): {', '.join(empty)}")
  skipped = [(it, results[it.object_id][1]) for it in items if results[it.object_id][0] != "ok"]
  lines += ["", f"Skipped inputs: {len(skipped)}"]
  lines += [f"  {it.source}: {'; '.join(notes)}" for it, notes in skipped]
  noted = [(it, results[it.object_id][1]) for it in items
           if results[it.object_id][0] == "ok" and results[it.object_id][1]]
  if noted:
    lines += ["", "Notes:"] + [f"  {it.source}: {'; '.join(n)}" for it, n in noted]
  cached = sum(1 for r in results.values() if r[2])
  lines += ["", f"Objects resumed from an earlier run: {cached}",
            f"Preparation time: {seconds:.1f} s with {runner}"]
  return "\n".join(lines) + "\n"
