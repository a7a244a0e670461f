"""The GPU check: one command, under 10 minutes on one H200, figures to a folder.

  python benchmarks/gpu_check.py --out /tmp/gpu_check              # on the lent GPU
  python benchmarks/gpu_check.py --out /tmp/gpu_smoke --smoke      # CPU, tiny sizes (the suite)

Writes OUT/gpu_check.json and OUT/gpu_check.md (and OUT/train/ with the training run). Sections,
each time-boxed against --budget_s (a case that would not fit is skipped and says so):
  steps     train-step time (mean of --steps steps after compile), compile time, peak device memory
            (memory_stats, each case in its own process) and XLA's FLOP count / time against the
            device's peak, at B64/V20 for simple_gru_k3 and residual_gru_k3 in float32 and bfloat16,
            on batches as the input pipeline delivers them (RGBA + backgrounds, composited in-step)
  torch     the PyTorch twin (benchmarks/torch_reference.py) on the same device, its own process;
            skipped with a note where torch is not importable. For the GPU machine, torch can be
            installed from a carried wheel folder: `pip download torch --dest wheels/` here (CUDA
            wheel, Linux x86_64), carry wheels/, then `pip install --no-index --find-links wheels
            torch` before this command.
  buckets   simple_gru_k3 float32 at V4 and V12 too: the expected step time over n ~ U[1, 20]
            with config.view_buckets against padding every batch to 20 views
  pipeline  the training input pipeline at B64/V20 with data_workers=-1 (cores - 1 workers):
            delivered real views/s and per CPU-second, against the step's demand
  train     simple_gru_k3 on the procedural default for --train_s seconds (steps chosen from the
            measured rate of a short first run, then resumed), then IoU vs views on the test split
The procedural dataset renders in a background process while the step cases run (all cores; pass
--data_dir with a prebuilt one to skip that).
"""

import argparse
import json
import os
import subprocess
import sys
import time

_HERE = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(_HERE)

# Dense peak FLOP/s by device kind (NVIDIA datasheets, SXM, without sparsity): H200 / H100 SXM
# have the same tensor cores: ~989 TFLOP/s BF16, ~494 TF32 (what XLA uses for float32 convs and
# dots on GPUs by default), ~67 FP32 without tensor cores.
PEAK_TFLOPS = {"H200": {"bfloat16": 989.0, "tf32": 494.0, "float32": 67.0},
               "H100": {"bfloat16": 989.0, "tf32": 494.0, "float32": 67.0}}
MODELS = ("simple_gru_k3", "residual_gru_k3")
DTYPES = ("float32", "bfloat16")


def _sizes(smoke):
  if smoke:  # Width 1/8: every section's code runs at ~1/60 of the paper network's work.
    return {"batch": 2, "views": 2, "steps": 2, "objects": 40, "object_views": 6, "batches": 20,
            "width": 0.125}
  # 60 pipeline batches: well past what 15 workers prefetch during the 2 untimed ones.
  return {"batch": 64, "views": 20, "steps": 10, "objects": 2000, "object_views": 24, "batches": 60,
          "width": 1.0}


def _peak(device_kind, dtype):
  for name, peaks in PEAK_TFLOPS.items():
    if name in device_kind:
      return peaks[dtype] if dtype == "bfloat16" else peaks["tf32"]
  return None


# --- One step case, in a child process (`--case JSON`): its own peak memory and allocator. ---

def run_step_case(case):
  """Times one train step case; returns its figures (a dict)."""
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  import common  # pylint: disable=import-outside-toplevel
  from r2n2_jax import train, train_state  # pylint: disable=import-outside-toplevel

  config = common.load_config(os.path.join(_ROOT, "configs", case["model"] + ".py"))
  config.model.dtype = case["dtype"]
  config.model.width = case["width"]
  b, v = case["batch"], case["views"]
  host = common.jax_batch(b, v)
  rng = np.random.default_rng(1)  # Pipeline form: RGBA crops and their backgrounds.
  host["views"] = rng.integers(0, 256, (b, v, 127, 127, 4), dtype=np.uint8)
  host["background"] = rng.integers(225, 256, (b, v, 3), dtype=np.uint8)
  batch = jax.device_put(host)
  state = train_state.create_train_state(config, jax.random.key(0))
  start = time.perf_counter()
  compiled = jax.jit(train.train_step, donate_argnums=(0,)).lower(state, batch).compile()
  compile_s = time.perf_counter() - start
  state, m = compiled(state, batch)
  jax.block_until_ready(m)
  times = []
  for _ in range(2):  # Two blocks of steps dispatched back to back, as the loop runs them.
    start = time.perf_counter()
    for _ in range(case["steps"]):
      state, m = compiled(state, batch)
    jax.block_until_ready(m)
    times.append((time.perf_counter() - start) / case["steps"])
  device = jax.local_devices()[0]
  stats = device.memory_stats() or {}
  flops = common.compiled_flops(compiled)
  step_s = min(times)
  out = dict(case, backend=jax.default_backend(), device_kind=device.device_kind,
             compile_s=compile_s, step_s=step_s, views_per_s=b * v / step_s, flops=flops,
             peak_bytes=stats.get("peak_bytes_in_use"))
  peak = _peak(device.device_kind, case["dtype"])
  if flops:
    out["tflops_per_s"] = flops / step_s / 1e12
    out["fraction_of_peak"] = out["tflops_per_s"] / peak if peak else None
  return out


def run_torch_case(case):
  """The PyTorch twin's train step on this process's best device (autocast for bfloat16)."""
  import torch  # pylint: disable=import-outside-toplevel
  import common  # pylint: disable=import-outside-toplevel
  import torch_reference as tr  # pylint: disable=import-outside-toplevel

  device = "cuda" if torch.cuda.is_available() else "cpu"
  config = common.load_config(os.path.join(_ROOT, "configs", case["model"] + ".py"))
  model = tr.build(config.model).to(device)
  step = tr.make_train_step(model, config.learning_rate, config.weight_decay)
  inputs = [x.to(device) for x in tr.random_batch(case["batch"], case["views"])]
  dtype = torch.bfloat16 if case["dtype"] == "bfloat16" else torch.float32

  def run():
    with torch.autocast(device_type=device, dtype=dtype, enabled=case["dtype"] == "bfloat16"):
      return step(*inputs)

  run().item()  # Warm-up (cuDNN autotuning).
  times = []
  for _ in range(2):
    start = time.perf_counter()
    for _ in range(case["steps"]):
      loss = run()
    loss.item()
    times.append((time.perf_counter() - start) / case["steps"])
  peak = torch.cuda.max_memory_allocated() if device == "cuda" else None
  return dict(case, device=device, torch=torch.__version__, step_s=min(times), peak_bytes=peak)


def _child(kind, case, timeout):
  """Runs a case in a child process; its result, or {"skipped": why}."""
  if timeout < 10:
    return dict(case, skipped="time box")
  cmd = [sys.executable, os.path.abspath(__file__), "--" + kind, json.dumps(case)]
  env = dict(os.environ)
  env.pop("JAX_COMPILATION_CACHE_DIR", None)  # compile_s is a real compile, never a cache hit.
  try:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False,
                          env=env)
  except subprocess.TimeoutExpired:
    return dict(case, skipped=f"time box ({timeout:.0f} s) ran out")
  lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
  if proc.returncode or not lines:
    return dict(case, skipped=f"failed (rc {proc.returncode}): {proc.stderr.strip()[-400:]}")
  return json.loads(lines[-1][len("RESULT "):])


# --- Sections. ---

class Clock:
  def __init__(self, budget_s):
    self.end = time.monotonic() + budget_s

  def left(self):
    return self.end - time.monotonic()


def start_dataset_build(args, sizes):
  """Starts rendering the procedural dataset in a child process; returns it (None if prebuilt)."""
  code = ("import sys; from data_prep.procedural import ensure_procedural_dataset as e; "
          "print(e(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), 0, int(sys.argv[4])))")
  workers = max(1, len(os.sched_getaffinity(0)) - 2)  # Two cores for the step cases' compiles.
  env = dict(os.environ, PYOPENGL_PLATFORM=os.environ.get("PYOPENGL_PLATFORM", "egl"))
  return subprocess.Popen([sys.executable, "-c", code, args.data_dir, str(sizes["objects"]),
                           str(sizes["object_views"]), str(workers)], cwd=_ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def train_config(args, sizes):
  import common  # pylint: disable=import-outside-toplevel
  config = common.load_config(os.path.join(_ROOT, "configs", "simple_gru_k3.py"))
  config.data_dir = args.data_dir
  config.procedural.num_objects, config.procedural.views = sizes["objects"], sizes["object_views"]
  config.model.width = sizes["width"]
  if args.smoke:
    config.batch_size = config.eval_batch_size = 2
    config.max_views = config.eval_views = 2
    config.num_eval_batches = 1
  return config


def pipeline_section(args, sizes, clock):
  import input_pipeline as bench  # pylint: disable=import-outside-toplevel
  from r2n2_jax import input_pipeline, train  # pylint: disable=import-outside-toplevel
  config = train_config(args, sizes)
  config.batch_size, config.max_views, config.data_workers = sizes["batch"], sizes["views"], -1
  data_dir = train.prepare_dataset(config)
  it = input_pipeline.create_train_iterator(config, data_dir)
  real, padded, wall, cpu = bench.measure(it, sizes["batches"])
  del it
  return {"batch": sizes["batch"], "max_views": sizes["views"],
          "data_workers": input_pipeline.num_data_workers(config),
          "cores": len(os.sched_getaffinity(0)), "real_views_per_s": real / wall,
          "real_views_per_cpu_s": real / cpu, "real_fraction": real / padded,
          "mean_real_views_per_batch": real / sizes["batches"], "seconds_left": clock.left()}


def train_section(args, sizes, clock, reserve_s):
  """Short first run (compiles, rate), then resumed to fill the time box; test IoU vs views."""
  from r2n2_jax import evaluate, train  # pylint: disable=import-outside-toplevel
  config = train_config(args, sizes)
  workdir = os.path.join(args.out, "train")
  first = 20 if args.smoke else 60
  config.num_train_steps, config.log_every_steps = first, 10
  config.eval_every_steps = config.checkpoint_every_steps = 10 ** 9
  start = time.monotonic()
  results = train.train_and_evaluate(config, workdir)
  rate = results["train/steps_per_sec"]  # Of the last 10 steps: no compile left in it.
  budget = min(args.train_s, clock.left() - reserve_s) - (time.monotonic() - start)
  config.num_train_steps = first + max(0, int(budget * rate * 0.9))
  config.log_every_steps = 50
  if config.num_train_steps > first:
    results = train.train_and_evaluate(config, workdir)
  train_s = time.monotonic() - start
  test = evaluate.evaluate(config, workdir, split="test", batch_size=32,
                           max_objects=4 if args.smoke else -1,
                           view_counts=[1, 2] if args.smoke else None)
  return {"steps": config.num_train_steps, "train_s": train_s, "steps_per_s": rate,
          "final": results, "test_iou_by_views": test["iou_by_views"],
          "test_objects": test.get("num_objects")}


def bucket_section(args, base, steps, box_end):
  """simple_gru_k3 float32 step times at the view buckets (time left permitting) and the expected
  step time over n ~ U[1, V] views with config.view_buckets against padding to V (linear
  interpolation between the measured view counts)."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  from configs import default  # pylint: disable=import-outside-toplevel
  full = next((r for r in steps if r.get("step_s") and r["model"] == MODELS[0]
               and r["dtype"] == "float32"), None)
  if args.smoke or full is None:
    return {"skipped": "smoke mode" if args.smoke else "no float32 simple_gru_k3 step"}
  times = {full["views"]: full["step_s"]}
  for v in (4, 12):  # With V20 (and the step's near-linear cost in V) enough to interpolate.
    r = _child("step", dict(base, model=MODELS[0], dtype="float32", views=v), box_end())
    if r.get("step_s"):
      times[v] = r["step_s"]
  if len(times) < 2:
    return {"skipped": "time box", "step_s_by_views": times}
  vs = sorted(times)  # Below the smallest measured V: the line through the two smallest.
  slope = (times[vs[1]] - times[vs[0]]) / (vs[1] - vs[0])
  t = lambda v: (times[vs[0]] + slope * (v - vs[0]) if v < vs[0] else
                 float(np.interp(v, vs, [times[k] for k in vs])))
  config = default.get_config()
  config.max_views = full["views"]
  from r2n2_jax import input_pipeline  # pylint: disable=import-outside-toplevel
  padded = [input_pipeline.padded_view_count(config, n) for n in range(1, full["views"] + 1)]
  bucketed = float(np.mean([t(v) for v in padded]))
  return {"step_s_by_views": times, "view_buckets": list(config.view_buckets),
          "expected_step_s_bucketed": bucketed, "step_s_padded": times[full["views"]],
          "saving": 1 - bucketed / times[full["views"]]}


def markdown(report):
  lines = [f"# GPU check ({report['device']}, {report['date']})", "",
           "| case | compile s | step ms | views/s | TFLOP/step | TFLOP/s | of peak | peak GB |",
           "|---|---|---|---|---|---|---|---|"]
  for r in report["steps"] + report["torch"]:
    name = f"{'torch ' if 'torch' in r or r.get('kind') == 'torch' else ''}{r['model']} " \
           f"{r['dtype']} B{r['batch']}/V{r['views']}" + \
           (f" width {r['width']:g}" if r["width"] != 1.0 else "")
    if "skipped" in r:
      lines.append(f"| {name} | skipped: {r['skipped'][:120]} |||||||")
      continue
    fmt = lambda k, f, s=1.0: (f.format(r[k] * s) if r.get(k) is not None else "-")
    lines.append(f"| {name} | {fmt('compile_s', '{:.1f}')} | {fmt('step_s', '{:.1f}', 1e3)} | "
                 f"{r['batch'] * r['views'] / r['step_s']:,.0f} | {fmt('flops', '{:.2f}', 1e-12)} |"
                 f" {fmt('tflops_per_s', '{:.1f}')} | {fmt('fraction_of_peak', '{:.2f}')} | "
                 f"{fmt('peak_bytes', '{:.1f}', 1e-9)} |")
  p = report.get("pipeline") or {}
  if "skipped" in p or not p:
    lines += ["", f"Input pipeline: {p.get('skipped', 'not run')}"]
  else:
    lines += ["", f"Input pipeline (B{p['batch']}/max_views {p['max_views']}, data_workers="
              f"{p['data_workers']} of {p['cores']} cores): {p['real_views_per_s']:,.0f} real "
              f"views/s, {p['real_views_per_cpu_s']:,.0f} per CPU-second; "
              f"demand of the float32 simple_gru_k3 step: {p.get('demand_views_per_s', 0):,.0f} "
              f"views/s (delivered / demand {p.get('delivered_over_demand', float('nan')):.2f})"]
  b = report.get("buckets") or {}
  if b.get("saving") is not None:
    lines += ["", "View buckets (simple_gru_k3 float32, step s by views: " +
              ", ".join(f"V{k}: {v:.4f}" for k, v in sorted(b["step_s_by_views"].items())) +
              f"): expected step over n ~ U[1, V] {b['expected_step_s_bucketed']:.4f} s vs "
              f"{b['step_s_padded']:.4f} s padded, saving {b['saving']:.0%}"]
  else:
    lines += ["", f"View buckets: {b.get('skipped', 'not run')}"]
  t = report.get("train") or {}
  if "skipped" in t or not t:
    lines += ["", f"Training run: {t.get('skipped', 'not run')}"]
  else:
    lines += ["", f"Training run: simple_gru_k3, {t['steps']} steps in {t['train_s']:.0f} s "
              f"({t['steps_per_s']:.2f} steps/s); test IoU@0.4 by views: " +
              ", ".join(f"{k}: {v:.3f}" for k, v in t["test_iou_by_views"].items())]
  return "\n".join(lines) + "\n"


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", default="/tmp/gpu_check")
  parser.add_argument("--smoke", action="store_true", help="tiny sizes (CPU, the test suite)")
  parser.add_argument("--budget_s", type=float, default=560.0, help="whole run, seconds")
  parser.add_argument("--train_s", type=float, help="training run, seconds (300; smoke: 15)")
  parser.add_argument("--data_dir", default="/tmp/r2n2_gpu_check_data")
  parser.add_argument("--step", help=argparse.SUPPRESS)
  parser.add_argument("--torch", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.step or args.torch:  # Child process of one case.
    sys.path.insert(0, _HERE)
    case = json.loads(args.step or args.torch)
    print("RESULT " + json.dumps(run_step_case(case) if args.step else run_torch_case(case)))
    return

  if args.train_s is None:
    args.train_s = 15.0 if args.smoke else 300.0
  clock = Clock(args.budget_s)
  sizes = _sizes(args.smoke)
  os.makedirs(args.out, exist_ok=True)
  os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(args.out, "jax_cache"))
  # This process's own JAX work (pipeline, training) waits for the step cases' processes: without
  # this, its backend would hold 75% of the GPU's memory while they run.
  os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
  sys.path.insert(0, _HERE)
  import common  # pylint: disable=import-outside-toplevel,unused-import
  from absl import flags  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  flags.FLAGS(sys.argv[:1])  # grain's worker processes read absl flags (defaults here).
  builder = start_dataset_build(args, sizes)
  # Which backend, without starting one here: JAX_PLATFORMS as the children will see it.
  on_cpu = os.environ.get("JAX_PLATFORMS", "") == "cpu" or args.smoke
  report = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "sizes": sizes,
            "peak_tflops": PEAK_TFLOPS, "steps": [], "torch": []}
  base = {"batch": sizes["batch"], "views": sizes["views"], "steps": sizes["steps"],
          "width": sizes["width"]}
  train_reserve = args.train_s + (20 if args.smoke else 60)
  for model in MODELS:  # ~4 x (start-up + compile + 20 steps): the check's first half.
    for dtype in DTYPES:
      case = dict(base, model=model, dtype=dtype)
      if dtype == "bfloat16" and on_cpu:  # XLA:CPU: minutes per B2/V2 step.
        report["steps"].append(dict(case, skipped="bfloat16 is for GPUs: XLA:CPU emulates it"))
        continue
      report["steps"].append(_child("step", case, clock.left() - train_reserve - 40))
  for dtype in DTYPES[:1] if on_cpu else DTYPES:
    box = clock.left() - train_reserve - 30
    report["torch"].append(_child("torch", dict(base, model=MODELS[0], dtype=dtype, kind="torch",
                                                width=1.0), box))  # The twin has the paper's.
  report["buckets"] = bucket_section(args, base, report["steps"],
                                     lambda: clock.left() - train_reserve - 30)
  out, err = builder.communicate()
  report["device"] = f"{jax.devices()[0].device_kind} ({jax.default_backend()})"
  if builder.returncode:
    report["pipeline"] = report["train"] = {"skipped": f"dataset build failed: {err[-400:]}"}
  else:
    report["pipeline"] = pipeline_section(args, sizes, clock)
    step = next((r for r in report["steps"] if r.get("step_s") and r["model"] == MODELS[0]
                 and r["dtype"] == "float32"), None)
    if step:
      demand = report["pipeline"]["mean_real_views_per_batch"] / step["step_s"]
      report["pipeline"].update(demand_views_per_s=demand,
                                delivered_over_demand=report["pipeline"]["real_views_per_s"] / demand)
    report["train"] = train_section(args, sizes, clock, reserve_s=20 if args.smoke else 45)
  report["seconds_used"] = args.budget_s - clock.left()
  with open(os.path.join(args.out, "gpu_check.json"), "w") as f:
    json.dump(report, f, indent=2, default=str)
  with open(os.path.join(args.out, "gpu_check.md"), "w") as f:
    f.write(markdown(report))
  print(markdown(report))


if __name__ == "__main__":
  if "--step" not in sys.argv and "--torch" not in sys.argv:  # Children inherit the setting.
    sys.path.insert(0, _ROOT)
    from r2n2_jax import process_setup  # pylint: disable=g-import-not-at-top
    process_setup.setup("benchmarks/gpu_check.py")  # As launch.py runs training (host pipeline).
  main()
