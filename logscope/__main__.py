"""``python -m logscope`` is the ``logscope`` command."""

import sys

from .cli import main

sys.exit(main())
