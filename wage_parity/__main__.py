"""``python -m wage_parity``: the ``wage-parity`` report."""

import sys

from wage_parity.report import main

sys.exit(main())
