"""``python -m logscope.dmarc.bench``: records/s of ``logscope dmarc`` next to parsedmarc.

Replicates the shared corpus's DMARC reports to about ``--files`` files in a
temporary directory (each copy gets its own report id, so no copy is a
duplicate of another, and keeps its container: plain, .gz, doubly gzipped,
.zip), then runs ``logscope dmarc DIR --format json`` and ``parsedmarc
--offline -s -r -o OUT DIR`` (from a virtual environment, by default
``/tmp/pdm``; ``--install`` creates it with pip) under ``/usr/bin/time -v``,
``--runs`` times each, and prints every run, the medians and the message
totals per policy domain of both tools side by side.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import io
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import zipfile
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


def timed(cmd: list[str], stdout_path: Path | None = None) -> tuple[float, float, int, str]:
    """(wall seconds, peak RSS MB, exit status, the command's stderr) of one run under /usr/bin/time -v."""
    with open(stdout_path or "/dev/null", "wb") as out:
        proc = subprocess.run(["/usr/bin/time", "-v", *cmd], stdout=out, stderr=subprocess.PIPE, text=True)
    wall = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", proc.stderr)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    if not wall or not rss:
        raise SystemExit(f"/usr/bin/time said: {proc.stderr[-2000:]}")
    h, m, s = wall.groups()
    status = re.search(r"Exit status: (\d+)", proc.stderr)
    own = proc.stderr[: proc.stderr.rfind("\tCommand being timed:")]
    return (int(h or 0) * 3600 + int(m) * 60 + float(s), int(rss.group(1)) / 1024,
            int(status.group(1)) if status else -1, own)


def run_logscope(data: Path, runs: int, work: Path, jobs: int) -> tuple[list[tuple[float, float]], dict]:
    out = work / "logscope.json"
    results = []
    for i in range(runs):
        wall, rss, status, _ = timed([sys.executable, "-m", "logscope", "dmarc", str(data), "--format", "json",
                                      "--jobs", str(jobs)], out)
        if status not in (0, 2):
            raise SystemExit(f"logscope dmarc exited {status}")
        results.append((wall, rss))
        print(f"  logscope -j {jobs} run {i + 1}: {wall:7.2f} s  peak RSS {rss:6.0f} MB", flush=True)
    return results, json.loads(out.read_text())


_FAILED = re.compile(r"Failed to parse (.+?) - (.*)")


def run_parsedmarc(exe: Path, data: Path, runs: int, work: Path):
    """Runs, message totals per domain, output rows, and {file: why} of the files it could not parse."""
    outdir = work / "parsedmarc"
    results = []
    failed: dict[str, str] = {}
    for i in range(runs):
        shutil.rmtree(outdir, ignore_errors=True)
        wall, rss, status, err = timed([str(exe), "--offline", "-s", "-r", "-o", str(outdir), str(data)])
        failed = {m[1]: m[2] for m in _FAILED.finditer(err)}
        results.append((wall, rss))
        print(f"  parsedmarc run {i + 1}: {wall:7.2f} s  peak RSS {rss:6.0f} MB  (exit {status}, "
              f"{len(failed):,} files not parsed)", flush=True)
    reports = json.loads((outdir / "aggregate.json").read_text())
    totals: dict[str, int] = collections.Counter()
    rows = 0
    for rep in reports:
        for rec in rep.get("records", []):
            totals[rep["policy_published"]["domain"]] += rec["count"]
            rows += 1
    return results, dict(totals), rows, failed


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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m logscope.dmarc.bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=10_000, help="report files to generate (default 10000)")
    ap.add_argument("--runs", type=int, default=3, help="runs of each tool (default 3; medians are printed)")
    ap.add_argument("--corpus", type=Path, default=CORPUS, help="directory of DMARC reports to replicate")
    ap.add_argument("--venv", type=Path, default=Path("/tmp/pdm"), help="parsedmarc's virtual environment")
    ap.add_argument("--install", action="store_true", help="create the venv and pip install parsedmarc if missing")
    ap.add_argument("--no-parsedmarc", action="store_true", help="time logscope only")
    args = ap.parse_args(argv)
    if not Path("/usr/bin/time").exists():
        raise SystemExit("/usr/bin/time is missing (apt-get install time)")
    from .worker import default_jobs
    with tempfile.TemporaryDirectory(prefix="logscope-dmarc-bench-") as tmp:
        work = Path(tmp)
        data = work / "reports"
        n = replicate(args.corpus, data, args.files)
        size = sum(p.stat().st_size for p in data.rglob("*") if p.is_file())
        print(f"input: {n:,} report files ({size / 1e6:.1f} MB) replicated from {args.corpus}")
        medians = {}
        summary = {}
        for jobs in sorted({1, default_jobs()}):
            runs, summary = run_logscope(data, args.runs, work, jobs)
            medians[jobs] = statistics.median(w for w, _ in runs)
            records = summary["totals"]["records"]
            print(f"logscope -j {jobs} median: {medians[jobs]:.2f} s, {records / medians[jobs]:,.0f} records/s, "
                  f"{n / medians[jobs]:,.0f} files/s, peak RSS {statistics.median(r for _, r in runs):.0f} MB "
                  f"({records:,} records, {summary['totals']['skipped_records']:,} bad records skipped)")
        records = summary["totals"]["records"]
        ours = {d["domain"]: d["messages"] for d in summary["domains"]}
        if args.no_parsedmarc:
            return 0
        exe = install_parsedmarc(args.venv) if args.install else args.venv / "bin" / "parsedmarc"
        if not exe.exists():
            print(f"parsedmarc not found at {exe}: run with --install (needs PyPI access)")
            return 1
        pd_runs, theirs, rows, failed = run_parsedmarc(exe, data, args.runs, work)
        pd_wall = statistics.median(w for w, _ in pd_runs)
        print(f"parsedmarc median: {pd_wall:.2f} s, {records / pd_wall:,.0f} records/s (same {records:,} report "
              f"records; it wrote {rows:,} rows, splitting multi-day reports per day), {n / pd_wall:,.0f} files/s, "
              f"peak RSS {statistics.median(r for _, r in pd_runs):.0f} MB")
        for jobs, wall in sorted(medians.items()):
            print(f"speed-up of logscope -j {jobs} over parsedmarc (wall clock, same input): {pd_wall / wall:.1f}x")
        reasons = collections.Counter(why for why in failed.values())
        for why, count in reasons.most_common():
            print(f"parsedmarc could not parse {count:,} files: {why}")
        compare("all files", ours, theirs)
        if failed:
            from .collect import read_reports
            kept = [str(p) for p in sorted(data.rglob("*")) if p.is_file() and str(p) not in failed]
            like = read_reports(kept, lambda o, w: None, None, jobs=default_jobs()).records
            mine = {d: int(c) for d, c in like.group_by("domain").agg(__import__("polars").col("count").sum()).iter_rows()}
            compare("only the files parsedmarc could parse", mine, theirs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
