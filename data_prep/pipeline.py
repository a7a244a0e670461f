"""The object -> record pipeline shared by every builder (procedural, folder, 3D-FUTURE, ShapeNet).

`build_examples` maps a per-object function `example_fn(item) -> (example dict, notes)` over
`Item`s in parallel worker processes, skips the objects it raises for (with their reason), writes
the TFDS dataset and a human-readable report (prep_report.txt in the dataset directory).
`build_dataset` is its form for mesh sources (load mesh -> voxelise -> render, one pyrender
renderer per worker), which caches every finished object on disk in a work directory so that a
re-run after an interruption skips finished objects.

Process hygiene: workers die with the process that started them (Linux PR_SET_PDEATHSIG, so a
SIGKILLed build leaves no renderers behind); a build holds an exclusive lock per dataset for its
duration (a second build of the same dataset waits, then reuses it) and, under that lock, removes
the `incomplete.*` folders and partial cache files that a killed build left behind.
With beam=True the objects are prepared by an Apache Beam pipeline (any runner) and written by
TFDS's Beam writer: see `_build_with_beam`.
"""

import collections
import concurrent.futures
import contextlib
import ctypes
import dataclasses
import fcntl
import glob
import hashlib
import itertools
import json
import multiprocessing
import os
import shutil
import signal
import sys
import time
import uuid
import zlib

import numpy as np
import tqdm

from data_prep import meshes, records, render, voxelize

REPORT_NAME = "prep_report.txt"
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)  # train / validation / test
_INCOMPLETE_PREFIX = "incomplete."  # TFDS writes a dataset in a sibling `incomplete.XXXXXX_<v>`.
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


@dataclasses.dataclass(frozen=True)
class Item:
  """One object to prepare: `source` is what the builder's loader needs (a path, a spec)."""
  object_id: str
  category: str
  synset: str
  split: str
  source: object


@dataclasses.dataclass
class Outcome:
  """What became of one item: status "ok" or "skipped", notes (or the skip reason), cached = it
  was finished by an earlier run (read back from the work directory)."""
  status: str
  notes: list
  cached: bool = False


@dataclasses.dataclass
class Report:
  """A build's outcome per object, the objects written per split, and the report text."""
  items: list
  outcomes: dict  # object_id -> Outcome
  by_split: dict  # split -> [Item] written
  text: str


class NothingUsable(RuntimeError):
  """Every input was skipped: a one-line message with the first reasons; `report` (the full
  report text, when there is one) lists them all."""

  def __init__(self, message, report=None):
    super().__init__(message)
    self.report = report


def dataset_path(data_dir, name, config=None):
  """data_dir/name[/config]/VERSION: where the dataset is (or will be) written."""
  parts = [str(data_dir), name] + ([config] if config else []) + [records.VERSION]
  return os.path.join(*parts)


def existing_dataset(data_dir, name, config=None):
  """The dataset directory if a finished dataset is there, else None."""
  path = dataset_path(data_dir, name, config)
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


def make_example(item, mesh, views, seed):
  """The record dict of one normalised mesh: voxels + `views` renders."""
  voxels, method = voxelize.voxelize(mesh)
  rng = np.random.default_rng([seed, zlib.crc32(item.object_id.encode())])
  example = render.render_views(mesh, views, rng)
  example.update(voxels=voxels, voxel_method=method, category=item.category,
                 synset=item.synset, object_id=item.object_id)
  return example


@dataclasses.dataclass(frozen=True)
class MeshExample:
  """example_fn of mesh sources: `load_fn(item) -> (normalised Trimesh, notes)`, then voxelise
  and render `views` views (seeded per object)."""
  load_fn: object
  views: int
  seed: int

  def __call__(self, item):
    mesh, notes = self.load_fn(item)
    return make_example(item, mesh, self.views, self.seed), notes


# Worker processes.

def _die_with_parent(parent_pid):
  """Pool initializer: the worker is SIGKILLed when its parent dies, even by SIGKILL.

  PR_SET_PDEATHSIG fires when the thread that started the worker exits; the pool's workers are
  all started by the thread that calls `build_examples` (it submits the first tasks), which
  outlives them. If the parent died before prctl ran, the worker is already orphaned: exit.
  Elsewhere than Linux a thread polls the parent instead.
  """
  render.configure_process()
  if sys.platform.startswith("linux"):
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
      raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
  else:
    import threading  # pylint: disable=import-outside-toplevel

    def watch():
      while os.getppid() == parent_pid:
        time.sleep(1.0)
      os._exit(1)
    threading.Thread(target=watch, daemon=True).start()
  if os.getppid() != parent_pid:
    os._exit(1)


@contextlib.contextmanager
def worker_pool(workers):
  """A spawn process pool whose workers die with this process; None for workers <= 1."""
  if workers <= 1:
    yield None
    return
  # spawn, not fork: the caller may be a multi-threaded JAX process or hold a GL context. (As
  # with any spawn pool, a calling script needs the `if __name__ == "__main__":` idiom.)
  pool = concurrent.futures.ProcessPoolExecutor(
      workers, mp_context=multiprocessing.get_context("spawn"), initializer=_die_with_parent,
      initargs=(os.getpid(),))
  try:
    yield pool
  finally:
    pool.shutdown(cancel_futures=True)


def ordered_map(fn, tasks, pool, lookahead):
  """fn(task) for every task, in order, computed in `pool` at most `lookahead` ahead of the
  consumer (so memory stays bounded when workers outrun it); in this process if pool is None."""
  if pool is None:
    yield from map(fn, tasks)
    return
  tasks = iter(tasks)
  pending = collections.deque(pool.submit(fn, t) for t in itertools.islice(tasks, lookahead))
  while pending:
    result = pending.popleft().result()
    for t in itertools.islice(tasks, 1):
      pending.append(pool.submit(fn, t))
    yield result


def _cache_path(work_dir, object_id, suffix=".npz"):
  return os.path.join(work_dir, hashlib.sha1(object_id.encode()).hexdigest()[:20] + suffix)


def _atomic_write(path, write_fn):
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "wb") as f:
    write_fn(f)
  os.replace(tmp, path)


_TEXT_FIELDS = ("category", "synset", "object_id")


def _process(task):
  """Worker: prepares one item; returns (item, Outcome, example or None).

  With a work directory the finished example is cached there (and not returned); failures are
  not cached, so a fixed input file is retried on a re-run.
  """
  item, example_fn, work_dir = task
  if work_dir is not None:
    done = _cache_path(work_dir, item.object_id)
    if os.path.exists(done):
      with np.load(done) as data:
        return item, Outcome("ok", json.loads(data["meta"].item())["notes"], cached=True), None
  try:
    example, notes = example_fn(item)
  except Exception as e:  # Any failure skips this object only; the reason goes in the report.
    reason = getattr(e, "reason", None) or f"{type(e).__name__}: {e}"
    return item, Outcome("skipped", [reason]), None
  if work_dir is None:
    return item, Outcome("ok", list(notes)), example
  meta = json.dumps({"notes": list(notes)})
  _atomic_write(done, lambda f: np.savez_compressed(f, meta=meta, **{
      k: v for k, v in example.items() if k not in _TEXT_FIELDS}))
  return item, Outcome("ok", list(notes)), None


def _load_example(item, work_dir):
  with np.load(_cache_path(work_dir, item.object_id)) as data:
    example = {k: data[k] for k in data.files if k != "meta"}
  example["voxel_method"] = str(example["voxel_method"])
  example.update(category=item.category, synset=item.synset, object_id=item.object_id)
  return example


# Locking and clean-up.

@contextlib.contextmanager
def _build_lock(data_dir, name, config):
  """Holds an exclusive lock on this dataset's build (flock; released when the process dies)."""
  lock_dir = os.path.join(str(data_dir), "_work")
  os.makedirs(lock_dir, exist_ok=True)
  path = os.path.join(lock_dir, f"{name}.{config}.lock" if config else f"{name}.lock")
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      print(f"Waiting for another build of {name}/{config or ''} to finish ({path})",
            file=sys.stderr)
      fcntl.flock(fd, fcntl.LOCK_EX)
    yield
  finally:
    os.close(fd)


def remove_stale_writes(data_dir, name, config=None, work_dir=None):
  """Removes what a killed build left: TFDS `incomplete.*` folders beside the dataset folder and
  partial cache files. Call it holding the build lock: then no live build owns them."""
  parent = os.path.dirname(dataset_path(data_dir, name, config))
  removed = sorted(glob.glob(os.path.join(glob.escape(parent), _INCOMPLETE_PREFIX + "*")))
  if work_dir:
    removed += sorted(glob.glob(os.path.join(glob.escape(work_dir), "*.tmp*")))
  for path in removed:
    if os.path.isdir(path):
      shutil.rmtree(path, ignore_errors=True)
    else:
      with contextlib.suppress(FileNotFoundError):
        os.remove(path)
  return removed


# Building.

@contextlib.contextmanager
def _split_examples(items, example_fn, work_dir, workers, outcomes, desc):
  """{split: iterator of (object_id, example)} of the splits that have a usable object.

  Objects are prepared as the writer consumes them (bounded look-ahead), sorted by object id in
  each split. TFDS refuses a split that yields nothing, so each split's first usable object is
  prepared now and the splits without one are left out.
  """
  bar = tqdm.tqdm(total=len(items), desc=desc, unit="obj")

  def examples(members):
    tasks = [(item, example_fn, work_dir) for item in sorted(members, key=lambda i: i.object_id)]
    for item, outcome, example in ordered_map(_process, tasks, pool, 2 * workers):
      outcomes[item.object_id] = outcome
      bar.update()
      if outcome.status == "ok":
        yield item.object_id, example if example is not None else _load_example(item, work_dir)

  try:
    with worker_pool(workers) as pool:
      generators = {}
      for s in records.SPLITS:
        generator = examples([item for item in items if item.split == s])
        first = next(generator, None)
        if first is not None:
          generators[s] = itertools.chain([first], generator)
      yield generators
  finally:
    bar.close()


def build_examples(name, config, data_dir, items, example_fn, *, workers=None, description=None,
                   cache=True, keep_work=False, beam=False, beam_options=None, views=None):
  """Prepares `items` with `example_fn(item) -> (example, notes)` and writes the dataset.

  The dataset lands in data_dir/name[/config]/VERSION; a finished one is reused as it is.
  Returns (dataset_dir, Report). Raises NothingUsable if every item was skipped.
  cache: keep finished objects in the work directory (data_dir/_work/name/config) so that a
    re-run resumes; it is removed after a successful write unless keep_work. Without it (cheap
    per-object work such as reading files) examples go from the workers straight to the writer.
  beam: prepare objects and write records with Apache Beam (`beam_options`: a PipelineOptions,
    e.g. with --runner; DirectRunner by default); the work directory must then be on storage
    that every Beam worker sees. views: the views per object, for the report's title.
  """
  ids = [item.object_id for item in items]
  if len(set(ids)) != len(ids):
    raise ValueError(f"{name}: object ids are not unique")
  work_dir = os.path.join(str(data_dir), "_work", name, config or "")
  with _build_lock(data_dir, name, config):
    existing = existing_dataset(data_dir, name, config)
    if existing:  # Built before (or by a concurrent build we waited for).
      report_path = os.path.join(existing, REPORT_NAME)
      text = f"Dataset {name}/{config} (no preparation report)\n"
      if os.path.exists(report_path):
        with open(report_path) as f:
          text = f.read()
      return existing, Report(items, {}, {}, text)
    remove_stale_writes(data_dir, name, config, work_dir)
    start = time.time()
    if beam:
      dataset_dir, report = _build_with_beam(name, config, data_dir, items, example_fn, work_dir,
                                             description, beam_options, views, start)
    else:
      workers = max(1, min(workers or os.cpu_count() or 1, len(items)))
      runner = f"{workers} worker(s)"
      outcomes = {}
      if cache:
        os.makedirs(work_dir, exist_ok=True)
      with _split_examples(items, example_fn, work_dir if cache else None, workers, outcomes,
                           f"{name}/{config or ''}") as split_examples:
        if not split_examples:
          _nothing_usable(name, config, items, outcomes, views, start, runner, work_dir, cache)
        dataset_dir = records.write_dataset(name, split_examples, data_dir, config=config,
                                            description=description)
      report = _make_report(name, config, items, outcomes, views, time.time() - start, runner,
                            cache)
    report.text += f"Total time (with writing): {time.time() - start:.1f} s\n"
    with open(os.path.join(dataset_dir, REPORT_NAME), "w") as f:
      f.write(report.text)
    if not keep_work:
      shutil.rmtree(work_dir, ignore_errors=True)
  return dataset_dir, report


def build_dataset(name, config, data_dir, items, load_fn, views, seed, workers=None,
                  description=None, keep_work=False, beam=False, beam_options=None):
  """Prepares mesh `items` with `load_fn(item) -> (normalised Trimesh, notes)` (voxelised and
  rendered from `views` cameras, seeded per object) and writes the dataset; see build_examples.
  Returns (dataset_dir, report text)."""
  dataset_dir, report = build_examples(
      name, config, data_dir, items, MeshExample(load_fn, views, seed), workers=workers,
      description=description, keep_work=keep_work, beam=beam, beam_options=beam_options,
      views=views)
  return dataset_dir, report.text


def _nothing_usable(name, config, items, outcomes, views, start, runner, work_dir, cache):
  report = _make_report(name, config, items, outcomes, views, time.time() - start, runner, cache)
  os.makedirs(work_dir, exist_ok=True)
  path = os.path.join(work_dir, REPORT_NAME)
  with open(path, "w") as f:
    f.write(report.text)
  first = "; ".join(f"{it.source}: {'; '.join(outcomes[it.object_id].notes)}" for it in items[:3])
  raise NothingUsable(f"{name}: no usable inputs, all {len(items)} skipped (first: {first}); "
                      f"report: {path}", report.text)


# Apache Beam.

def beam_pipeline_options(flags):
  """Beam PipelineOptions from command-line flags (e.g. ["--runner=FlinkRunner", ...]).

  Raises ValueError naming the flags that no Beam option (of the installed runners) knows.
  """
  from apache_beam.options import pipeline_options  # pylint: disable=import-outside-toplevel
  options = pipeline_options.PipelineOptions(list(flags))
  known = options.get_all_options(retain_unknown_options=False)
  with_unknown = options.get_all_options(retain_unknown_options=True)
  unknown = sorted(set(with_unknown) - set(known))
  if unknown:
    raise ValueError(f"unknown Apache Beam option(s): {', '.join('--' + u for u in unknown)}")
  return options


def _beam_prepare(task):
  """Beam map function of stage 1: prepares (caches) one item; one JSON line of its outcome."""
  render.configure_process()
  item, outcome, _ = _process(task)
  return json.dumps({"object_id": item.object_id, **dataclasses.asdict(outcome)})


def _beam_load(item, work_dir):
  """Beam map function of stage 2: the cached example of one usable item."""
  return item.object_id, _load_example(item, work_dir)


def _build_with_beam(name, config, data_dir, items, example_fn, work_dir, description, options,
                     views, start):
  """Two Beam pipelines: the first prepares every object into the work directory and records
  each outcome; the second (TFDS's writer) reads back the usable objects of the splits that have
  any. Knowing the outcomes first lets an all-skipped split be left out (TFDS refuses an empty
  split) and gives the report this run's own resumed count."""
  import apache_beam as beam  # pylint: disable=import-outside-toplevel  (optional dependency)
  from apache_beam.options import pipeline_options  # pylint: disable=import-outside-toplevel
  options = options or pipeline_options.PipelineOptions([])
  runner = options.view_as(pipeline_options.StandardOptions).runner or "DirectRunner"
  os.makedirs(work_dir, exist_ok=True)
  status_prefix = os.path.join(work_dir, f"outcomes-{uuid.uuid4().hex[:8]}")
  with beam.Pipeline(options=options) as p:
    _ = (p | "Objects" >> beam.Create([(item, example_fn, work_dir) for item in items])
         | "Prepare" >> beam.Map(_beam_prepare)
         | "Outcomes" >> beam.io.WriteToText(status_prefix, file_name_suffix=".jsonl"))
  outcomes = {}
  for path in glob.glob(glob.escape(status_prefix) + "*.jsonl"):
    with open(path) as f:
      for line in f:
        record = json.loads(line)
        object_id = record.pop("object_id")
        outcomes[object_id] = Outcome(**record)
    os.remove(path)
  missing = [item.object_id for item in items if item.object_id not in outcomes]
  if missing:
    raise RuntimeError(f"{name}: the Beam pipeline reported no outcome for {len(missing)} "
                       f"object(s), e.g. {missing[0]}")
  label = f"Apache Beam ({runner})"
  report = _make_report(name, config, items, outcomes, views, time.time() - start, label, True)
  if not any(report.by_split.values()):
    _nothing_usable(name, config, items, outcomes, views, start, label, work_dir, True)
  split_transforms = {
      s: (f"Create {s}" >> beam.Create(sorted(members, key=lambda it: it.object_id))
          | f"Read {s}" >> beam.Map(_beam_load, work_dir))
      for s, members in report.by_split.items() if members}
  dataset_dir = records.write_dataset(name, split_transforms, data_dir, config=config,
                                      description=description, beam_options=options)
  return dataset_dir, report


# Report.

def _make_report(name, config, items, outcomes, views, seconds, runner, cache):
  """Report of a build: counts per category and split, skipped inputs, notes, resumed, time."""
  by_split = {s: [it for it in items if it.split == s and outcomes[it.object_id].status == "ok"]
              for s in records.SPLITS}
  title = f"Dataset {name}/{config}" if config else f"Dataset {name}"
  lines = [f"{title}: {sum(len(v) for v in by_split.values())} objects"
           + (f" x {views} views" if views else ""), ""]
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
  skipped = [(it, outcomes[it.object_id].notes) for it in items
             if outcomes[it.object_id].status != "ok"]
  lines += ["", f"Skipped inputs: {len(skipped)}"]
  lines += [f"  {it.source}: {'; '.join(notes)}" for it, notes in skipped]
  noted = [(it, outcomes[it.object_id].notes) for it in items
           if outcomes[it.object_id].status == "ok" and outcomes[it.object_id].notes]
  if noted:
    lines += ["", "Notes:"] + [f"  {it.source}: {'; '.join(n)}" for it, n in noted]
  lines.append("")
  if cache:
    lines.append(f"Objects resumed from an earlier run: "
                 f"{sum(1 for o in outcomes.values() if o.cached)}")
  lines.append(f"Preparation time: {seconds:.1f} s with {runner}")
  return Report(items, outcomes, by_split, "\n".join(lines) + "\n")
