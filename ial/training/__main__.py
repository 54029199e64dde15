"""``python -m ial.training --config FILE [--set k=v ...]``: what the launchers run per rank."""

from ial.training.launcher import main

main()
