"""``ial separate VIDEO.mp4 [MORE.mp4 ...] --checkpoint URL``: stems of your own videos."""

from __future__ import annotations

import click


@click.command("separate", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("videos", nargs=-1, required=True, metavar="VIDEO [VIDEO ...]")
@click.option("--checkpoint", required=True, metavar="URL",
              help="model.pt export (local or s3://).")
@click.option("--out", "out_dir", default="./separated", show_default=True, metavar="DIR",
              help="Where the WAV stems and spectrogram.png go (local or s3://).")
@click.option("--device", default="auto", show_default=True,
              help="torch device for the model: auto (CUDA when visible), cpu, cuda:N.")
@click.option("--seconds", type=click.FloatRange(min=0, min_open=True), default=None,
              metavar="S",
              help="Separate only the first S seconds (default: the whole soundtrack; with "
                   "several videos, the shortest one's length).")
@click.option("--no-progress", is_flag=True, help="No progress bar over the 10-s clips.")
def command(videos, checkpoint, out_dir, device, seconds, no_progress):
    """Separate the sounds of your own video(s), in 10-s clips as the model was trained on.

    \b
    Each clip's frames are the query for that clip's sound; the stems of the clips are joined,
    so a long video gives stems as long as its soundtrack.

    \b
    Several videos: their soundtracks are mixed and separated again, each video's pictures
    being the query for its own sound → one WAV per video (+ mixture.wav).
    One video: the model's estimate of the on-screen source (+ <name>_residual.wav, the rest).
    Also writes spectrogram.png and separation.json.
    """
    from ial.separate.videos import separate_videos
    from ial.signal import SILENCE_DBFS

    result = separate_videos(list(videos), checkpoint, out_dir, device=device, seconds=seconds,
                             progress=not no_progress)
    click.echo(f"mixture: {result['mixture']} ({result['seconds']:g} s, "
               f"{len(result['clips'])} clip(s))")
    for name, url in result["stems"].items():
        click.echo(f"{name}: {url}")
    click.echo(f"spectrogram: {result['spectrogram']}")
    for name in result["silent"]:
        click.echo(f"note: {name}: silent soundtrack (peak at or below {SILENCE_DBFS:g} dBFS), "
                   f"so its stem is silence, not a separation")
