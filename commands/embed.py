"""`recsys embed`: encode a dataset's item text / images / audio into the offline store.

A thin shell over `training.embed_job.run_embed_job`: parses options into encoder specs, prints
a summary table and every skipped item (id, path, reason). Exit code 0 even when some files
were corrupt (they are reported); 2 for a bad option (e.g. images without a weights choice).
"""
from __future__ import annotations

import logging
from pathlib import Path

import typer


def embed(
    dataset: str = typer.Option(..., "--dataset", help="Registered dataset (ml-100k, tiktok) or a dataset folder."),
    media: str | None = typer.Option(
        None, "--media", help="Comma-separated media to embed (default: all the dataset has)."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Items per encoder call and cache shard."),
    text_model: str | None = typer.Option(
        None, "--text-model", help="sentence-transformers folder (default: packaged all-MiniLM-L6-v2)."),
    image_arch: str = typer.Option("ViT-B-32", "--image-arch", help="open_clip architecture."),
    image_checkpoint: Path | None = typer.Option(
        None, "--image-checkpoint", help="Local open_clip checkpoint for --image-arch (.safetensors or .bin/.pt)."),
    image_pretrained: str | None = typer.Option(
        None, "--image-pretrained", help="open_clip pretrained tag (needs a network or a warm cache)."),
    image_random_weights: bool = typer.Option(
        False, "--image-random-weights", help="Random image weights (flagged; for tests and demos)."),
    audio_encoder: str = typer.Option("aisfx", "--audio-encoder", help="aisfx (512-d CNN) or librosa (85-d statistics)."),
    audio_max_seconds: float = typer.Option(
        300.0, "--audio-max-seconds", help="Use at most this many seconds of each file."),
    out: Path | None = typer.Option(None, "--out", help="Also write the item-vector artefact (.npz) here."),
    store_dir: Path | None = typer.Option(None, "--store-dir", help="Offline store root (default: RECSYS_STORE_DIR)."),
    threads: int = typer.Option(
        2, "--threads", min=1, help="torch CPU threads (1 is faster when other jobs share the cores)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Embed item content (text, image, audio) with a cache keyed by content hash and encoder version."""
    import torch
    from rich.console import Console
    from rich.table import Table

    from recsys.data import DataValidationError
    from recsys.encoders import AudioSpec, EncoderWeightsError, ImageSpec, TextSpec
    from training.embed_job import EmbedConfig, run_embed_job

    console = Console()
    chosen = [o for o, on in (("--image-checkpoint", image_checkpoint), ("--image-pretrained", image_pretrained),
                              ("--image-random-weights", image_random_weights)) if on]
    if len(chosen) > 1:
        raise typer.BadParameter(f"choose one of {', '.join(chosen)}")
    if audio_encoder not in ("aisfx", "librosa"):
        raise typer.BadParameter("--audio-encoder must be aisfx or librosa")
    torch.set_num_threads(threads)
    specs = {
        "text": TextSpec(model=text_model),
        "image": ImageSpec(arch=image_arch, checkpoint=str(image_checkpoint) if image_checkpoint else None,
                           pretrained=image_pretrained, allow_random_weights=image_random_weights),
        "audio": AudioSpec(encoder=audio_encoder, max_seconds=audio_max_seconds),  # type: ignore[arg-type]
    }
    config = EmbedConfig(media=tuple(m.strip() for m in media.split(",") if m.strip()) if media else None,
                         specs=specs, batch_size=batch_size, store_dir=store_dir, out=out, progress=progress)
    try:
        report = run_embed_job(dataset, config)
    except (EncoderWeightsError, ValueError) as exc:
        console.print(f"[red]embed: {exc}[/red]", highlight=False, soft_wrap=True)
        raise typer.Exit(2)
    except DataValidationError as err:
        for problem in err.problems:
            console.print(f"  {problem}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)

    table = Table(title=f"recsys embed — {report.dataset}")
    for column in ("medium", "dim", "with content", "embedded", "encoded", "from cache", "failed", "seconds"):
        table.add_column(column, justify="left" if column == "medium" else "right")
    for r in report.media.values():
        table.add_row(r.medium, str(r.dim), str(r.with_content), str(r.embedded), str(r.encoded), str(r.reused),
                      str(r.failed), f"{r.seconds:.1f}")
    console.print(table)
    for r in report.media.values():
        note = " (precomputed, passed through)" if r.precomputed else ""
        console.print(f"  {r.medium} encoder: {r.encoder_version}{note}", highlight=False, soft_wrap=True)
    if any("random" in r.encoder_version for r in report.media.values()):
        console.print("[yellow]warning: image vectors come from RANDOM weights (see the version string)[/yellow]")
    if report.failures:
        console.print(f"[yellow]{len(report.failures)} item(s) skipped:[/yellow]")
        for f in report.failures[:100]:
            console.print(f"  {f.medium} item {f.item_id}: {f.source}: {f.reason}", highlight=False, soft_wrap=True)
        if len(report.failures) > 100:
            console.print(f"  ... {len(report.failures) - 100} more in {report.artefact.with_suffix('.failures.json')}")
    console.print(f"item vectors: {report.artefact}" + (f" (copy: {out})" if out else ""), highlight=False)
    logging.getLogger(__name__).debug("embed report: %s", report)


def register(app: typer.Typer) -> None:
    app.command("embed")(embed)
