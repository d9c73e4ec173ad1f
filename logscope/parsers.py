"""Loading parser definitions: ``parsers/<source>.toml`` plus user directories.

A parser file describes one source::

    [source]
    name = "postfix"
    programs = ["postfix", "postfix-*"]     # syslog program names (first path part, globs)
    markers = ["%ASA-"]                      # optional: text that marks a line of this source
    main_programs = ["dovecot"]              # optional: other programs get "program: " prepended
    prefix = '%{?[%{INT}] }'                 # optional: stripped from every message
    dispatch_skip = '%{QUEUEID}: '           # optional: ignored when dispatching by first token

    [patterns]                               # optional named sub-patterns (regex)
    REPLY = '\\d{3} .*'

    [[event]]                                # tried in file order, first match wins
    kind = "smtpd_connect"
    daemons = ["smtpd"]                      # optional: only lines of these daemons
    match = 'connect from %{HOST:client_host}[%{IP:client_ip}]'
    set = { level = "info" }                 # optional constant columns

A user file with the name of a built-in source adds its events in front of the
built-in ones (local variants win); a file with a new name adds a source.
Mistakes are reported as ``file:line:column: what is wrong``.
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import os
import pickle
import re
import tomllib
from dataclasses import dataclass, field
import importlib.util
from pathlib import Path

import polars as pl

from . import schema
from .patterns import Compiled, PatternCompiler, PatternError, lead_tokens


# Data files that live beside the parser files but are not parsers (logscope/classify.py).
NOT_PARSERS = frozenset({"reject_classes.toml"})


def _parser_files(directory: Path) -> list[Path]:
    """The parser files of a directory, in name order."""
    return sorted(p for p in Path(directory).glob("*.toml") if p.name not in NOT_PARSERS)


class ParserFileError(ValueError):
    """A parser file that cannot be used; the message names file, line and column."""


@dataclass
class EventDef:
    kind: str
    compiled: Compiled
    daemons: tuple[str, ...] = ()
    constants: dict[str, object] = field(default_factory=dict)
    origin: str = ""  # file:line, for error messages and `logscope parsers`
    named: dict[str, str] = field(default_factory=dict, repr=False)  # the file's sub-patterns
    leads: frozenset[str] | None = None  # first tokens a match can start with (None: any)

    @property
    def probe_regex(self) -> str:
        """The pattern with an empty first group ``__m``: non-null exactly where it matched."""
        return "^(?P<__m>)" + self.compiled.regex[1:]


@dataclass
class SourceDef:
    name: str
    programs: tuple[str, ...] = ()
    markers: tuple[str, ...] = ()
    main_programs: tuple[str, ...] = ()
    prefix: Compiled | None = None
    skip: Compiled | None = None  # dispatch_skip: leading text ignored when dispatching (queue ids)
    events: list[EventDef] = field(default_factory=list)
    kinds: dict[str, str] = field(default_factory=dict)

    def compute_leads(self) -> None:
        """Fill every event's lead tokens (after this source's skip) for the engine's dispatch."""
        for ev in self.events:
            ev.leads = lead_tokens(ev.compiled, ev.named, self.skip)

    @property
    def token_regex(self) -> str:
        """Extracts a message's dispatch token (group 1; no match = empty token)."""
        return _token_regex(self.skip.regex if self.skip is not None else None)

    @property
    def program_regex(self) -> str | None:
        return _program_regex(self.programs) if self.programs else None


# The engine asks for these on every batch; building them took a millisecond or two per batch.
@functools.lru_cache(maxsize=64)
def _token_regex(skip: str | None) -> str:
    from .patterns import TOKEN_RE, ascii_classes
    skip = f"(?:{skip[1:]})?" if skip is not None else ""
    return ascii_classes(f"^{skip}({TOKEN_RE})?")


@functools.lru_cache(maxsize=64)
def _program_regex(programs: tuple[str, ...]) -> str:
    return "^(?:" + "|".join(fnmatch.translate(p).removeprefix("(?s:").removesuffix(")\\Z") for p in programs) + ")$"


def _locate(text: str, needle: str, start_line: int = 0) -> tuple[int, int]:
    """1-based (line, column) of ``needle`` in a file's text, searching from a line."""
    lines = text.splitlines()
    for i in range(start_line, len(lines)):
        col = lines[i].find(needle)
        if col >= 0:
            return i + 1, col + 1
    return start_line + 1, 1


def _table_lines(text: str, header: str) -> list[int]:
    """0-based line numbers where each ``[[header]]`` table starts."""
    return [i for i, ln in enumerate(text.splitlines()) if ln.strip() == f"[[{header}]]"]


class ParserSet:
    """All sources with their compiled events, ready for the engine."""

    def __init__(self, sources: dict[str, SourceDef], syslog_names: tuple[str, ...] = ()):
        self.sources = sources
        if syslog_names and "postfix" in sources:
            pf = sources["postfix"]
            pf.programs = tuple(dict.fromkeys(pf.programs + tuple(syslog_names)))

    @property
    def source_names(self) -> tuple[str, ...]:
        names = list(schema.SOURCES)
        names += [n for n in self.sources if n not in names]
        return tuple(names)

    @property
    def kinds(self) -> tuple[str, ...]:
        kinds = list(schema.KINDS)
        for src in self.sources.values():
            kinds += [k for k in src.kinds if k not in kinds]
        return tuple(kinds)

    def schema(self) -> pl.Schema:
        return _schema(self.source_names, self.kinds)


@functools.lru_cache(maxsize=16)
def _schema(source_names: tuple[str, ...], kinds: tuple[str, ...]) -> pl.Schema:
    """The events schema with these sources and kinds (built once: every batch asks for it)."""
    cols = dict(schema.COLUMNS)
    cols["source"] = pl.Enum(source_names)
    cols["kind"] = pl.Enum(kinds)
    return pl.Schema(cols)


def builtin_dir() -> Path:
    """The directory of the bundled parser files (installed, or the repo's parsers/)."""
    repo = Path(__file__).resolve().parent.parent / "parsers"
    if repo.is_dir():  # a checkout or an editable install
        return repo
    spec = importlib.util.find_spec("logscope.parser_files")  # installed package data
    return Path(list(spec.submodule_search_locations)[0]) if spec and spec.submodule_search_locations else repo


def _compile_file(path: Path, compiler_columns: tuple[str, ...]) -> SourceDef:
    text = path.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ParserFileError(f"{path}: {exc}") from None
    src = data.get("source")
    if not isinstance(src, dict) or not isinstance(src.get("name"), str):
        line, col = _locate(text, "[source]")
        raise ParserFileError(f"{path}:{line}:{col}: missing [source] table with a name")
    name = src["name"]
    named = data.get("patterns", {})
    try:
        compiler = PatternCompiler(compiler_columns, named)
    except PatternError as exc:
        line, col = _locate(text, "[patterns]")
        raise ParserFileError(f"{path}:{line}:{col}: {exc.msg}") from None
    # Named sub-patterns are regexes: check them once, here, with their position.
    for key, regex in named.items():
        try:
            re.compile(regex)
        except re.error as exc:
            line, col = _locate(text, key)
            raise ParserFileError(f"{path}:{line}:{col}: pattern {key}: invalid regular expression: {exc.msg}") from None
    known_kinds = dict(schema.KINDS_BY_SOURCE.get(name, {}))
    known_kinds.update(schema.COMMON_KINDS)
    extra_kinds = data.get("kinds", {})  # user files may declare new kinds: {kind = "meaning"}
    known_kinds.update(extra_kinds)

    def compile_at(pattern: str, line0: int) -> Compiled:
        try:
            compiled = compiler.compile(pattern)
        except PatternError as exc:
            line, col = _locate(text, pattern[:40], line0) if pattern else (line0 + 1, 1)
            raise ParserFileError(f"{path}:{line}:{col + exc.col - 1}: {exc.msg}") from None
        try:  # the authority on regex syntax is the engine that runs it
            pl.Series([""], dtype=pl.String).str.contains(compiled.regex)
        except pl.exceptions.PolarsError as exc:
            line, col = _locate(text, pattern[:40], line0)
            first = str(exc).strip().splitlines()[0]
            raise ParserFileError(f"{path}:{line}:{col}: regex not supported by the engine: {first}") from None
        return compiled

    sdef = SourceDef(
        name=name,
        programs=tuple(src.get("programs", ())),
        markers=tuple(src.get("markers", ())),
        main_programs=tuple(src.get("main_programs", ())),
        kinds=known_kinds,
    )
    if src.get("prefix"):
        sdef.prefix = compile_at(src["prefix"], 0)
    if src.get("dispatch_skip"):
        sdef.skip = compile_at(src["dispatch_skip"], 0)
    starts = _table_lines(text, "event")
    for i, ev in enumerate(data.get("event", [])):
        line0 = starts[i] if i < len(starts) else 0
        kind = ev.get("kind")
        if kind not in known_kinds:
            line, col = _locate(text, f'"{kind}"', line0) if kind else (line0 + 1, 1)
            raise ParserFileError(f"{path}:{line}:{col}: unknown event kind {kind!r} for source {name!r}")
        if not isinstance(ev.get("match"), str):
            raise ParserFileError(f"{path}:{line0 + 1}:1: event {kind!r} has no match pattern")
        compiled = compile_at(ev["match"], line0)
        constants = dict(ev.get("set", {}))
        for col_name in constants:
            if col_name not in schema.FIELD_COLUMNS:
                line, col = _locate(text, col_name, line0)
                raise ParserFileError(f"{path}:{line}:{col}: unknown column {col_name!r} in set")
        sdef.events.append(EventDef(kind=kind, compiled=compiled, daemons=tuple(ev.get("daemons", ())),
                                    constants=constants, origin=f"{path.name}:{line0 + 1}",
                                    named=compiler.named))
    return sdef


def _cache_path(files: list[Path], syslog_names: tuple[str, ...]) -> Path | None:
    """Where the compiled parsers of exactly these files are cached (None: no cache dir)."""
    from . import __version__
    h = hashlib.sha256(f"{__version__}|{pl.__version__}|{syslog_names}".encode())
    # the compiler and its built-in sub-patterns too: a changed compiler must not load old regexes
    for module in ("patterns.py", "asciire.py", "parsers.py"):
        h.update(Path(__file__).with_name(module).read_bytes())
    for path in files:
        h.update(str(path).encode() + b"\0" + path.read_bytes() + b"\0")
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "logscope" / f"parsers-{h.hexdigest()[:24]}.pickle"


def load(extra_dirs: list[Path] | tuple[Path, ...] = (), syslog_names: tuple[str, ...] = ()) -> ParserSet:
    """Load the bundled parser files, then those of ``extra_dirs`` (in order).

    Compiling every pattern takes about half a second, so the result is cached
    in the user's cache directory, keyed by the files' contents and the compiler's source.
    """
    for d in extra_dirs:
        if not Path(d).is_dir():
            raise ParserFileError(f"{d}: parser directory does not exist")
    builtin = _parser_files(builtin_dir())
    extra = [(Path(d), _parser_files(Path(d))) for d in extra_dirs]
    try:
        cache = _cache_path(builtin + [p for _, ps in extra for p in ps], syslog_names)
        with open(cache, "rb") as fh:
            cached = pickle.load(fh)
        if isinstance(cached, ParserSet):
            return cached
    except (OSError, pickle.PickleError, EOFError, AttributeError, ImportError, ValueError):
        pass
    parsers = _load(builtin, extra, syslog_names)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")
        with open(tmp, "wb") as fh:
            pickle.dump(parsers, fh, protocol=pickle.HIGHEST_PROTOCOL)
        tmp.replace(cache)
    except (OSError, NameError, pickle.PickleError):
        pass  # no cache: still correct, just slower to start
    return parsers


def _load(builtin: list[Path], extra: list[tuple[Path, list[Path]]], syslog_names: tuple[str, ...]) -> ParserSet:
    columns = schema.FIELD_COLUMNS
    sources: dict[str, SourceDef] = {}
    for path in builtin:
        sdef = _compile_file(path, columns)
        sources[sdef.name] = sdef
    for _, paths in extra:
        for path in paths:
            sdef = _compile_file(path, columns)
            if sdef.name in sources:
                base = sources[sdef.name]
                base.events[:0] = sdef.events
                base.kinds.update(sdef.kinds)
                base.programs = tuple(dict.fromkeys(base.programs + sdef.programs))
                base.markers = tuple(dict.fromkeys(base.markers + sdef.markers))
            else:
                sources[sdef.name] = sdef
    for sdef in sources.values():
        sdef.compute_leads()
    return ParserSet(sources, syslog_names)
