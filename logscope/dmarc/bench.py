"""``python -m logscope.dmarc.bench``: records/s of ``logscope dmarc`` next to parsedmarc.

Replicates the shared corpus's DMARC reports to about ``--files`` files in a
temporary directory (each copy gets its own report id, so no copy is a
duplicate of another, and keeps its container: plain, .gz, doubly gzipped,
.zip), then times under ``/usr/bin/time -v``, in ``--runs`` rounds (each round
runs every configuration once, in turn, so load from elsewhere falls on all
alike, in an order that rotates; before every run the input files are read and the tool is started
once with ``--help``, so that all start with their inputs and libraries in the page cache):

* ``logscope dmarc DIR --format json`` as installed (one process per CPU), with ``-j 1`` and ``-j 2``;
* ``parsedmarc --offline -s -r -o OUT DIR`` (from a virtual environment, by default ``/tmp/pdm``;
  ``--install`` creates it with pip) as installed (one process) and with ``n_procs = 2``.

It prints every run, the medians (wall clock, CPU, records/s, peak RSS), the
same for a single file (the start-up cost that a default of one process per
CPU must not make worse), the speed-ups out of the box against out of the
box and two processes against two, and the message totals per policy domain
of both tools side by side.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import io
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from .inputs import iter_payloads, sniff

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus" / "dmarc"
_REPORT_ID = re.compile(rb"(<(?:\w+:)?report_id>)(.*?)(</(?:\w+:)?report_id>)", re.S)


def containers(data: bytes) -> list[str]:
    """The container chain of a file, outermost first: e.g. ['gzip', 'gzip'] or ['zip']."""
    chain = []
    while (kind := sniff(data)) in ("gzip", "zip"):
        chain.append(kind)
        if kind == "gzip":
            data = gzip.decompress(data)
        else:
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                data = zf.read(zf.infolist()[0])
    return chain


def wrap(xml: bytes, chain: list[str]) -> bytes:
    for kind in reversed(chain):
        if kind == "gzip":
            xml = gzip.compress(xml, mtime=0)
        else:
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
                zf.writestr("report.xml", xml)
            xml = buf.getvalue()
    return xml


def replicate(corpus: Path, out: Path, files: int) -> int:
    """Write about ``files`` report files into ``out``; return how many were written."""
    sources = sorted(p for p in corpus.rglob("*") if p.is_file())
    items = []
    for path in sources:
        payloads = list(iter_payloads([str(path)], lambda o, w: None))
        if len(payloads) == 1 and payloads[0].kind == "xml":
            items.append((path, payloads[0].data, containers(path.read_bytes())))
    if not items:
        raise SystemExit(f"no DMARC reports under {corpus}")
    copies = max(1, files // len(items))
    out.mkdir(parents=True, exist_ok=True)
    n = 0
    for i, (path, xml, chain) in enumerate(items):
        for k in range(copies):
            body = _REPORT_ID.sub(lambda m: m[1] + m[2].strip() + f".b{i}.{k}".encode() + m[3], xml, count=1)
            sub = out / f"{k % 100:02d}"
            sub.mkdir(exist_ok=True)
            (sub / f"{k:05d}-{path.name}").write_bytes(wrap(body, chain))
            n += 1
    return n


@dataclass
class Run:
    wall: float  # seconds
    cpu: float  # user + system seconds, children included
    rss: float  # peak RSS of the largest process, MB
    status: int
    stderr: str  # the command's own stderr


def timed(cmd: list[str], stdout_path: Path | None = None, env: dict | None = None) -> Run:
    """One run under /usr/bin/time -v."""
    with open(stdout_path or "/dev/null", "wb") as out:
        proc = subprocess.run(["/usr/bin/time", "-v", *cmd], stdout=out, stderr=subprocess.PIPE, text=True,
                              env=None if env is None else {**os.environ, **env})
    err = proc.stderr
    wall = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", err)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", err)
    user = re.search(r"User time \(seconds\): ([\d.]+)", err)
    system = re.search(r"System time \(seconds\): ([\d.]+)", err)
    if not (wall and rss and user and system):
        raise SystemExit(f"/usr/bin/time said: {err[-2000:]}")
    h, m, sec = wall.groups()
    status = re.search(r"Exit status: (\d+)", err)
    return Run(int(h or 0) * 3600 + int(m) * 60 + float(sec), float(user[1]) + float(system[1]),
               int(rss.group(1)) / 1024, int(status.group(1)) if status else -1,
               err[: err.rfind("\tCommand being timed:")])


@dataclass
class Tool:
    """One configuration to time: a label, a command line (the input path last) and its environment."""

    label: str
    cmd: list[str]
    env: dict | None = None
    runs: list[Run] = field(default_factory=list)

    def median(self, attr: str = "wall") -> float:
        return statistics.median(getattr(r, attr) for r in self.runs)


def logscope_tool(jobs: int | None) -> Tool:
    """``logscope dmarc`` with ``-j jobs`` (None: no flag, the default)."""
    label = "logscope (default)" if jobs is None else f"logscope -j {jobs}"
    flags = [] if jobs is None else ["--jobs", str(jobs)]
    return Tool(label, [sys.executable, "-m", "logscope", "dmarc", "--format", "json", *flags])


def parsedmarc_tool(exe: Path, out: Path, procs: int | None) -> Tool:
    """parsedmarc, offline, silent, JSON and CSV into ``out``; ``procs``: its n_procs (parsedmarc 11 has
    no flag for it, only the config key, which PARSEDMARC_GENERAL_N_PROCS sets)."""
    label = "parsedmarc (default)" if procs is None else f"parsedmarc n_procs={procs}"
    env = None if procs is None else {"PARSEDMARC_GENERAL_N_PROCS": str(procs)}
    return Tool(label, [str(exe), "--offline", "-s", "-r", "-o", str(out)], env)


def warm(tool: "Tool", data: Path) -> None:
    """Read every input file and start the tool once with ``--help`` (its interpreter, libraries and
    byte code), so that each run starts with all of that in the page cache: the figures are the
    tools' work, not the disk's (a host may evict idle pages within seconds, e.g. DAMON reclaim)."""
    for p in [data] if data.is_file() else sorted(data.rglob("*")):
        if p.is_file():
            p.read_bytes()
    help_cmd = [tool.cmd[0], "--help"] if tool.cmd[0].endswith("parsedmarc") else [*tool.cmd[:4], "--help"]
    subprocess.run(help_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=None if tool.env is None
                   else {**os.environ, **tool.env})


def run_all(tools: list[Tool], data: Path, runs: int, work: Path) -> None:
    """``runs`` rounds; each round runs every tool once, in turn, so that load from elsewhere falls
    on all of them alike. The order rotates from round to round: the first run after a long one
    is slower here (the host evicts idle pages, libraries included), and that should not always
    hit the same tool."""
    for i in range(runs):
        k = i % len(tools)
        for t in tools[k:] + tools[:k]:
            out = work / "parsedmarc"
            shutil.rmtree(out, ignore_errors=True)
            warm(t, data)
            r = timed([*t.cmd, str(data)], work / "stdout", t.env)
            if r.status not in (0, 2) and t.label.startswith("logscope"):
                raise SystemExit(f"{t.label} exited {r.status}: {r.stderr[-500:]}")
            t.runs.append(r)
            print(f"  run {i + 1}  {t.label:<24} {r.wall:7.2f} s wall  {r.cpu:7.2f} s CPU  "
                  f"peak RSS {r.rss:5.0f} MB  (exit {r.status})", flush=True)


_FAILED = re.compile(r"Failed to parse (.+?) - (.*)")


def parsedmarc_totals(out: Path) -> tuple[dict[str, int], int]:
    """Message totals per policy domain and output rows of the last parsedmarc run."""
    reports = json.loads((out / "aggregate.json").read_text())
    totals: dict[str, int] = collections.Counter()
    rows = 0
    for rep in reports:
        for rec in rep.get("records", []):
            totals[rep["policy_published"]["domain"]] += rec["count"]
            rows += 1
    return dict(totals), rows


def compare(title: str, ours: dict[str, int], theirs: dict[str, int]) -> bool:
    print(f"messages per policy domain, {title}:")
    print(f"  {'domain':<20} {'logscope':>10} {'parsedmarc':>10}")
    same = True
    for dom in sorted(set(ours) | set(theirs), key=str):
        a, b = ours.get(dom, 0), theirs.get(dom, 0)
        same &= a == b
        print(f"  {dom!s:<20} {a:>10,} {b:>10,}{'' if a == b else '  DIFFERENT'}")
    print("  -> " + ("identical" if same else "different"))
    return same


def install_parsedmarc(venv: Path) -> Path:
    exe = venv / "bin" / "parsedmarc"
    if not exe.exists():
        print(f"installing parsedmarc into {venv} ...", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", "parsedmarc"], check=True)
    return exe


def print_medians(tools: list[Tool], records: int | None = None, files: int | None = None) -> None:
    for t in tools:
        wall = t.median()
        rates = f"{records / wall:9,.0f} records/s  {files / wall:8,.0f} files/s  " if records and files else ""
        print(f"  {t.label:<24} median {wall:7.2f} s wall  {t.median('cpu'):7.2f} s CPU  {rates}"
              f"peak RSS {t.median('rss'):5.0f} MB")


def speedup(ours: Tool, theirs: Tool) -> None:
    print(f"  {ours.label} vs {theirs.label}: {theirs.median() / ours.median():5.1f}x (wall clock medians)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m logscope.dmarc.bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=10_000, help="report files to generate (default 10000)")
    ap.add_argument("--runs", type=int, default=3, help="rounds of runs (default 3; medians are printed)")
    ap.add_argument("--corpus", type=Path, default=CORPUS, help="directory of DMARC reports to replicate")
    ap.add_argument("--venv", type=Path, default=Path("/tmp/pdm"), help="parsedmarc's virtual environment")
    ap.add_argument("--install", action="store_true", help="create the venv and pip install parsedmarc if missing")
    ap.add_argument("--no-parsedmarc", action="store_true", help="time logscope only")
    args = ap.parse_args(argv)
    if not Path("/usr/bin/time").exists():
        raise SystemExit("/usr/bin/time is missing (apt-get install time)")
    from .worker import default_jobs
    cpus = default_jobs()
    exe = None
    if not args.no_parsedmarc:
        exe = install_parsedmarc(args.venv) if args.install else args.venv / "bin" / "parsedmarc"
        if not exe.exists():
            print(f"parsedmarc not found at {exe}: run with --install (needs PyPI access)")
            return 1
    with tempfile.TemporaryDirectory(prefix="logscope-dmarc-bench-") as tmp:
        work = Path(tmp)
        data = work / "reports"
        n = replicate(args.corpus, data, args.files)
        os.sync()  # the copies on disk now, not written back while the tools run
        size = sum(p.stat().st_size for p in data.rglob("*") if p.is_file())
        print(f"input: {n:,} report files ({size / 1e6:.1f} MB) replicated from {args.corpus}; {cpus} CPUs; "
              f"logscope's default is one process per CPU")
        ours = {None: logscope_tool(None), 1: logscope_tool(1), 2: logscope_tool(2)}
        theirs = {}
        if exe is not None:
            theirs = {None: parsedmarc_tool(exe, work / "parsedmarc", None),
                      2: parsedmarc_tool(exe, work / "parsedmarc", 2)}
        tools = [*ours.values(), *theirs.values()]
        run_all(tools, data, args.runs, work)
        # the logscope summary of the same input, for the records count and the per-domain totals
        timed([*ours[None].cmd, str(data)], work / "logscope.json")
        summary = json.loads((work / "logscope.json").read_text())
        records = summary["totals"]["records"]
        print(f"medians of {args.runs} ({records:,} records, {summary['totals']['skipped_records']:,} bad records "
              f"skipped):")
        print_medians(tools, records, n)

        one = min(data.rglob("*.xml"))
        small = [logscope_tool(None), logscope_tool(1)] + ([parsedmarc_tool(exe, work / "parsedmarc", None)]
                                                           if exe is not None else [])
        print(f"one file ({one.name}), the small-input overhead:")
        run_all(small, one, args.runs, work)
        print_medians(small)

        if exe is None:
            return 0
        print("speed-ups:")
        speedup(ours[None], theirs[None])
        speedup(ours[2], theirs[2])
        speedup(ours[1], theirs[None])
        best = min(theirs.values(), key=Tool.median)
        if best is not theirs[None]:
            speedup(ours[None], best)  # parsedmarc's fastest configuration
        failed = {m[1]: m[2] for m in _FAILED.finditer(theirs[2].runs[-1].stderr + theirs[None].runs[-1].stderr)}
        run_all([theirs[None]], data, 1, work)  # its output of the full input, for the totals
        totals, rows = parsedmarc_totals(work / "parsedmarc")
        print(f"parsedmarc wrote {rows:,} rows (it splits multi-day reports per day)")
        reasons = collections.Counter(failed.values())
        for why, count in reasons.most_common():
            print(f"parsedmarc could not parse {count:,} files: {why}")
        ours_totals = {d["domain"]: d["messages"] for d in summary["domains"]}
        compare("all files", ours_totals, totals)
        if failed:
            from .collect import read_reports
            kept = [str(p) for p in sorted(data.rglob("*")) if p.is_file() and str(p) not in failed]
            like = read_reports(kept, lambda o, w: None, None, jobs=cpus).records
            import polars as pl
            mine = {d: int(c) for d, c in like.group_by("domain").agg(pl.col("count").sum()).iter_rows()}
            compare("only the files parsedmarc could parse", mine, totals)
    return 0


if __name__ == "__main__":
    sys.exit(main())
