"""logscope: mail-server log analytics and alerting on polars.

Sources -> events (``engine.parse_lines``) -> views -> sinks; see README.md.
"""

import os

__version__ = "0.1.0"

# polars allocates through jemalloc, which by default keeps freed pages for 10 s before it returns them to
# the system: a parse frees and allocates a chunk's worth every fraction of a second, so the resident set
# held about 40 MB of freed memory (a 1M-line report peaked at 455 instead of 418 MB; a 10M-line one above
# the 500 MB budget). 200 ms costs no measurable time. Read when polars is loaded, so set before that
# (commands import polars after this package); a value the user set wins.
os.environ.setdefault("_RJEM_MALLOC_CONF", "dirty_decay_ms:200,muzzy_decay_ms:200")
