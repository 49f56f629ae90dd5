"""`python -m gptexp.cli`: the same as the `gptexp` console script."""

from gptexp.cli.commands import main

main()
