"""logscope: mail-server log analytics and alerting on polars.

Sources -> events (``engine.parse_lines``) -> views -> sinks; see README.md.
"""

__version__ = "0.1.0"
