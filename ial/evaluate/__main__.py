"""``python -m ial.evaluate --checkpoint URL --data URL [--mix 2|3] [--out DIR]`` (see --help)."""

from ial.cli.evaluate import command
from ial.cli.options import user_errors

if __name__ == "__main__":
    user_errors(command)(prog_name="python -m ial.evaluate")
