"""``python -m wage_train``: the ``wage-train`` command."""

from wage_train.cli import main

main()
