"""Builds through Apache Beam (DirectRunner) equal the local builds, object by object.

Skipped where apache-beam is not installed, unless R2N2_REQUIRE_BEAM=1 (CI's Beam environment):
then a missing apache-beam fails instead.
"""

import os
import shutil

import numpy as np
import pytest
import trimesh

if os.environ.get("R2N2_REQUIRE_BEAM") == "1":
  import apache_beam  # noqa: F401  pylint: disable=unused-import
else:
  pytest.importorskip("apache_beam")

from data_prep import __main__ as cli  # noqa: E402
from data_prep import mesh_folder, pipeline, records  # noqa: E402

FIELDS = ("views", "voxels", "K", "pose", "azimuth", "elevation", "distance", "fov",
          "category", "synset", "object_id", "voxel_method")


def _folder(root, broken_split=None, seed=1):
  """A mesh folder; with broken_split, every object of that split is an empty (broken) file."""
  names = ["boxes/a.obj", "boxes/b.obj", "boxes/c.obj", "cyl/d.ply", "cyl/e.ply", "f.off",
           "broken.stl"]
  categories = [n.split("/")[0] if "/" in n else mesh_folder.NO_CATEGORY for n in names]
  splits = dict(zip(names, pipeline.assign_splits(names, categories, seed)))
  shapes = [trimesh.creation.box((1.0, 0.5, 0.3)), trimesh.creation.box((0.4, 0.5, 0.3)),
            trimesh.creation.box((0.2, 0.9, 0.3)), trimesh.creation.cylinder(0.3, 0.8),
            trimesh.creation.cylinder(0.5, 0.2), trimesh.creation.icosphere(1)]
  for name, shape in zip(names, shapes + [None]):
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if shape is None or splits[name] == broken_split:
      path.write_bytes(b"")
    else:
      shape.export(str(path))
  return splits


def _read(dataset_dir):
  """{split: {object_id: example}} of the splits that were written."""
  out = {}
  for split in records.SPLITS:
    try:  # TFDS raises for a split that was not written.
      source = records.load_split(dataset_dir, split)
    except Exception:  # pylint: disable=broad-except
      continue
    out[split] = {records.decode_text(e["object_id"]): e for e in source}
  return out


def _assert_same_records(beam_dir, local_dir):
  beam, local = _read(beam_dir), _read(local_dir)
  assert sorted(beam) == sorted(local)
  for split in local:
    assert sorted(beam[split]) == sorted(local[split])
    for key, example in beam[split].items():
      for field in FIELDS:
        np.testing.assert_array_equal(example[field], local[split][key][field], err_msg=field)
  return beam


def test_beam_build_matches_local_build_with_an_all_skipped_split(tmp_path):
  """Every validation object is broken: the Beam build leaves that split out as the local build
  does (it used to crash: "total number of generated examples is 0"), and its report does not
  count this run's own objects as resumed."""
  splits = _folder(tmp_path / "meshes", broken_split="validation")
  assert sum(s == "validation" for n, s in splits.items() if n != "broken.stl") >= 1
  beam_dir, report = mesh_folder.build_mesh_folder(str(tmp_path / "meshes"), tmp_path / "beam",
                                                   "m", views=2, split_seed=1, beam=True)
  local_dir, local_report = mesh_folder.build_mesh_folder(
      str(tmp_path / "meshes"), tmp_path / "local", "m", views=2, split_seed=1, workers=1)
  written = _assert_same_records(beam_dir, local_dir)
  assert "validation" not in written and {"train", "test"} <= set(written)
  broken = [n for n, s in splits.items() if s == "validation"] + ["broken.stl"]
  for text in (report, local_report):
    assert f"Skipped inputs: {len(set(broken))}" in text
    assert "Empty splits (not written): validation" in text
    assert "Objects resumed from an earlier run: 0" in text
  assert "broken.stl: empty file" in report and "Apache Beam (DirectRunner)" in report
  with open(os.path.join(beam_dir, pipeline.REPORT_NAME)) as f:
    assert f.read() == report


def test_beam_resume_counts_only_earlier_runs_and_cli_passes_beam_options(tmp_path, capsys):
  _folder(tmp_path / "meshes")
  argv = ["mesh-folder", "--input", str(tmp_path / "meshes"), "--data-dir", str(tmp_path / "d"),
          "--name", "m", "--views", "2", "--split-seed", "1"]
  # Beam's own flags pass through (here: DirectRunner options), a typo is one error line.
  assert cli.main(argv + ["--beam", "--direct_num_workers=1", "--direct_runnr=x"]) == 1
  err = capsys.readouterr().err
  assert err.startswith("error: unknown Apache Beam option(s): --direct_runnr") and \
      err.count("\n") == 1
  assert cli.main(argv + ["--beam-runner", "DirectRunner", "--direct_num_workers=1"]) == 0
  out = capsys.readouterr().out
  assert "Apache Beam (DirectRunner)" in out and "Objects resumed from an earlier run: 0" in out
  dataset_dir = os.path.join(tmp_path, "d", "m", "v2_s1", records.VERSION)
  first = _read(dataset_dir)
  # The same build, keeping its work directory: a rebuild reads every object back from it.
  folder = str(tmp_path / "meshes")
  found = mesh_folder.find_meshes(folder)
  ids, cats = [p for p, _ in found], [c for _, c in found]
  items = [pipeline.Item(i, c, "", s, os.path.join(folder, i))
           for i, c, s in zip(ids, cats, pipeline.assign_splits(ids, cats, 1))]
  for resumed in (0, sum(len(v) for v in first.values())):
    shutil.rmtree(dataset_dir)
    _, report = pipeline.build_dataset("m", "v2_s1", tmp_path / "d", items,
                                       pipeline.load_mesh_file, 2, 1, keep_work=True, beam=True)
    assert f"Objects resumed from an earlier run: {resumed}" in report
  again = _read(dataset_dir)
  assert sorted(again) == sorted(first)
  for split, examples in first.items():
    assert sorted(again[split]) == sorted(examples)
    for key, example in examples.items():
      for field in FIELDS:
        np.testing.assert_array_equal(again[split][key][field], example[field])


def test_shapenet_beam_import_matches_local_import(tmp_path):
  import test_shapenet  # pylint: disable=import-outside-toplevel  (its replica writer, same folder)
  from data_prep import shapenet  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  for model_id in ("c00", "c01", "c02", "c03"):
    test_shapenet._write_object(str(tmp_path), "03001627", model_id, rng)
  os.remove(tmp_path / "ShapeNetVox32" / "03001627" / "c03" / "model.binvox")  # The test split's.
  args = (tmp_path / "ShapeNetRendering", tmp_path / "ShapeNetVox32")
  beam_dir, beam_report = shapenet.build_shapenet(*args, tmp_path / "beam", beam=True)
  local_dir, local_report = shapenet.build_shapenet(*args, tmp_path / "local", workers=1)
  assert sorted(_assert_same_records(beam_dir, local_dir)) == ["train"]
  for key in ("counts", "totals", "splits_written", "skipped", "converted_views"):
    assert beam_report[key] == local_report[key], key
  assert [s["object_id"] for s in beam_report["skipped"]] == ["03001627/c03"]
