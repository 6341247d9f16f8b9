"""``python -m muse_quant``: the ``muse-quant`` command."""

import sys

from muse_quant.cli import main

sys.exit(main())
