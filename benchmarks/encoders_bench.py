"""Throughput of the content encoders on this machine's CPU, end to end (decode + preprocess + model).

Prints a Markdown table for BENCHMARKS.md: texts/s (MiniLM, real ML-100K titles when the data is
there), images/s at 224 px (open_clip ViT-B-32 with RANDOM weights, flagged: no CLIP weights ship
offline, and speed does not depend on the weights' values), audio seconds/s (librosa statistics and
the aisfx CNN), build time per encoder and the process's peak RSS. The load average is printed too:
on a shared machine it explains most of the variance.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/encoders_bench.py --threads 2
"""
from __future__ import annotations

import argparse
import io
import os
import platform
import resource
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def texts(n: int) -> list[str]:
    try:
        from recsys.data import load_dataset

        corpus = load_dataset("ml-100k").items["text"].to_list()
    except Exception:  # noqa: BLE001  (no data on this machine: synthetic sentences of similar length)
        corpus = [f"Film number {i} (199{i % 10}). Genres: Drama Comedy Thriller" for i in range(n)]
    return [corpus[i % len(corpus)] for i in range(n)]


def images(n: int) -> list[bytes]:
    from PIL import Image
    from skimage import data

    photos = []
    for name in ("astronaut", "coffee", "chelsea", "camera", "rocket", "cat"):
        buffer = io.BytesIO()
        Image.fromarray(getattr(data, name)()).save(buffer, format="JPEG", quality=90)
        photos.append(buffer.getvalue())
    return [photos[i % len(photos)] for i in range(n)]


def audio_clips(n: int, seconds: float, sr: int = 22050) -> list[bytes]:
    import soundfile as sf

    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * sr)) / sr
    clips = []
    for i in range(n):
        kind = i % 3
        if kind == 0:
            y = 0.4 * np.sin(2 * np.pi * (220 + 40 * i) * t)
        elif kind == 1:
            y = rng.normal(0, 0.2, t.size)
        else:
            y = 0.4 * np.sin(2 * np.pi * (200 * t + 1900 * t ** 2 / seconds))
        buffer = io.BytesIO()
        sf.write(buffer, y.astype(np.float32), sr, format="WAV")
        clips.append(buffer.getvalue())
    return clips


def measure(build: Callable[[], Any], inputs: Sequence[Any], batch_size: int) -> tuple[Any, float, float, float]:
    """(encoder, build seconds, wall seconds, process CPU seconds) for encoding all inputs after one
    warm-up batch. CPU seconds stay meaningful when other jobs share the cores."""
    started = time.perf_counter()
    encoder = build()
    built = time.perf_counter() - started
    encoder.encode(list(inputs[:batch_size]))  # warm-up: lazy imports, JIT, allocator
    started, cpu_started = time.perf_counter(), time.process_time()
    for i in range(0, len(inputs), batch_size):
        out = encoder.encode(list(inputs[i:i + batch_size]))
        assert np.isfinite(out).all()
    return encoder, built, time.perf_counter() - started, time.process_time() - cpu_started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--texts", type=int, default=768)
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--audio-clips", type=int, default=12)
    parser.add_argument("--clip-seconds", type=float, default=10.0)
    args = parser.parse_args()

    import torch

    from recsys.encoders import AudioSpec, ImageSpec, build_encoder

    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    rows = []

    enc, built, wall, cpu = measure(lambda: build_encoder("text"), texts(args.texts), 64)
    rows.append(("text", enc.version, args.texts, wall, cpu, "texts", f"{args.texts} ML-100K texts, batch 64", built))
    enc, built, wall, cpu = measure(lambda: build_encoder("image", ImageSpec(allow_random_weights=True)),
                                    images(args.images), 16)
    rows.append(("image", enc.version, args.images, wall, cpu, "images",
                 f"{args.images} JPEG photos -> 224 px, batch 16, RANDOM weights", built))
    clips = audio_clips(args.audio_clips, args.clip_seconds)
    total = args.audio_clips * args.clip_seconds
    for kind in ("librosa", "aisfx"):
        enc, built, wall, cpu = measure(lambda: build_encoder("audio", AudioSpec(encoder=kind)), clips, 4)  # noqa: B023
        rows.append(("audio", enc.version, total, wall, cpu, "audio s",
                     f"{args.audio_clips} WAV clips x {args.clip_seconds:g} s, batch 4", built))

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    print(f"machine: {cpu}, {os.cpu_count()} CPU(s) visible, torch {torch.__version__}, {args.threads} torch thread(s)")
    print(f"load average before/after: {load_before[0]:.1f} / {os.getloadavg()[0]:.1f}")
    print()
    print("| medium | encoder version | per wall second | per CPU second | workload | build s |")
    print("|---|---|---|---|---|---|")
    for medium, version, amount, wall, cpu, unit, workload, built in rows:
        print(f"| {medium} | `{version}` | {amount / wall:.1f} {unit}/s | {amount / cpu:.1f} {unit}/CPU-s "
              f"| {workload} | {built:.1f} |")
    print()
    print(f"peak RSS: {peak_rss_mib():.0f} MiB (all four encoders loaded in one process)")


if __name__ == "__main__":
    main()
