"""``ial compare REPORT_A REPORT_B``: two models on the same evaluation mixtures, with a CI."""

from __future__ import annotations

import posixpath

import click

from ial.evaluate.compare import MEASURES


def default_names(report_a: str, report_b: str) -> tuple[str, str]:
    """The two report folders' own names (``…/reports/ial-s3`` → ``ial-s3``); A and B when
    they are the same or empty."""
    a, b = (posixpath.basename(str(r).rstrip("/")) for r in (report_a, report_b))
    return (a, b) if a and b and a != b else ("A", "B")


@click.command("compare", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("report_a", metavar="REPORT_A")
@click.argument("report_b", metavar="REPORT_B")
@click.option("--also", "more", nargs=2, multiple=True, metavar="REPORT_A REPORT_B",
              help="Another training of each model (another seed), same protocol. Repeatable; "
                   "the interval then resamples the trainings as well as the sources.")
@click.option("--metric", default="sdr", show_default=True,
              type=click.Choice(MEASURES),
              help="What is compared: a score (dB) or a mask measure (a fraction: what each "
                   "source's mask keeps of the bins its source dominates, lets through of the "
                   "bins another source dominates, or all masks keep of the shared bins; "
                   "docs/evaluation.md).")
@click.option("--row", default="model", show_default=True,
              help="The report row compared: model, oracle_irm, oracle_ibm or mixture.")
@click.option("--names", nargs=2, default=None, metavar="NAME_A NAME_B",
              help="What to call the two models in the output (default: the report folders' "
                   "names; A and B with --also, or when the names are the same).")
@click.option("--plot", metavar="PNG", default=None,
              help="Also draw the differences (overall and per class, with CIs) to this file.")
@click.option("--seed", default=0, show_default=True, help="Bootstrap seed.")
def command(report_a, report_b, more, metric, row, names, plot, seed):
    """Compare two evaluation reports source by source: mean A - B and its 95 % CI.

    \b
    REPORT_A and REPORT_B are report directories of `ial evaluate` (local or s3://) that
    scored the same mixtures (the same split, --mix, --n and seed). Each test source is
    compared with itself, so the interval is a paired bootstrap over the sources; with
    --also (one pair of reports per training seed) it is a two-level bootstrap that covers
    the spread between trainings too. Prints the overall difference and one line per class.

    \b
    Example:
      ial compare data/reports/ial-s3 data/reports/cms-s3 --names ial cms --plot ial_vs_cms.png
    """
    from ial.evaluate.compare import compare_reports, format_comparison, plot_comparison
    from ial.storage import check_file_target

    if plot:
        check_file_target(plot, "--plot")
    result = compare_reports([(report_a, report_b), *more], metric=metric, row=row, seed=seed)
    # One training each: the folders' names; several (--also): A and B, not the first seed's.
    names = names or (("A", "B") if more else default_names(report_a, report_b))
    click.echo(format_comparison(result, *names))
    if plot:
        plot_comparison(plot, result, *names)
        click.echo(f"Plot: {plot}")
