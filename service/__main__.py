"""`python -m service …` is the `veriflow` command."""

from service.cli import main

main()
