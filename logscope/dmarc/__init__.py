"""DMARC aggregate reports and SMTP TLS reports (``logscope dmarc``).

inputs (files, archives, e-mail, mbox, Maildir; bounded) → worker (per-file parsing, optionally parallel)
→ aggregate / tlsrpt (one report → tuples) → collect (tuples → polars frames, dedupe) → views (frames →
small frames, shared with the weekly e-mail and alerts) → render (text, markdown, json, html; records export).
"""
