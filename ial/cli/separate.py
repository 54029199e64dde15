"""``ial separate VIDEO.mp4 [MORE.mp4 ...] --checkpoint URL``: stems of your own videos."""

from __future__ import annotations

import tempfile

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
@click.option("--cookies", type=click.Path(exists=True, dir_okay=False), default=None,
              metavar="FILE", help="Netscape cookie file for yt-dlp, for VIDEO URLs a site "
                                   "serves only to a signed-in browser (as ial ingest --cookies).")
def command(videos, checkpoint, out_dir, device, seconds, no_progress, cookies):
    """Separate the sounds of your own video(s), in 10-s clips as the model was trained on.

    \b
    Each clip's frames are the query for that clip's sound; the stems of the clips are joined,
    so a long video gives stems as long as its soundtrack.

    \b
    A VIDEO is a file (local or s3://) or an http(s) URL (a YouTube watch URL, a direct
    link), which yt-dlp downloads first (with --seconds, only its first S s, at least 10).

    \b
    Several videos: their soundtracks are mixed and separated again, each video's pictures
    being the query for its own sound → one WAV per video (+ mixture.wav).
    One video: the model's estimate of the on-screen source (+ <name>_residual.wav, the rest).
    Also writes spectrogram.png and separation.json.
    """
    from ial.separate.videos import separate_videos
    from ial.signal import CLIP_SECONDS, SILENCE_DBFS

    # a clip's frames come from all of its 10 s: a shorter --seconds still needs the first 10 s
    length = max(seconds, CLIP_SECONDS) if seconds else None
    with tempfile.TemporaryDirectory(prefix="ial-separate-") as tmp:
        result = separate_videos(
            list(videos), checkpoint, out_dir, device=device, seconds=seconds,
            progress=not no_progress,
            fetch=lambda url: _downloaded(url, tempfile.mkdtemp(dir=tmp), length, cookies))
    click.echo(f"mixture: {result['mixture']} ({result['seconds']:g} s, "
               f"{len(result['clips'])} clip(s))")
    for name, url in result["stems"].items():
        click.echo(f"{name}: {url}")
    click.echo(f"spectrogram: {result['spectrogram']}")
    for name in result["silent"]:
        click.echo(f"note: {name}: silent soundtrack (peak at or below {SILENCE_DBFS:g} dBFS), "
                   f"so its stem is silence, not a separation")


def _downloaded(url: str, out_dir: str, seconds: float | None, cookies: str | None) -> str:
    """The local copy of the video at ``url`` (its first ``seconds`` s; None: all) that yt-dlp
    downloads into ``out_dir``; a download that fails (unavailable, refused, not a video) is one
    line naming the URL."""
    from ial.errors import UserError
    from preprocessing.ingest.download import download_video
    from preprocessing.ingest.outcomes import DownloadProblem

    click.echo(f"downloading {url} ...", err=True)
    try:
        return download_video(url, out_dir, seconds,
                              options={"cookiefile": cookies} if cookies else None)
    except DownloadProblem as exc:
        raise UserError(f"{url}: could not download it ({exc})") from None
