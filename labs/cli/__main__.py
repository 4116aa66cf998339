"""`python -m labs.cli`: the `fusion` command."""

from labs.cli import main

main()
