"""How fast a preempted run stops, and that it resumes where it stopped.

    python scripts/bench_stop.py [--images 1437] [--size 224] [--after 20] [--json FILE]

Writes an ImageNet-layout folder of `--images` JPEGs (10 classes, 256 px, train/ and val/), runs
`prune-run dataset=imagefolder` on it with the imagefolder defaults (resnet18 at 224 px), sends
SIGTERM `--after` seconds into the dense training's first epoch, and prints the seconds from the
signal to the process's exit, where in the epoch the checkpoint was taken, and the length of a
whole epoch (measured by the resumed run, which finishes it). A cluster's grace before SIGKILL is
typically 30-120 s; before mid-epoch checkpoints, a stop waited for the epoch's end.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch


def image_folder(root: Path, images: int, size: int = 256) -> Path:
    """`images` JPEGs in 10 classes (a colour tint per class), a tenth of them in val/."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(images):
        split = "val" if (i // 10) % 10 == 0 else "train"
        cls = i % 10
        folder = root / split / f"class{cls}"
        folder.mkdir(parents=True, exist_ok=True)
        base = rng.integers(0, 200, (size, size, 3), dtype=np.uint8)
        base[..., cls % 3] = np.minimum(255, base[..., cls % 3] + 40 + 5 * cls)
        Image.fromarray(base).save(folder / f"{i}.jpg", quality=85)
    return root


def newest_checkpoint(run_dir: Path) -> dict:
    path = max((run_dir / "checkpoints").glob("*.pt"), key=lambda p: p.stat().st_mtime_ns)
    return torch.load(io.BytesIO(path.read_bytes().partition(b"\n")[2]), weights_only=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=1437)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--after", type=float, default=20.0, help="seconds into the first epoch")
    ap.add_argument("--out", default="outputs/bench_stop")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    out = Path(args.out).resolve()
    folder = out / "images"
    if not folder.exists():
        image_folder(folder, args.images)
    run_dir = out / "run"
    exe = Path(sys.executable).parent / "prune-run"
    common = [str(exe), "dataset=imagefolder", f"dataset.path={folder}",
              f"dataset.image_size={args.size}", "method=oneshot", "pretrain.epochs=2",
              "pretrain.cache=false", "method.finetune_epochs=1", "hardware.latency.enabled=false",
              f"hydra.run.dir={run_dir}"]
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    proc = subprocess.Popen(common, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    log = run_dir / "prune-run.log"
    while "hardware" not in (log.read_text() if log.exists() else ""):
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        time.sleep(0.2)
    while "data " not in log.read_text():
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        time.sleep(0.2)
    time.sleep(args.after)  # (the model is built and dense training under way)
    proc.send_signal(signal.SIGTERM)
    signalled = time.perf_counter()
    proc.communicate(timeout=600)
    stop_s = time.perf_counter() - signalled
    state = newest_checkpoint(run_dir)["fit"]
    resumed = subprocess.run([*common, "resume=true"], env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    text = log.read_text()
    epoch = re.findall(r"dense training: epoch 2/2 .*?(\d+) img/s", text)
    summary = json.loads((run_dir / "summary.json").read_text())
    result = {"images": args.images, "image_size": args.size, "after_s": args.after,
              "sigterm_to_exit_s": round(stop_s, 2), "exit_code": proc.returncode,
              "stopped_at_batch": state["loader"]["batch"] if state.get("loader") else None,
              "epochs_done_at_stop": state["epochs_done"],
              "epoch_images_per_s": int(epoch[-1]) if epoch else None,
              "resumed_status": summary["status"], "dense_source": summary["dense_source"]}
    if result["epoch_images_per_s"]:
        train = sum(1 for _ in (folder / "train").rglob("*.jpg"))
        result["epoch_s"] = round(train * 0.9 / result["epoch_images_per_s"], 1)
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
