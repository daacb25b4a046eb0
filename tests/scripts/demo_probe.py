"""WIP (issue 19): a time-bounded demo-training probe printing the learning curve on the drawn set and held-out generated images.

Usage: python tests/scripts/demo_probe.py SECONDS POOL "settings dict" "vision config dict" [EVAL_EVERY_SECONDS]
"""
from pathlib import Path
import sys, time, math, dataclasses, numpy as np, tensorflow as tf
import clipedge.export.demo_train as dt
from clipedge.export.demo_pool import generate_pool
from clipedge.export.model.clip import CLIPEncoder
from clipedge.export.model.config import CLIPConfig
from clipedge.export.demo_eval import predict_classes, held_out_samples
from clipedge.export.demo_data import read_eval_set
seconds, pool_size = float(sys.argv[1]), int(sys.argv[2])
extra = eval(sys.argv[3]) if len(sys.argv) > 3 else {}
vis = eval(sys.argv[4]) if len(sys.argv) > 4 else {}
every = float(sys.argv[5]) if len(sys.argv) > 5 else 240
cfg = CLIPConfig(vision=dataclasses.replace(dt.DEMO_CONFIG.vision, **vis), text=dt.DEMO_CONFIG.text)
grid = cfg.vision.image_size // cfg.vision.patch_size
t0 = time.perf_counter()
pool = generate_pool(pool_size, 0, grid=grid)
s = dt.TrainSettings(steps=int(extra.pop("steps", 100000)), pool_size=pool_size, curriculum=0.0, **extra)
ids = dt._caption_ids(pool.captions, cfg, s)
import os
cache = f"/tmp/demo_teacher_{pool_size}_{s.teacher_steps}.npz"
if s.teacher_steps and os.path.exists(cache):
    z = np.load(cache); maps, pooled, acc = z["maps"], z["pooled"], float(z["acc"])
else:
    maps, pooled, acc = dt._patch_maps(pool, grid, s, False)
    if s.teacher_steps: np.savez(cache, maps=maps, pooled=pooled, acc=acc)
print("teacher acc", acc, "at", round(time.perf_counter() - t0), flush=True)
from clipedge.export.demo_data import PARTS
print("data", round(time.perf_counter() - t0), "config", cfg.vision, s, flush=True)
model = CLIPEncoder(cfg, seed=0); dt.openai_init_(model, 0)
step = dt._make_step(model, s, maps.shape[-1] - 1 - len(PARTS))
files, labels = read_eval_set(str(Path(__file__).resolve().parents[2] / "calibration_data" / "drawn")); labels = np.array(labels)
ims, labs = held_out_samples(400, 0); labs = np.array(labs)
rng = np.random.default_rng([0, 1000]); losses = []; t1 = time.perf_counter(); next_eval = every; i = 0
while True:
    batch = np.sort(rng.choice(s.pool_size, size=s.batch_size, replace=False))
    loss, part = step(pool.pixels[batch], ids[batch], pool.classes[batch], maps[batch], pooled[batch], np.float32(dt.learning_rate(i, s)))
    losses.append(float(loss)); i += 1
    el = time.perf_counter() - t1
    if el >= next_eval or el >= seconds:
        pd = predict_classes(model, files); ph = predict_classes(model, ims)
        print(f"step {i} train_s {el:.0f} loss {np.mean(losses[-100:]):.3f} part {float(part):.3f} drawn {np.mean(pd == labels):.3f} (shape {np.mean(pd % 5 == labels % 5):.3f}) gen {np.mean(ph == labs):.3f} (shape {np.mean(ph % 5 == labs % 5):.3f})", flush=True)
        next_eval += every
        if el >= seconds: break
