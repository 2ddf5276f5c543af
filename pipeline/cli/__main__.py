"""`python -m pipeline.cli`: the same as `score-plugins`."""

from pipeline.cli import main

main()
