"""``logscope ingest``: backfill the local archive from log files (see ``logscope.archive``)."""

from __future__ import annotations

import sys

from .. import config as cfg
from ..errors import ErrorLog, UsageError


def add_parser(sub, common) -> None:
    from ..state import default_state_dir  # cheap; the archive module (and polars) load only in run()
    p = sub.add_parser("ingest", help="add log files to the local archive (reports over any period, after rotation)",
                       description="Parse log files (plain, .gz, .bz2, .xz; rotated sets in order) into the local "
                                   "Parquet archive that `logscope report --from-archive` reads. Lines archived "
                                   "before are skipped, so running it again (e.g. daily from cron) never counts twice.")
    p.add_argument("files", nargs="*", metavar="FILE")
    p.add_argument("--archive", metavar="DIR", help=f"archive directory (default {default_state_dir() / 'archive'})")
    p.add_argument("--retention-days", type=int, default=cfg.ARCHIVE_RETENTION_DAYS, metavar="N",
                   help="remove days more than N days older than the newest event (default %(default)s; 0 keeps all)")
    p.add_argument("--compact", action="store_true", help="merge the small part files of each partition into one")
    common(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..archive import Archive, ArchiveError
    from ..cli import header_options, parsers_from_args
    from ..sources.files import order_rotated

    if not args.files and not args.compact:
        raise UsageError("ingest: give FILE arguments and/or --compact")
    if args.retention_days < 0:
        raise UsageError("--retention-days must be 0 (keep all) or more")
    conf = cfg.load(args.config)
    header = header_options(args, conf)
    parsers = parsers_from_args(args, conf)
    on_error = ErrorLog()

    try:
        with Archive(args.archive) as archive:
            added = 0
            for path in order_rotated(args.files):
                added += archive.ingest_file(path, parsers, header, on_error)
            removed = archive.apply_retention(args.retention_days)
            msg = f"logscope: {added:,} events archived in {archive.root}"
            if removed:
                msg += f"; {len(removed)} day(s) past retention removed"
            if args.compact:
                before, after = archive.compact()
                msg += f"; compacted {before} part files into {after}"
            print(msg, file=sys.stderr)
    except ArchiveError as exc:
        raise UsageError(str(exc)) from None
    return 2 if on_error else 0
