"""``python -m ial.evaluate --checkpoint URL --data URL [--mix 2|3] [--out DIR]`` (see --help)."""

from ial.cli.evaluate import command

if __name__ == "__main__":
    command(prog_name="python -m ial.evaluate")
