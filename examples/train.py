"""Train a WAGE network from the checkout: ``python -m examples.train [options]`` (same as ``wage-train``).

A short script over the installed ``wage_train`` package; ``wage-train --help`` lists the options.
"""

from wage_train.cli import main

if __name__ == "__main__":
    main()
