"""One command that checks video_gc's CUDA path on a machine with a GPU and measures it.

    bash tools/check_gpu.sh OUT                    # installs the wheels in .whl/ (if any), then this script
    python tools/check_gpu.py OUT                  # when video_gc's dependencies are importable
    python tools/check_gpu.py --device cpu --quick OUT   # every section end to end at tiny sizes, no GPU

Sections, run one after the other, each in its own process with its own time limit,
all inside one total budget (--budget, default 450 s), so that one slow section cannot
eat the others' time (a section out of time is stopped and keeps what it measured so far):

  env        versions, the GPU, the carried libraries; every video_gc module imported
  pytest     ``python -m pytest -m cuda -q``: the CUDA tests (tests/test_cuda.py)
  inference  ours in each inference mode vs PyTorchVideo's slow_r50 on the same weights
             (video_gc.bench.model's weight sharing), 8x224x224, batch 1 and 32: clips/s,
             speed ratio, logit difference (TF32 as PyTorch defaults, and off for fp32)
  train      a training step at batch 32 (fp32, bf16 AMP, fp16 AMP with a GradScaler),
             ours vs PyTorchVideo, and peak GPU memory per training clip
  data       for the demo config and Slow R50 at 224: step time with clips through the
             real loader vs the same batch already on the GPU (the data path's share)
  compile    inference mode ``compile`` vs PyTorchVideo under the same torch.compile

Writes into OUT: check_gpu.json (everything), check_gpu.txt (the report, also printed),
check_gpu.log (the sections' own output), pytest.txt and junit.xml. Exit status 0 when
every section ran and passed, 1 otherwise (the report is written either way).
PyTorchVideo runs each mode's layout, autocast dtype and compile, never our fusion.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SLOW_CFG = os.path.join(REPO, "configs", "kinetics", "SLOW_8x8_R50.yaml")
DEMO_CFG = os.path.join(REPO, "configs", "demo", "SLOW_GC_DEMO.yaml")

# (name, time limit in seconds on a GPU, in --quick mode). The order is the run order.
SECTIONS = (
    ("env", 60, 120),
    ("pytest", 210, 240),
    ("inference", 120, 240),
    ("train", 100, 240),
    ("data", 120, 300),
    ("compile", 200, 420),
)
SECTION_NAMES = tuple(name for name, _, _ in SECTIONS)
DEFAULT_BUDGET = {False: 450, True: 1500}
# A section is not started with less than this left of the budget.
MIN_SECTION_S = 20
INFERENCE_MODES = ("reference", "fp32", "channels_last", "bf16", "fp16")
FP32_MODES = ("reference", "fused", "fp32", "channels_last")
OUT_FILES = ("check_gpu.json", "check_gpu.txt", "check_gpu.log", "pytest.txt", "junit.xml")


# ---------------------------------------------------------------------------
# Sizes
# ---------------------------------------------------------------------------
def sizes(args) -> dict:
    """Clip size, batches, repeats and worker count for this run (--quick: tiny)."""
    cpus = os.cpu_count() or 1
    if args.quick:
        s = dict(crop=32, frames=4, width=8, classes=10, batches=[1, 2], train_batch=2, repeats=1, warmup=1,
                 train_repeats=1, train_warmup=1, workers=1, data_batches=2, r50_videos=2, r50_video_seconds=1.0,
                 r50_video_size=(64, 80), demo_videos_per_class=1, demo_batch=4, demo_width=4, jpeg_clips=2)
    else:
        s = dict(crop=224, frames=8, width=64, classes=400, batches=[1, 32], train_batch=32, repeats=10, warmup=3,
                 train_repeats=5, train_warmup=2, workers=max(1, min(14, cpus - 2)), data_batches=None,
                 r50_videos=16, r50_video_seconds=10.0, r50_video_size=(256, 340), demo_videos_per_class=4,
                 demo_batch=16, demo_width=8, jpeg_clips=32)
    for key in ("crop", "frames", "width", "train_batch", "repeats", "workers"):
        value = getattr(args, key, None)
        if value is not None:
            s[key] = value
    if args.batches:
        s["batches"] = sorted(args.batches)
    return s


# ---------------------------------------------------------------------------
# The parent: runs each section in a child process, then writes the report
# ---------------------------------------------------------------------------
def _child_env(work: str) -> dict:
    env = dict(os.environ)
    paths = [REPO] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != REPO]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("TORCHINDUCTOR_CACHE_DIR", os.path.join(work, "inductor_cache"))
    env.setdefault("PYTHONWARNINGS", "ignore::FutureWarning,ignore::DeprecationWarning")
    return env


def _kill_group(proc: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def run_section(name: str, limit: float, argv: list[str], work: str, log) -> dict:
    """Run one section in a child process for at most ``limit`` seconds; what it recorded, with its status."""
    cmd = [sys.executable, "-m", "video_gc.bench.gpu", "--section", name, "--work", work,
           "--section-limit", str(int(limit)), *argv]
    log.write(f"\n===== section {name} (limit {limit:.0f} s) =====\n")
    log.flush()
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=_child_env(work),
                            start_new_session=True)
    try:
        code = proc.wait(timeout=limit)
        status = "ok" if code == 0 else "failed"
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        code, status = None, "timeout"
    seconds = round(time.monotonic() - start, 1)
    recorded = _read_json(os.path.join(work, f"{name}.json")) or {}
    entry = {"status": status, "seconds": seconds, "limit_s": round(limit), "exit_code": code,
             "result": recorded.get("result", {})}
    if recorded.get("error"):
        entry["error"] = recorded["error"]
    if status == "ok" and recorded.get("verdict") == "failed":
        entry["status"] = "failed"  # the section ran, what it checked did not pass
    return entry


def _read_json(path: str):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _write_json(path: str, data) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, default=str, allow_nan=True)
    os.replace(tmp, path)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.section:
        return child_main(args)
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    for name in OUT_FILES:
        if os.path.exists(os.path.join(out, name)):
            os.remove(os.path.join(out, name))
    budget = args.budget or DEFAULT_BUDGET[args.quick]
    chosen = args.sections or list(SECTION_NAMES)
    unknown = sorted(set(chosen) - set(SECTION_NAMES))
    if unknown:
        print(f"error: unknown section(s) {', '.join(unknown)}; allowed: {', '.join(SECTION_NAMES)}", file=sys.stderr)
        return 2
    work = args.work or tempfile.mkdtemp(prefix="check_gpu_")
    os.makedirs(work, exist_ok=True)
    passthrough = _passthrough(args, out)
    start = time.monotonic()
    report = {"tool": "tools/check_gpu.py", "device": args.device, "quick": args.quick, "budget_s": budget,
              "sizes": sizes(args), "started": time.strftime("%Y-%m-%d %H:%M:%S"), "sections": {}}
    print(f"[check_gpu] device {args.device}{' (quick)' if args.quick else ''}; budget {budget} s; "
          f"sections {', '.join(chosen)}; output {out}", flush=True)
    with open(os.path.join(out, "check_gpu.log"), "a", encoding="utf-8") as log:
        for name, limit_gpu, limit_quick in SECTIONS:
            if name not in chosen:
                continue
            left = budget - (time.monotonic() - start)
            limit = min(limit_quick if args.quick else limit_gpu, left)
            if args.section_scale:
                limit = min(limit * args.section_scale, left)
            if limit < MIN_SECTION_S:
                report["sections"][name] = {"status": "skipped", "seconds": 0.0, "limit_s": 0,
                                            "reason": f"out of budget ({left:.0f} s left)", "result": {}}
                print(f"[check_gpu] {name:<9} skipped: {left:.0f} s of the budget left", flush=True)
                continue
            print(f"[check_gpu] {name:<9} running (limit {limit:.0f} s) ...", flush=True)
            entry = run_section(name, limit, passthrough, work, log)
            report["sections"][name] = entry
            print(f"[check_gpu] {name:<9} {entry['status']} in {entry['seconds']:.1f} s", flush=True)
            report["total_seconds"] = round(time.monotonic() - start, 1)
            _write_json(os.path.join(out, "check_gpu.json"), report)
            with open(os.path.join(out, "check_gpu.txt"), "w", encoding="utf-8") as f:
                f.write(format_report(report) + "\n")  # so far: a run stopped from outside still has it
    report["total_seconds"] = round(time.monotonic() - start, 1)
    report["ok"] = all(s["status"] == "ok" for s in report["sections"].values())
    _write_json(os.path.join(out, "check_gpu.json"), report)
    text = format_report(report)
    with open(os.path.join(out, "check_gpu.txt"), "w", encoding="utf-8") as f:
        f.write(text + "\n")
    print(text, flush=True)
    if not args.keep_work and not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if report["ok"] else 1


def _passthrough(args, out: str) -> list[str]:
    argv = ["--device", args.device]
    if args.quick:
        argv.append("--quick")
    for key in ("crop", "frames", "width", "train_batch", "repeats", "workers"):
        value = getattr(args, key)
        if value is not None:
            argv += [f"--{key.replace('_', '-')}", str(value)]
    if args.batches:
        argv += ["--batches", ",".join(map(str, args.batches))]
    if args.pytest_args:
        argv.append(f"--pytest-args={args.pytest_args}")
    return argv + [out]


# ---------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------
def _fmt(value, spec: str = ".3g") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return format(value, spec)
    return str(value)


def format_report(report: dict) -> str:
    sections = report["sections"]
    lines = [f"video_gc GPU check: device {report['device']}{' (quick sizes)' if report['quick'] else ''}, "
             f"{report.get('total_seconds', 0):.0f} s of a {report['budget_s']} s budget, "
             f"{'ALL OK' if report.get('ok') else 'NOT ALL OK'}", "",
             "where the time went:", f"  {'section':<10} {'status':<8} {'seconds':>8} {'limit':>6}"]
    for name, entry in sections.items():
        lines.append(f"  {name:<10} {entry['status']:<8} {entry['seconds']:>8.1f} {entry['limit_s']:>6}"
                     + (f"  ({entry['reason']})" if entry.get("reason") else "")
                     + (f"  error: {entry['error'].strip().splitlines()[-1]}" if entry.get("error") else ""))
    env = sections.get("env", {}).get("result", {})
    if env:
        lines += ["", f"torch {env.get('torch')} (CUDA {env.get('torch_cuda')}, cuDNN {env.get('cudnn')}), "
                      f"torchvision {env.get('torchvision')}, Python {env.get('python')}; "
                      f"GPU {env.get('gpu_name', 'none')}; {env.get('cpu_count')} CPUs"]
        if env.get("import_failures"):
            lines.append(f"modules that failed to import: {env['import_failures']}")
        if env.get("missing_apis"):
            lines.append(f"torch APIs missing: {env['missing_apis']}")
    pytest = sections.get("pytest", {}).get("result", {})
    if pytest:
        lines += ["", f"pytest -m cuda: exit {pytest.get('exit_code')}; {pytest.get('summary', '')}"]
        for failure in pytest.get("failures", [])[:20]:
            lines.append(f"  FAILED {failure}")
    for name in ("inference", "compile"):
        result = sections.get(name, {}).get("result", {})
        if result.get("modes"):
            lines += ["", _inference_table(name, result)]
    train = sections.get("train", {}).get("result", {})
    if train.get("precisions"):
        lines += ["", _train_table(train)]
    data = sections.get("data", {}).get("result", {})
    if data.get("runs"):
        lines += ["", _data_table(data)]
    return "\n".join(lines)


def _inference_table(name: str, result: dict) -> str:
    s = result.get("settings", {})
    lines = [f"{name}: ours vs PyTorchVideo slow_r50, same weights, clip {s.get('frames')}x{s.get('crop')}x{s.get('crop')}"
             f" (TF32 convs {s.get('cudnn_allow_tf32')}, cudnn.benchmark {s.get('cudnn_benchmark')}); "
             f"ratio = PTV time / our time",
             f"  {'mode':<14} {'batch':>5} {'ours clips/s':>12} {'PTV clips/s':>11} {'ratio':>6} "
             f"{'|d| vs PTV fp32':>15} {'TF32 off':>9} {'top-1':>6} {'1st call s':>10}"]
    for m in result["modes"]:
        if m.get("skipped"):
            lines.append(f"  {m['mode']:<14} skipped: {m['skipped']}")
            continue
        first = m.get("first_call_s", {})
        for i, r in enumerate(m.get("rows", [])):
            head = i == 0
            lines.append(
                f"  {m['mode']:<14} {r['batch']:>5} {r['ours_clips_per_s']:>12.1f} {r['pytorchvideo_clips_per_s']:>11.1f} "
                f"{r['ratio']:>5.2f}x "
                f"{_fmt(m.get('max_abs_diff_vs_ptv_fp32')) if head else '':>15} "
                f"{_fmt(m.get('max_abs_diff_vs_ptv_fp32_tf32_off')) if head else '':>9} "
                f"{_fmt(m.get('top1_vs_ptv_fp32'), '.2f') if head else '':>6} "
                f"{(_fmt(first.get('ours'), '.1f') + '/' + _fmt(first.get('pytorchvideo'), '.1f')) if head else '':>10}")
        for skipped in m.get("skipped_batches", []):
            lines.append(f"  {m['mode']:<14} {skipped['batch']:>5} skipped: {skipped['reason']}")
        if m.get("dynamo"):
            lines.append("  " + "; ".join(f"{who}: {d.get('unique_graphs')} graph(s), {d.get('graph_breaks')} graph break(s)"
                                          for who, d in m["dynamo"].items()))
    return "\n".join(lines)


def _train_table(result: dict) -> str:
    lines = [f"training step, batch {result.get('batch')}, clip {result.get('frames')}x{result.get('crop')}x"
             f"{result.get('crop')}, SGD; ratio = PTV time / our time; memory: peak GPU memory of the step",
             f"  {'precision':<9} {'ours ms':>8} {'PTV ms':>8} {'ratio':>6} {'|d| logits':>10} "
             f"{'ours MB/clip':>12} {'PTV MB/clip':>11} {'ours act MB/clip':>16} {'peak GB':>8}"]
    for p in result["precisions"]:
        if p.get("skipped"):
            lines.append(f"  {p['precision']:<9} skipped: {p['skipped']}")
            continue
        r = p.get("row") or {}
        mem = p.get("memory") or {}
        ours, ptv = mem.get("ours") or {}, mem.get("pytorchvideo") or {}
        lines.append(f"  {p['precision']:<9} {_fmt(r.get('ours_ms'), '.1f'):>8} {_fmt(r.get('pytorchvideo_ms'), '.1f'):>8} "
                     f"{_fmt(r.get('ratio'), '.2f'):>5}x {_fmt(p.get('max_abs_diff')):>10} "
                     f"{_fmt(ours.get('peak_mb_per_clip'), '.0f'):>12} {_fmt(ptv.get('peak_mb_per_clip'), '.0f'):>11} "
                     f"{_fmt(ours.get('activation_mb_per_clip'), '.0f'):>16} "
                     f"{_fmt(None if ours.get('peak_mb') is None else ours['peak_mb'] / 1024, '.1f'):>8}")
    return "\n".join(lines)


def _data_table(result: dict) -> str:
    lines = [f"data path: loader workers of {result.get('cpu_count')} CPUs, pin_memory {result.get('pin_memory')}; "
             f"share = 1 - (step on a resident batch) / (step fed by the loader); wait: time blocked on the loader",
             f"  {'config':<10} {'precision':<9} {'batch':>5} {'workers':>7} {'resident ms':>11} {'loader ms':>9} "
             f"{'wait ms':>8} {'share':>6} {'loader clips/s':>14}"]
    for r in result["runs"]:
        if r.get("skipped"):
            lines.append(f"  {r['config']:<10} {r.get('precision', ''):<9} skipped: {r['skipped']}")
            continue
        lines.append(f"  {r['config']:<10} {r['precision']:<9} {r['batch']:>5} {r.get('workers', '-'):>7} "
                     f"{_fmt(r.get('resident_step_ms'), '.1f'):>11} "
                     f"{_fmt(r.get('loader_step_ms'), '.1f'):>9} {_fmt(r.get('loader_wait_ms'), '.1f'):>8} "
                     f"{_fmt(r.get('data_share'), '.2f'):>6} {_fmt(r.get('loader_only_clips_per_s'), '.1f'):>14}")
    jpeg = result.get("jpeg_decode")
    if jpeg:
        gpu = (f"GPU (one batched call of {jpeg['clips'] * jpeg['frames_per_clip']} images) "
               f"{_fmt(jpeg['cuda_ms_per_clip'], '.3f')} ms wall, of which CPU "
               f"{_fmt(jpeg['cuda_cpu_ms_per_clip'], '.3f')} ms" if jpeg["cuda_ms_per_clip"] is not None
               else f"GPU: not measured ({jpeg['cuda_error']})")
        lines.append(f"  frame-store JPEG decoding, {jpeg['frames_per_clip']} images of {jpeg['size']} at quality "
                     f"{jpeg['quality']} per clip: CPU (one thread) {_fmt(jpeg['cpu_ms_per_clip'], '.3f')} ms; {gpu}")
    lines += [f"  note: {note}" for note in result.get("notes", [])]
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# The child: one section, results written as they come
# ---------------------------------------------------------------------------
class Recorder:
    """The section's results, rewritten to ``path`` at every change so a stopped section keeps them."""

    def __init__(self, path: str, limit: float) -> None:
        self.path, self.limit, self.start = path, limit, time.monotonic()
        self.data = {"result": {}}

    @property
    def result(self) -> dict:
        return self.data["result"]

    def set(self, key: str, value) -> None:
        self.result[key] = value
        self.flush()

    def append(self, key: str, value) -> None:
        self.result.setdefault(key, []).append(value)
        self.flush()

    def fail(self, why: str) -> None:
        self.data["verdict"] = "failed"
        self.result.setdefault("problems", []).append(why)
        self.flush()

    def left(self) -> float:
        return self.limit - (time.monotonic() - self.start)

    def flush(self) -> None:
        _write_json(self.path, self.data)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def child_main(args) -> int:
    if REPO not in sys.path:
        sys.path.insert(0, REPO)
    rec = Recorder(os.path.join(args.work, f"{args.section}.json"), float(args.section_limit or 1e9))
    rec.flush()
    ctx = argparse.Namespace(**{**vars(args), **sizes(args), "out": os.path.abspath(args.out)})
    try:
        SECTION_FUNCS[args.section](ctx, rec)
    except Exception:  # noqa: BLE001 - recorded, and the section counts as failed
        rec.data["error"] = traceback.format_exc()
        rec.flush()
        traceback.print_exc()
        return 1
    return 1 if rec.data.get("verdict") == "failed" else 0


def _torch_device(ctx):
    import torch

    torch.manual_seed(0)
    torch.set_flush_denormal(True)
    device = torch.device(ctx.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda: torch.cuda.is_available() is False")
        torch.cuda.set_device(0)
        device = torch.device("cuda", 0)
    return torch, device


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _tf32:
    """TF32 for convs and matmuls set to ``enabled`` inside the block (legacy flags, present in every torch 2.x)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __enter__(self):
        import torch

        self.saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
        torch.backends.cudnn.allow_tf32 = self.enabled
        torch.backends.cuda.matmul.allow_tf32 = self.enabled

    def __exit__(self, *exc):
        import torch

        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = self.saved
        return False


# --- env -------------------------------------------------------------------
# torch APIs video_gc calls: without the first group it fails; the second is used where present.
API_REQUIRED = (
    "torch.get_autocast_dtype", "torch.is_autocast_enabled", "torch.amp.GradScaler", "torch.compile",
    "torch.ops.mkldnn._convolution_pointwise", "torch.ops.mkldnn._convolution_pointwise_",
    "torch.ops.mkldnn._reorder_convolution_weight", "torch.nn.SyncBatchNorm", "torch.distributed.FileStore",
    "torch.distributed.TCPStore",
)
API_OPTIONAL = ("torch.cpu._is_avx512_bf16_supported", "torch.cpu._is_amx_tile_supported", "torch.cuda.nccl.version")


def _probe(path: str) -> bool:
    import importlib

    parts = path.split(".")
    obj = importlib.import_module(parts[0])
    for part in parts[1:]:
        try:
            obj = getattr(obj, part)
        except (AttributeError, RuntimeError):
            return False
    return True


def section_env(ctx, rec) -> None:
    import importlib
    import pkgutil
    import platform

    import torch
    import torchvision

    info = {"python": platform.python_version(), "platform": platform.platform(), "cpu_count": os.cpu_count(),
            "torch": torch.__version__, "torchvision": torchvision.__version__, "torch_cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            "cuda_available": torch.cuda.is_available(), "pythonpath": os.environ.get("PYTHONPATH", "")}
    rec.data["result"].update(info)
    rec.flush()
    libs = {}
    for name in ("numpy", "av", "decord", "fvcore", "iopath", "yacs", "pytorchvideo", "yaml", "PIL", "matplotlib",
                 "tensorboard", "tqdm"):
        try:
            module = importlib.import_module(name)
            libs[name] = {"version": str(getattr(module, "__version__", "?")), "file": getattr(module, "__file__", None)}
        except Exception as err:  # noqa: BLE001 - reported
            libs[name] = {"error": f"{type(err).__name__}: {err}"}
    info["libraries"] = libs
    info["missing_apis"] = [p for p in API_REQUIRED if not _probe(p)]
    info["missing_optional_apis"] = [p for p in API_OPTIONAL if not _probe(p)]
    for device_type in ("cpu", "cuda"):  # the per-device signatures (PyTorch >= 2.4)
        try:
            torch.is_autocast_enabled(device_type)
            torch.get_autocast_dtype(device_type)
        except (TypeError, RuntimeError, AttributeError) as err:
            info["missing_apis"].append(f"torch.is_autocast_enabled / get_autocast_dtype({device_type!r}): {err}")
    info["weights_only_default"] = str(__import__("inspect").signature(torch.load).parameters["weights_only"].default)
    info["flags"] = {"cudnn_benchmark": torch.backends.cudnn.benchmark,
                     "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
                     "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update({"gpu_name": props.name, "gpu_capability": f"{props.major}.{props.minor}",
                     "gpu_memory_gib": round(props.total_memory / 2**30, 1), "gpu_count": torch.cuda.device_count()})
        try:
            info["nccl"] = ".".join(map(str, torch.cuda.nccl.version()))
        except Exception as err:  # noqa: BLE001
            info["nccl"] = f"unavailable: {err}"
        x = torch.randn(2, 8, 4, 16, 16, device="cuda")
        w = torch.randn(8, 8, 3, 3, 3, device="cuda")
        with torch.autocast("cuda", dtype=torch.float16):
            y = torch.nn.functional.conv3d(x, w, padding=1)
        ref = torch.nn.functional.conv3d(x.double(), w.double(), padding=1)
        info["cuda_fp16_conv3d_rel_err"] = float((y.double() - ref).abs().max() / ref.abs().max())
    if shutil.which("nvidia-smi"):
        try:
            info["nvidia_smi"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.SubprocessError) as err:
            info["nvidia_smi"] = f"failed: {err}"
    rec.data["result"].update(info)
    rec.flush()

    import video_gc

    failures = {}
    for module in pkgutil.walk_packages(video_gc.__path__, "video_gc."):
        try:
            importlib.import_module(module.name)
        except Exception as err:  # noqa: BLE001 - reported
            failures[module.name] = f"{type(err).__name__}: {err}"
    rec.set("import_failures", failures)
    missing = [name for name in ("av", "decord", "fvcore", "iopath", "yacs", "pytorchvideo") if "error" in libs[name]]
    if failures or missing or info["missing_apis"]:
        rec.fail(f"imports: modules {sorted(failures)}, libraries {missing}, torch APIs {info['missing_apis']}")
    if ctx.device == "cuda" and not torch.cuda.is_available():
        rec.fail("no CUDA device")
    log(f"env: torch {torch.__version__}, GPU {info.get('gpu_name', 'none')}, {len(failures)} import failures")


# --- pytest ----------------------------------------------------------------
def section_pytest(ctx, rec) -> None:
    import xml.etree.ElementTree as ET

    junit = os.path.join(ctx.out, "junit.xml")
    cmd = [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}"]
    if ctx.pytest_args:
        cmd += ctx.pytest_args.split()
    elif ctx.quick:
        cmd.append("tests/test_cuda.py")
    else:
        try:
            import xdist  # noqa: F401 - four processes share the GPU when pytest-xdist is there
            cmd += ["-n", "4"]
        except ImportError:
            pass
    rec.set("command", " ".join(cmd[1:]))
    log(f"pytest: {' '.join(cmd[1:])}")
    with open(os.path.join(ctx.out, "pytest.txt"), "w", encoding="utf-8") as out:
        code = subprocess.call(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    with open(os.path.join(ctx.out, "pytest.txt"), encoding="utf-8", errors="replace") as f:
        text = f.read()
    summary = [line for line in text.splitlines() if line.strip()][-1:] or [""]
    result = {"exit_code": code, "summary": summary[0].strip("= ")}
    try:
        root = ET.parse(junit).getroot()
        suite = root if root.tag == "testsuite" else root.find("testsuite")
        counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
        counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
        result.update(counts)
        result["failures"] = [f"{case.get('classname')}::{case.get('name')}" for case in suite.iter("testcase")
                              if case.find("failure") is not None or case.find("error") is not None]
    except (OSError, ET.ParseError, AttributeError) as err:
        result["junit_error"] = str(err)
    rec.data["result"].update(result)
    rec.flush()
    if code != 0:
        rec.fail(f"pytest exit status {code}")
    log(f"pytest: exit {code}; {result['summary']}")


# --- shared model set-up ---------------------------------------------------
def _slow_cfg(ctx, extra=()):
    from video_gc.config import load_config

    opts = ["RESNET.WIDTH_PER_GROUP", str(ctx.width), "MODEL.NUM_CLASSES", str(ctx.classes),
            "DATA.NUM_FRAMES", str(ctx.frames), "DATA.TRAIN_CROP_SIZE", str(ctx.crop),
            "DATA.TEST_CROP_SIZE", str(ctx.crop)]
    return load_config(SLOW_CFG, opts + list(extra))


def _model_pair(ctx, device):
    """Our Slow R50 and PyTorchVideo's slow_r50 with the same weights (calibrated random ones, shared
    between sections through a file in the work folder), both eval and on the CPU."""
    from video_gc.bench.model import build_pytorchvideo_model, load_same_weights, shared_weights_file
    from video_gc.models import build_model

    cfg = _slow_cfg(ctx)
    ours = build_model(cfg)
    theirs = build_pytorchvideo_model("slow", depth=50, num_frames=ctx.frames, crop=ctx.crop,
                                      num_classes=ctx.classes, width=ctx.width)
    folder = os.path.join(ctx.work, f"weights_{ctx.crop}_{ctx.frames}_{ctx.width}_{ctx.classes}")
    path = os.path.join(folder, "pytorchvideo_random.pyth")
    if not os.path.isfile(path):
        os.makedirs(folder, exist_ok=True)
        start = time.perf_counter()
        path = shared_weights_file(theirs, folder, crop=ctx.crop, frames=ctx.frames, device=device)
        log(f"shared weights calibrated on {device} in {time.perf_counter() - start:.1f} s")
    load_same_weights(ours, theirs, path)
    return cfg, ours.eval(), theirs.eval()


def _ptv_runner(theirs, mode: str, device):
    """PyTorchVideo's model with ``mode``'s layout, autocast dtype and torch.compile (no fusion)."""
    import copy

    import torch

    from video_gc.inference import resolve_mode
    from video_gc.inference.modes import InferenceModel
    from video_gc.models.layout import to_channels_last_3d

    settings = resolve_mode(mode, device)
    net = copy.deepcopy(theirs).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    net = net.to(device)
    if settings.channels_last:
        net = to_channels_last_3d(net)
    if settings.compile:
        net = torch.compile(net, options={"freezing": True})
    return InferenceModel(net, settings, device)


def _settings(torch, ctx, device) -> dict:
    return {"crop": ctx.crop, "frames": ctx.frames, "width": ctx.width, "classes": ctx.classes,
            "batches": ctx.batches, "repeats": ctx.repeats, "warmup": ctx.warmup, "device": str(device),
            "gpu": torch.cuda.get_device_name(0) if device.type == "cuda" else None,
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32 if device.type == "cuda" else None}


def _compare_modes(ctx, rec, modes, *, descending: bool = False) -> None:
    """Each mode: first-call time, logit differences, then interleaved timings at each batch."""
    from dataclasses import asdict

    from video_gc.bench.model import _row, top1_agreement
    from video_gc.bench.timing import interleaved_timings
    from video_gc.inference import prepare_for_inference

    torch, device = _torch_device(ctx)
    if device.type == "cpu":
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", 0)) or os.cpu_count() or 1)
    _, ours, theirs = _model_pair(ctx, device)
    rec.set("settings", _settings(torch, ctx, device))
    generator = torch.Generator().manual_seed(0)
    clips = {b: torch.randn(b, 3, ctx.frames, ctx.crop, ctx.crop, generator=generator).to(device)
             for b in ctx.batches}
    check = clips[max(ctx.batches)]
    with torch.inference_mode():
        reference = _ptv_runner(theirs, "reference", device)
        ref = reference(check)
        ref_strict = None
        if device.type == "cuda":
            with _tf32(False):
                ref_strict = reference(check)
        del reference
    rec.set("ptv_fp32_logit_max", float(ref.abs().max()))
    order = sorted(ctx.batches, reverse=descending)
    for mode in modes:
        entry = {"mode": mode}
        if mode == "fp16" and device.type != "cuda":
            entry["skipped"] = "fp16 inference needs CUDA"
            rec.append("modes", entry)
            continue
        if rec.left() < 15:
            entry["skipped"] = "section time limit"
            rec.append("modes", entry)
            continue
        rec.append("modes", entry)
        log(f"{mode}: preparing")
        fast = prepare_for_inference(ours, mode, device)
        other = _ptv_runner(theirs, mode, device)
        entry["resolved_mode"] = fast.settings.mode
        first = {}
        with torch.inference_mode():
            for name, fn in (("ours", fast), ("pytorchvideo", other)):
                counters = _dynamo_counters() if fast.settings.compile else None
                if counters is not None:
                    counters.clear()
                _sync(device)
                start = time.perf_counter()
                out = fn(check)
                _sync(device)
                first[name] = round(time.perf_counter() - start, 2)
                if counters is not None:
                    entry.setdefault("dynamo", {})[name] = _dynamo_summary(counters)
                if name == "ours":
                    a = out
                else:
                    b = out
        entry["first_call_s"] = first
        entry["max_abs_diff_vs_ptv_fp32"] = float((a - ref).abs().max())
        entry["max_abs_diff_vs_ptv_same_mode"] = float((a - b).abs().max())
        entry["top1_vs_ptv_fp32"] = top1_agreement(ref, a)
        entry["ptv_top1_vs_ptv_fp32"] = top1_agreement(ref, b)
        # fp32 precision without TF32 (not for compile: a changed TF32 flag may recompile).
        if ref_strict is not None and fast.settings.dtype is None and not fast.settings.compile:
            with torch.inference_mode(), _tf32(False):
                entry["max_abs_diff_vs_ptv_fp32_tf32_off"] = float((fast(check) - ref_strict).abs().max())
        rec.flush()
        log(f"{mode}: |d| {entry['max_abs_diff_vs_ptv_fp32']:.3g}, first call {first}")
        for batch in order:
            if rec.left() < 10:
                entry.setdefault("skipped_batches", []).append({"batch": batch, "reason": "section time limit"})
                rec.flush()
                continue
            x = clips[batch]
            with torch.inference_mode():
                times = interleaved_timings({"ours": lambda: fast(x), "pytorchvideo": lambda: other(x)},
                                            repeats=ctx.repeats, warmup=ctx.warmup, device=device)
            entry.setdefault("rows", []).append(asdict(_row("inference", batch, times)))
            rec.flush()
            row = entry["rows"][-1]
            log(f"{mode} batch {batch}: ours {row['ours_clips_per_s']} clips/s, PTV {row['pytorchvideo_clips_per_s']}, "
                f"ratio {row['ratio']}")
        del fast, other
        if device.type == "cuda":
            torch.cuda.empty_cache()
    for entry in rec.result.get("modes", []):
        tolerance = 1e-3 * max(1.0, rec.result["ptv_fp32_logit_max"])
        strict = entry.get("max_abs_diff_vs_ptv_fp32_tf32_off")
        if strict is None and device.type == "cpu" and entry.get("resolved_mode") in FP32_MODES:
            strict = entry.get("max_abs_diff_vs_ptv_fp32")
        if strict is not None and strict > tolerance:
            rec.fail(f"{entry['mode']}: |logit difference| {strict:.3g} vs PyTorchVideo fp32 > {tolerance:.3g}")
        # float32 modes must agree on the class; bf16 / fp16 agreement on random weights is reported
        # only (near-ties flip), tests/test_cuda.py checks it on a fixed set.
        half = entry.get("resolved_mode") in ("bf16", "fp16")
        if not half and entry.get("top1_vs_ptv_fp32") is not None and entry["top1_vs_ptv_fp32"] < 0.9:
            rec.fail(f"{entry['mode']}: top-1 agreement {entry['top1_vs_ptv_fp32']:.2f} with PyTorchVideo fp32 < 0.9")


def section_inference(ctx, rec) -> None:
    _compare_modes(ctx, rec, INFERENCE_MODES)


def _dynamo_counters():
    try:
        from torch._dynamo.utils import counters
    except ImportError:
        return None
    return counters


def _dynamo_summary(counters) -> dict:
    """What Dynamo did in one first call: graphs compiled, graph breaks (reasons cut short), stats."""
    breaks = counters.get("graph_break", {})
    stats = dict(counters.get("stats", {}))
    return {"unique_graphs": stats.get("unique_graphs"), "graph_breaks": sum(breaks.values()),
            "break_reasons": [str(reason)[:200] for reason in list(breaks)[:5]], "stats": stats}


def section_compile(ctx, rec) -> None:
    import torch

    if not hasattr(torch, "compile"):
        rec.fail("torch.compile is unavailable")
        return
    try:
        import torch._dynamo

        config = torch._dynamo.config
        # A static graph for each batch size instead of a dynamic one after the second size; and room
        # for one compiled frame per residual block of PyTorchVideo's model, which has graph breaks
        # (past the default limit of 8 the remaining blocks would silently run eagerly).
        config.automatic_dynamic_shapes = False
        for name in ("recompile_limit", "cache_size_limit"):
            if hasattr(config, name):
                setattr(config, name, 64)
    except (ImportError, AttributeError):
        pass
    if ctx.quick:  # one compile per model is enough to know the section works
        ctx.batches = [max(ctx.batches)]
    _compare_modes(ctx, rec, ("compile",), descending=True)


# --- train -----------------------------------------------------------------
def section_train(ctx, rec) -> None:
    import copy
    import gc
    from dataclasses import asdict

    import torch.nn.functional as F

    from video_gc.bench.model import _row, top1_agreement
    from video_gc.bench.timing import interleaved_timings
    from video_gc.engine.train import optimizer_step
    from video_gc.models.layout import autocast_context

    torch, device = _torch_device(ctx)
    if device.type == "cpu":
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", 0)) or os.cpu_count() or 1)
    _, ours, theirs = _model_pair(ctx, device)
    batch = ctx.train_batch
    half = max(1, batch // 2)
    rec.data["result"].update({"batch": batch, "half_batch": half, "crop": ctx.crop, "frames": ctx.frames,
                               "repeats": ctx.train_repeats, "warmup": ctx.train_warmup,
                               "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32 if device.type == "cuda" else None})
    rec.flush()
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(batch, 3, ctx.frames, ctx.crop, ctx.crop, generator=generator).to(device)
    y = torch.randint(0, ctx.classes, (batch,), generator=generator).to(device)

    def make_step(model, optimizer, scaler, dtype, n):
        xs, ys = x[:n], y[:n]

        def step():
            with autocast_context(device, dtype):
                logits = model(xs)
            optimizer_step(F.cross_entropy(logits.float(), ys), model=model, optimizer=optimizer, scaler=scaler)
        return step

    for precision, dtype in (("fp32", None), ("bf16", torch.bfloat16), ("fp16", torch.float16)):
        entry = {"precision": precision}
        if dtype == torch.float16 and device.type != "cuda":
            entry["skipped"] = "fp16 AMP needs CUDA (the engine uses bf16 on a CPU)"
            rec.append("precisions", entry)
            continue
        if rec.left() < 15:
            entry["skipped"] = "section time limit"
            rec.append("precisions", entry)
            continue
        rec.append("precisions", entry)
        models = {"ours": copy.deepcopy(ours).to(device).train(), "pytorchvideo": copy.deepcopy(theirs).to(device).train()}
        # Train-mode logits (batch statistics) of the same batch, dropout off: its masks are random.
        dropouts = [m for model in models.values() for m in model.modules() if isinstance(m, torch.nn.Dropout)]
        for m in dropouts:
            m.eval()
        with torch.no_grad(), autocast_context(device, dtype):
            a, b = (models[k](x).float() for k in ("ours", "pytorchvideo"))
        for m in dropouts:
            m.train()
        entry["max_abs_diff"] = float((a - b).abs().max())
        entry["top1_agreement"] = top1_agreement(b, a)
        steps, memory = {}, {}
        for name, model in models.items():
            optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
            scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
            steps[name] = make_step(model, optimizer, scaler, dtype, batch)
            if device.type == "cuda":
                memory[name] = _step_memory(torch, device, make_step(model, optimizer, scaler, dtype, half),
                                            steps[name], half, batch)
        entry["memory"] = memory or None
        rec.flush()
        times = interleaved_timings(steps, repeats=ctx.train_repeats, warmup=ctx.train_warmup, device=device)
        entry["row"] = asdict(_row("train step", batch, times))
        rec.flush()
        log(f"train {precision}: ours {entry['row']['ours_ms']} ms, PTV {entry['row']['pytorchvideo_ms']} ms, "
            f"memory {memory}")
        del models, steps
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()


def _step_memory(torch, device, step_half, step_full, half: int, full: int) -> dict:
    """Peak memory of a training step at ``half`` and ``full`` clips (after one untimed step, so the
    optimizer state exists): the peak per clip and the slope (activation memory per clip)."""
    import gc

    step_full()  # the momentum buffers and the grad scaler's state
    peaks = {}
    for n, step in ((half, step_half), (full, step_full)):
        torch.cuda.synchronize(device)
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        step()
        torch.cuda.synchronize(device)
        peaks[n] = (torch.cuda.max_memory_allocated(device) / 2**20, base / 2**20)
    peak, base = peaks[full]
    out = {"peak_mb": round(peak, 1), "resident_mb": round(base, 1), "peak_mb_per_clip": round((peak - base) / full, 1)}
    if full > half:
        out["activation_mb_per_clip"] = round((peak - peaks[half][0]) / (full - half), 1)
    return out


# --- data ------------------------------------------------------------------
def _write_r50_videos(ctx, folder: str) -> list[str]:
    from concurrent.futures import ProcessPoolExecutor

    os.makedirs(folder, exist_ok=True)
    height, width = ctx.r50_video_size
    frames = int(round(ctx.r50_video_seconds * 30))
    paths = [os.path.join(folder, f"textured_{i:03d}.mp4") for i in range(ctx.r50_videos)]
    with ProcessPoolExecutor(max_workers=max(1, min(len(paths), os.cpu_count() or 1))) as pool:
        list(pool.map(_write_textured, [(p, frames, height, width, i) for i, p in enumerate(paths)]))
    return paths


def _write_textured(job) -> str:
    from video_gc.data.synthetic_clips import write_textured_video

    path, frames, height, width, seed = job
    return write_textured_video(path, frames, fps=30.0, height=height, width=width, seed=seed)


def _demo_videos(ctx, folder: str) -> list[tuple[str, int]]:
    from video_gc.data.lists import read_list
    from video_gc.prep.synthetic import DEMO_VIDEO_FRAMES, DEMO_VIDEO_SIZE, make_synthetic_dataset

    make_synthetic_dataset(folder, num_classes=8, videos_per_class=ctx.demo_videos_per_class, num_frames=DEMO_VIDEO_FRAMES,
                           size=DEMO_VIDEO_SIZE, val_fraction=0.0, test_fraction=0.0, workers=max(1, os.cpu_count() or 1),
                           verbose=False)
    return [(os.path.join(folder, rel), label) for rel, label in read_list(os.path.join(folder, "train.csv"))]


def _shm_free():
    try:
        return shutil.disk_usage("/dev/shm").free
    except OSError:
        return None


def section_data(ctx, rec) -> None:
    from video_gc.data.lists import write_list

    start = time.perf_counter()
    # Videos first, before CUDA starts in this process (the writers are forked).
    r50 = [(p, i % ctx.classes) for i, p in enumerate(_write_r50_videos(ctx, os.path.join(ctx.work, "r50_videos")))]
    demo = _demo_videos(ctx, os.path.join(ctx.work, "demo_videos"))
    torch, device = _torch_device(ctx)
    shm = _shm_free()
    rec.data["result"].update({"workers": ctx.workers, "cpu_count": os.cpu_count(), "pin_memory": device.type == "cuda",
                               "dev_shm_free_mib": None if shm is None else round(shm / 2**20),
                               "videos_written_s": round(time.perf_counter() - start, 1),
                               "r50_source_videos": {"count": len(r50), "height_width": list(ctx.r50_video_size),
                                                     "seconds": ctx.r50_video_seconds}})
    rec.flush()
    if device.type == "cpu":
        torch.set_num_threads(1)
    runs = (
        ("demo", DEMO_CFG, demo, ["RESNET.WIDTH_PER_GROUP", str(ctx.demo_width), "TRAIN.BATCH_SIZE", str(ctx.demo_batch)],
         ctx.demo_batch * 3 * 4 * 48 * 48 * 4),
        ("slow_r50", SLOW_CFG, r50, ["RESNET.WIDTH_PER_GROUP", str(ctx.width), "MODEL.NUM_CLASSES", str(ctx.classes),
                                     "DATA.NUM_FRAMES", str(ctx.frames), "DATA.TRAIN_CROP_SIZE", str(ctx.crop),
                                     "DATA.TRAIN_JITTER_SCALES", f"[{ctx.crop + ctx.crop // 7}, {ctx.crop * 10 // 7}]",
                                     "TRAIN.BATCH_SIZE", str(ctx.train_batch)],
         ctx.train_batch * 3 * ctx.frames * ctx.crop * ctx.crop * 4),
    )
    for name, cfg_file, videos, opts, batch_bytes in runs:
        # Workers hand over whole batches through /dev/shm (two in flight each): a small /dev/shm
        # (a container's default 64 MB) would crash them, so fewer workers, or none, then.
        shm = _shm_free()
        workers = ctx.workers
        if shm is not None and workers and shm < 2 * workers * batch_bytes * 1.2:
            workers = int(shm // (2 * batch_bytes * 1.2))
            rec.append("notes", f"{name}: {workers} workers instead of {ctx.workers}: /dev/shm has "
                                f"{shm / 2**20:.0f} MiB free, a batch is {batch_bytes / 2**20:.0f} MiB")
        fill = workers + 1  # batches until every worker has delivered once (the pipeline is full)
        measured = ctx.data_batches or max(8, workers)
        for precision in ("fp32", "bf16"):
            if rec.left() < 20:
                rec.append("runs", {"config": name, "precision": precision, "skipped": "section time limit"})
                continue
            folder = os.path.join(ctx.work, f"lists_{name}")
            os.makedirs(folder, exist_ok=True)
            batch = int(opts[opts.index("TRAIN.BATCH_SIZE") + 1])
            need = (fill + measured) * batch
            write_list(os.path.join(folder, "train.csv"), [videos[i % len(videos)] for i in range(need)])
            amp = ["TRAIN.MIXED_PRECISION", "True", "TRAIN.MIXED_PRECISION_DTYPE", "bf16"] if precision == "bf16" else []
            run = _data_run(ctx, rec, torch, device, name, cfg_file, folder, opts + amp, workers, fill, measured,
                            loader_only=precision == "fp32")  # the loader's speed does not depend on the model
            run["precision"] = precision
            rec.append("runs", run)
            log(f"data {name} {precision}: {run}")
    if rec.left() > 10:
        rec.data["result"]["jpeg_decode"] = _jpeg_decode(torch, device, clips=ctx.jpeg_clips)
        rec.flush()
        log(f"data jpeg_decode: {rec.data['result']['jpeg_decode']}")


def _jpeg_decode(torch, device, *, clips: int, frames: int = 8, repeats: int = 5) -> dict:
    """A frame store's decoding, CPU against GPU: ``clips`` training clips of ``frames`` JPEG images
    (340x256, quality 90, textured) decoded by one CPU thread, one clip per call as a loader worker
    does, and on the GPU in one batched ``decode_jpeg(device="cuda")`` call, the main-process
    alternative. Median ms per clip."""
    import statistics

    import torch.nn.functional as F
    from torchvision.io import decode_jpeg, encode_jpeg

    from video_gc.prep.frame_store import DEFAULT_QUALITY

    gen = torch.Generator().manual_seed(0)
    base = F.interpolate(torch.rand(1, 3, 40, 54, generator=gen), size=(256, 340), mode="bicubic", align_corners=False)
    images = [encode_jpeg(((base[0] + 0.02 * i).clamp(0, 1) * 255).to(torch.uint8), quality=DEFAULT_QUALITY)
              for i in range(clips * frames)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    cpu = []
    try:
        for _ in range(repeats):
            for k in range(clips):
                start = time.process_time()
                decode_jpeg(images[k * frames:(k + 1) * frames])
                cpu.append(time.process_time() - start)
    finally:
        torch.set_num_threads(threads)
    out = {"clips": clips, "frames_per_clip": frames, "size": "340x256", "quality": DEFAULT_QUALITY,
           "cpu_ms_per_clip": round(1000 * statistics.median(cpu), 3), "cuda_ms_per_clip": None,
           "cuda_cpu_ms_per_clip": None, "cuda_error": None if device.type == "cuda" else "not run on CUDA"}
    if device.type != "cuda":
        return out
    try:
        decode_jpeg(images, device=device)  # first call: nvJPEG's set-up
        _sync(device)
        wall, cpu_time = [], []
        for _ in range(repeats):
            start, start_cpu = time.perf_counter(), time.process_time()
            decode_jpeg(images, device=device)
            _sync(device)
            wall.append(time.perf_counter() - start)
            cpu_time.append(time.process_time() - start_cpu)
    except Exception as err:  # noqa: BLE001 - no nvJPEG is a finding, not a failed check
        out["cuda_error"] = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        return out
    # Wall time of the GPU decode, and the CPU time it still costs (copies, launches, host-side Huffman).
    out["cuda_ms_per_clip"] = round(1000 * statistics.median(wall) / clips, 3)
    out["cuda_cpu_ms_per_clip"] = round(1000 * statistics.median(cpu_time) / clips, 3)
    return out


def _data_run(ctx, rec, torch, device, name, cfg_file, folder, opts, workers, fill, measured, *,
              loader_only: bool) -> dict:
    import torch.nn.functional as F

    from video_gc.config import load_config
    from video_gc.data import construct_loader, shuffle_loader
    from video_gc.engine.optimizer import construct_optimizer
    from video_gc.data.loader import normalizes_on_device
    from video_gc.engine.train import amp_dtype, batch_inputs, make_grad_scaler, optimizer_step
    from video_gc.models import build_model
    from video_gc.models.layout import autocast_context

    cfg = load_config(cfg_file, ["DATA.PATH_TO_DATA_DIR", folder, "DATA.PATH_PREFIX", "",
                                 "DATA_LOADER.NUM_WORKERS", str(workers), "DATA_LOADER.PIN_MEMORY", "True",
                                 "NUM_GPUS", "1" if device.type == "cuda" else "0", *opts])
    model = build_model(cfg).to(device).train()
    optimizer = construct_optimizer(model, cfg)
    dtype = amp_dtype(cfg, device)
    scaler = make_grad_scaler(device, dtype)
    for group in optimizer.param_groups:
        group["lr"] = 1e-3

    def step(inputs, labels):
        with autocast_context(device, dtype):
            logits = model(inputs)
        optimizer_step(F.cross_entropy(logits.float(), labels), model=model, optimizer=optimizer, scaler=scaler,
                       cfg=cfg)
        _sync(device)

    loader = construct_loader(cfg, "train", uint8_clips=normalizes_on_device(cfg, device))
    shuffle_loader(loader, 0)
    out = {"config": name, "batch": cfg.TRAIN.BATCH_SIZE, "workers": workers, "clip": list(
        (cfg.DATA.NUM_FRAMES, cfg.DATA.TRAIN_CROP_SIZE, cfg.DATA.TRAIN_CROP_SIZE)), "pin_memory": loader.pin_memory,
        "backend": cfg.DATA.DECODING_BACKEND, "fill_batches": fill, "measured_batches": measured}
    waits, steps = [], []
    iterator = iter(loader)
    resident = None
    for i in range(fill + measured):
        t0 = time.perf_counter()
        batch = next(iterator)
        inputs = batch_inputs(cfg, batch, device)
        labels = batch["labels"].to(device, non_blocking=True)
        t1 = time.perf_counter()
        step(inputs, labels)
        t2 = time.perf_counter()
        if resident is None:
            resident = (inputs.clone(), labels.clone())
        if i >= fill:
            waits.append(t1 - t0)
            steps.append(t2 - t0)
        if rec.left() < 10:
            out["stopped_early"] = f"section time limit after {i + 1} batches"
            break
    del iterator
    if steps:
        out["loader_step_ms"] = round(1e3 * sum(steps) / len(steps), 2)
        out["loader_wait_ms"] = round(1e3 * sum(waits) / len(waits), 2)
    resident_times = []
    for i in range(max(3, min(len(steps), 10)) + 2):
        t0 = time.perf_counter()
        step(*resident)
        if i >= 2:
            resident_times.append(time.perf_counter() - t0)
    out["resident_step_ms"] = round(1e3 * sum(resident_times) / len(resident_times), 2)
    if steps:
        out["data_share"] = round(max(0.0, 1.0 - out["resident_step_ms"] / out["loader_step_ms"]), 3)
    # The loader alone: clips per second it delivers to the main process in steady state.
    if loader_only and rec.left() > 15:
        shuffle_loader(loader, 1)
        iterator, clips, t_start = iter(loader), 0, None
        for i in range(fill + measured):
            batch = next(iterator)
            if i == fill - 1:
                t_start = time.perf_counter()
            elif i >= fill:
                clips += batch["inputs"].shape[0]
        if t_start is not None and clips:
            out["loader_only_clips_per_s"] = round(clips / (time.perf_counter() - t_start), 1)
        del iterator
    return out


SECTION_FUNCS = {"env": section_env, "pytest": section_pytest, "inference": section_inference,
                 "train": section_train, "data": section_data, "compile": section_compile}


# ---------------------------------------------------------------------------
def _names(text: str) -> list[str]:
    return [part for part in text.split(",") if part]


def _ints(text: str) -> list[int]:
    return [int(part) for part in _names(text)]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", help="output folder (created)")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks that every section runs")
    parser.add_argument("--budget", type=float, default=None,
                        help=f"total seconds for all sections (default {DEFAULT_BUDGET[False]}, "
                             f"{DEFAULT_BUDGET[True]} with --quick)")
    parser.add_argument("--sections", type=_names, default=None, metavar="A,B",
                        help=f"run only these, in the usual order ({','.join(SECTION_NAMES)})")
    parser.add_argument("--section-scale", type=float, default=None,
                        help="multiply every section's time limit (still within --budget)")
    parser.add_argument("--crop", type=int, default=None)
    parser.add_argument("--frames", type=int, default=None)
    parser.add_argument("--width", type=int, default=None, help="RESNET.WIDTH_PER_GROUP of the R50s")
    parser.add_argument("--batches", type=_ints, default=None, metavar="1,32", help="inference batches")
    parser.add_argument("--train-batch", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None, help="timed inference repeats (median)")
    parser.add_argument("--workers", type=int, default=None, help="loader workers in the data section")
    parser.add_argument("--pytest-args", default=None, help="replaces the pytest targets, e.g. 'tests/test_cuda.py -x'")
    parser.add_argument("--keep-work", action="store_true", help="keep the scratch folder (videos, weights)")
    # Internal: one section in this process.
    parser.add_argument("--section", choices=SECTION_NAMES, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--work", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--section-limit", type=float, default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())
