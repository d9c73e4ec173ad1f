"""Seeded generator of a large, realistic mixed mail-server syslog (maillog).

``generate(path_or_file, lines=1_000_000, seed=42)`` writes BSD syslog lines
(``Mar  1 00:00:01 mx1 postfix/smtpd[1234]: ...``, space-padded day as rsyslog
writes it) with non-decreasing timestamps, as one mail server plus its
firewall would log them. By volume roughly: postfix ~70 %, dovecot ~15 %,
Cisco ASA ~8 % (host ``fw1``), rspamd ~7 %.

What is in it:

* postfix message lifecycles with consistent queue ids, message-ids and
  per-process pids: postscreen (PASS OLD/NEW, DNSBL, PREGREET, HANGUP,
  rejects) -> smtpd (TLS or plaintext) -> cleanup -> rspamd verdict -> qmgr ->
  lmtp to dovecot -> removed; outbound submission with SASL, smtp client TLS,
  sent / deferred (with a later retry) / bounced (with the non-delivery
  notification as its own queue entry); NOQUEUE rejects of many kinds,
  milter rejects, lost connections, SASL password-guessing bursts from a few
  attacker IPs, rDNS warnings, anvil statistics every 10 minutes;
* dovecot IMAP/POP3 logins and logouts (TLS, ``secured`` webmail, a few
  plaintext), auth failures, LMTP deliveries matching the postfix ones;
* rspamd task logs (syslog form) for every scanned message, with scores
  that add up to the symbols and actions that match what postfix does;
* Cisco ASA connection build/teardown for some of the SMTP/IMAP sessions,
  NAT translations for outbound mail and DNS, ACL denies from scanners,
  threat detection, and a rare failover / config command.

Pools (about 2,000 client IPs incl. some IPv6, a few dozen spammy ones, a
handful of attackers, 200 local users) and traffic come from one
``random.Random(seed)``: the same seed and arguments give byte-identical
output. Traffic follows a day curve for humans (IMAP, submission) and is flat
for machines (spam, scanners). Run ``python -m logscope.generate -h``.
"""

from __future__ import annotations

import argparse
import gzip
import heapq
import io
import itertools
import sys
from datetime import datetime, timedelta
from pathlib import Path
from random import Random
from typing import IO

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_DEFAULT_START = datetime(2025, 3, 1, 0, 0, 0)

OUR_DOMAINS = ("example.org", "example.net")
MX_INSIDE = "10.0.0.25"  # the mail server behind the firewall
MX_OUTSIDE = "198.51.100.25"  # its public (NAT) address
MX_V6 = "2001:db8:100::25"
FW_HOST = "fw1"

_FIRST = ("anna", "ben", "carla", "david", "emma", "felix", "greta", "hugo", "ines", "jonas",
          "katja", "lukas", "mia", "noah", "olga", "paul", "rosa", "simon", "tara", "uwe")
_LAST = ("adler", "bauer", "conrad", "dietz", "ebert", "fuchs", "graf", "hahn", "iske", "jung",
         "krause", "lang", "meyer", "neumann")
_SYL = ("al", "ber", "cor", "dan", "el", "fin", "gal", "hol", "ion", "jar", "kel", "lum", "mar",
        "nor", "ost", "pra", "quin", "ros", "sol", "tor", "ul", "ven", "wes", "xan", "yor", "zen")
_ORG_WORDS = ("logistics", "consulting", "media", "bank", "shop", "travel", "energy", "health",
              "labs", "systems", "partners", "school", "city", "news", "software", "foods")
_TLDS = ("com", "com", "com", "net", "org", "de", "fr", "nl", "co.uk", "eu", "io")
_SPAM_TLDS = ("top", "xyz", "click", "icu", "buzz", "info", "shop", "live", "cn", "ru")
# Big senders: many outbound IPs each, hostname patterns like the real ones.
_PROVIDERS = (
    ("gmail.com", "mail-{a}{n}-f{m}.google.com", "mail.gmail.com", 60),
    ("outlook.com", "mail-{a}{n}.outbound.protection.outlook.com", "{a}{n}.prod.outlook.com", 50),
    ("yahoo.com", "sonic{n}-{m}.consmr.mail.ne1.yahoo.com", "mail.yahoo.com", 15),
    ("amazonses.com", "a{n}-{m}.smtp-out.amazonses.com", "email.amazonses.com", 25),
    ("sendgrid.net", "o{n}.ptr{m}.sendgrid.net", "ismtpd.sendgrid.net", 15),
    ("mcsv.net", "mail{n}.atl{m}.mcsv.net", "mailchimp.com", 15),
    ("gmx.net", "mout.gmx.net", "gmx.net", 8),
    ("web.de", "mout.web.de", "web.de", 8),
)
_SPAM_HELOS = ("User", "ylmf-pc", "localhost", "WIN-{h}", "DESKTOP-{h}", "{ip}", "mail", "pc{n}",
               "smtp.{d}", "{d}")
_ATTACK_USERS = ("admin", "test", "info", "user", "support", "root", "postmaster", "sales",
                 "webmaster", "office", "contact", "backup")
_TLS13 = ("TLS_AES_256_GCM_SHA384 (256/256 bits)", "TLS_AES_256_GCM_SHA384 (256/256 bits)",
          "TLS_AES_128_GCM_SHA256 (128/128 bits)", "TLS_CHACHA20_POLY1305_SHA256 (256/256 bits)")
_TLS12 = ("ECDHE-RSA-AES256-GCM-SHA384 (256/256 bits)", "ECDHE-RSA-AES128-GCM-SHA256 (128/128 bits)",
          "ECDHE-ECDSA-AES256-GCM-SHA384 (256/256 bits)")
_KEX = " key-exchange X25519 server-signature RSA-PSS (2048 bits) server-digest SHA256"

# rspamd symbols as (log text, score); the logged total is their sum.
_HAM_SYMS = tuple((n, s) for n, s in (
    ("BAYES_HAM", -3.0), ("DMARC_POLICY_ALLOW", -0.5), ("R_DKIM_ALLOW", -0.2), ("R_SPF_ALLOW", -0.2),
    ("MIME_GOOD", -0.1), ("ARC_ALLOW", -1.0), ("NEURAL_HAM", -1.5), ("HAS_LIST_UNSUB", -0.01),
    ("RCVD_TLS_LAST", 0.0), ("FROM_HAS_DN", 0.0), ("TO_DN_NONE", 0.0), ("MID_RHS_MATCH_FROM", 0.0),
    ("RCPT_COUNT_ONE", 0.0), ("ASN", 0.0), ("MIME_TRACE", 0.0), ("RCVD_COUNT_TWO", 0.0),
    ("MIME_HTML_ONLY", 0.2), ("FREEMAIL_FROM", 0.0), ("DKIM_TRACE", 0.0), ("TO_MATCH_ENVRCPT_ALL", 0.0),
))
_SPAM_SYMS = tuple((n, s) for n, s in (
    ("BAYES_SPAM", 5.1), ("NEURAL_SPAM", 3.0), ("URIBL_BLACK", 7.5), ("ABUSE_SURBL", 5.0),
    ("R_SPF_FAIL", 1.0), ("R_SPF_SOFTFAIL", 0.5), ("DMARC_POLICY_REJECT", 2.0), ("R_DKIM_REJECT", 1.0),
    ("HFILTER_HOSTNAME_UNKNOWN", 2.5), ("SUBJ_ALL_CAPS", 3.0), ("MISSING_MID", 2.5),
    ("FAKE_REPLY", 1.0), ("FUZZY_DENIED", 12.0), ("RBL_SENDERSCORE", 2.0), ("MIME_BAD_ATTACHMENT", 4.0),
    ("FORGED_SENDER", 0.3), ("R_DKIM_NA", 0.0), ("RCVD_NO_TLS_LAST", 0.1), ("HFILTER_HELO_BAREIP", 3.0),
))

# Relative arrival rates (events per second at rate multiplier 1). Machine
# traffic (spam, scanners, relayed mail) is flat; human traffic (IMAP,
# submission) follows the day curve below.
_MACHINE = (("inbound", 0.38), ("spam", 0.20), ("misc_reject", 0.05), ("asa", 0.145),
            ("pf_noise", 0.025), ("burst", 0.0012), ("dovecot_fail", 0.03), ("pickup", 0.004),
            ("asa_rare", 0.0008))
_HUMAN = (("outbound", 0.13), ("imap", 0.31), ("pop3", 0.02), ("user_fail", 0.006))
_DAY_CURVE = (0.25, 0.2, 0.18, 0.18, 0.2, 0.3, 0.55, 0.95, 1.45, 1.7, 1.75, 1.7, 1.45, 1.55,
              1.7, 1.7, 1.55, 1.35, 1.1, 0.9, 0.75, 0.6, 0.45, 0.35)

# Postfix logs delays with at most two decimals and no trailing zeros; a table
# of hundredths avoids float formatting per line.
_HUND = tuple(("%.2f" % (i / 100)).rstrip("0").rstrip(".") for i in range(1000))


def _fd(h: int) -> str:
    """Postfix-style delay from hundredths of a second."""
    return _HUND[h] if h < 1000 else str(h // 100)


def _dur(sec: float) -> str:
    """ASA duration H:MM:SS."""
    s = int(sec)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def _cmds(parts: list[tuple[str, int, int]]) -> str:
    """smtpd disconnect counters: ``ehlo=1 rcpt=0/1 ... commands=4/5``."""
    out = []
    ok = tot = 0
    for name, good, total in parts:
        out.append(f"{name}={good}" if good == total else f"{name}={good}/{total}")
        ok += good
        tot += total
    out.append(f"commands={ok}" if ok == tot else f"commands={ok}/{tot}")
    return " ".join(out)


class _Pool:
    """Pids of one postfix/dovecot service: a process serves one session at a
    time, is reused while busy-free, exits after ``max_idle`` s idle or
    ``max_use`` sessions (like postfix's max_idle/max_use), so pids recur
    realistically and never overlap."""

    __slots__ = ("sim", "idle", "max_idle", "max_use", "busy")

    def __init__(self, sim: "_Sim", max_idle: float = 100.0, max_use: int = 100):
        self.sim = sim
        self.idle: list[tuple[float, int, int]] = []  # (free from, pid, sessions served)
        self.max_idle = max_idle
        self.max_use = max_use
        self.busy: dict[int, int] = {}

    def get(self, now: float, end: float | None = None) -> int:
        """A free pid at ``now``, busy until ``end`` (or until ``put`` when the end is not known yet)."""
        idle = self.idle
        pid = None
        uses = 0
        while idle and idle[0][0] <= now:
            free_at, p, u = heapq.heappop(idle)
            if now - free_at <= self.max_idle and u < self.max_use:
                pid, uses = p, u
                break
        if pid is None:
            pid = self.sim.new_pid()
        if end is None:
            self.busy[pid] = uses + 1
        else:
            heapq.heappush(idle, (end, pid, uses + 1))
        return pid

    def put(self, pid: int, end: float) -> None:
        """The session of ``pid`` ended at ``end``."""
        heapq.heappush(self.idle, (end, pid, self.busy.pop(pid)))


class _Sim:
    """The simulated server: pools, pending lines (a heap by time) and the scenarios."""

    def __init__(self, seed: int, start: datetime, hostname: str):
        self.rng = rng = Random(seed)
        self.host = hostname
        self.fqdn = f"{hostname}.{OUR_DOMAINS[0]}"
        self.heap: list[tuple[float, int, str]] = []
        self.seq = itertools.count()
        self.day0 = datetime(start.year, start.month, start.day)
        self.t0 = start.hour * 3600 + start.minute * 60 + start.second + start.microsecond / 1e6
        self._pid = rng.randint(2000, 9000)
        self._conn = rng.randint(100000, 900000)  # ASA connection ids
        self._build_pools()
        H = hostname
        # Prefixes of every line, built once.
        self.p_ps = f"{H} postfix/postscreen[{self.new_pid()}]: "
        self.p_qmgr = f"{H} postfix/qmgr[{self.new_pid()}]: "
        self.p_pickup = f"{H} postfix/pickup[{self.new_pid()}]: "
        self.rspamd_pids = [self.new_pid() for _ in range(4)]
        self.anvil_pid = self.new_pid()
        self.pools = {n: _Pool(self) for n in ("smtpd", "submission", "cleanup", "smtp", "lmtp", "bounce")}
        self.dlmtp = _Pool(self, 60.0, 50)  # dovecot lmtp processes
        self.recent_ips: list[str] = []  # for anvil statistics

    # ---- pools -------------------------------------------------------
    def new_pid(self) -> int:
        """Next pid: increasing with gaps (other processes fork too), wrapping like Linux."""
        self._pid += self.rng.randint(1, 40)
        if self._pid > 32760:
            self._pid = 300 + self._pid % 1000
        return self._pid

    def _ip4(self) -> str:
        r = self.rng
        while True:
            a = r.randint(1, 223)
            if a not in (10, 127, 169, 172, 192, 100, 0):
                return f"{a}.{r.randint(0, 255)}.{r.randint(0, 255)}.{r.randint(1, 254)}"

    def _ip6(self) -> str:
        r = self.rng
        return f"2001:db8:{r.randint(1, 0xffff):x}:{r.randint(0, 0xfff):x}::{r.randint(1, 0xffff):x}"

    def _word(self, n: int = 2) -> str:
        return "".join(self.rng.choice(_SYL) for _ in range(n))

    def _build_pools(self) -> None:
        r = self.rng
        # Local users: 200, mostly first.last@example.org, a few role accounts.
        names = [f"{f}.{l}" for f in _FIRST for l in _LAST]
        r.shuffle(names)
        users = names[:190] + ["info", "sales", "support", "billing", "office", "hr", "jobs", "press",
                               "postmaster", "abuse"]
        self.users = [f"{u}@{OUR_DOMAINS[0] if i % 10 else OUR_DOMAINS[1]}" for i, u in enumerate(users)]
        self.user_cw = list(itertools.accumulate(r.paretovariate(1.2) for _ in self.users))
        # Each user's IMAP clients: home line, phone (carrier pool), office NAT, webmail.
        office = self._ip4()
        carriers = [self._ip4().rsplit(".", 2)[0] for _ in range(6)]
        self.user_ips = []
        for _ in self.users:
            home = self._ip6() if r.random() < 0.15 else self._ip4()
            phone_net = r.choice(carriers)
            self.user_ips.append((home, phone_net, office))
        # Remote senders: organizations with a domain, an MX/outbound host and 1-3 IPs.
        senders = []  # (ip, host, helo, domain, is_v6)
        for dom, pat, mid_host, n in _PROVIDERS:
            for _ in range(n):
                a = r.choice("abcdefghijklmnopqrstuvwxyz")
                host = pat.format(a=a, n=r.randint(1, 99), m=r.randint(1, 250))
                ip = self._ip6() if r.random() < 0.2 else self._ip4()
                mid = mid_host.format(a=a, n=r.randint(1, 99))
                senders.append((ip, host, host, dom, ":" in ip, mid, r.paretovariate(1.0) * 3))
        for _ in range(700):
            dom = f"{self._word()}-{r.choice(_ORG_WORDS)}.{r.choice(_TLDS)}"
            host = f"{r.choice(('mail', 'mx', 'smtp', 'mailout', 'relay'))}{r.choice(('', '1', '2', '01'))}.{dom}"
            for _ in range(r.choice((1, 1, 1, 2, 3))):
                ip = self._ip6() if r.random() < 0.05 else self._ip4()
                senders.append((ip, host, host, dom, ":" in ip, host, r.paretovariate(1.3)))
        self.senders = senders
        self.sender_cw = list(itertools.accumulate(s[6] for s in senders))
        # Remote recipients of outbound mail: the same organizations' domains.
        self.remote_doms = sorted({s[3] for s in senders})
        self.remote_mx = {}
        for d in self.remote_doms:
            ip = self._ip4()
            self.remote_mx[d] = (f"mx{r.choice(('', '1', '2'))}.{d}" if d not in ("gmail.com",) else
                                 "gmail-smtp-in.l.google.com", ip)
        # Unknown/dynamic clients: occasional odd rejects, rDNS trouble.
        self.misc = []
        for _ in range(950):
            ip = self._ip4()
            kind = r.random()
            if kind < 0.4:
                host = "unknown"
            else:
                host = f"{ip.replace('.', '-')}.{r.choice(('dyn', 'static', 'pool', 'cust'))}.{self._word()}-isp.{r.choice(_TLDS)}"
            helo = host if host != "unknown" else r.choice((f"[{ip}]", "localhost", f"{self._word()}.local", self._word()))
            self.misc.append((ip, host, helo, f"{self._word()}.{r.choice(_TLDS)}", False, "", 1.0))
        # Spammers: a few dozen IPs sending most of the junk, bursty weights.
        self.spammers = []
        for i in range(45):
            ip = self._ip6() if i % 15 == 0 else self._ip4()
            dom = f"{self._word(r.randint(2, 3))}.{r.choice(_SPAM_TLDS)}"
            host = "unknown" if r.random() < 0.5 else f"{self._word()}{r.randint(1, 999)}.{dom}"
            helo = r.choice(_SPAM_HELOS).format(h=f"{r.getrandbits(28):07X}", ip=f"[{ip}]", n=r.randint(1, 99), d=dom)
            listed = r.random() < 0.6  # on zen.spamhaus.org
            self.spammers.append((ip, host, helo, dom, ":" in ip, listed, r.paretovariate(0.8)))
        self.spam_cw = list(itertools.accumulate(s[6] for s in self.spammers))
        self.attackers = [self._ip4() for _ in range(6)]
        self.scanners = [self._ip4() for _ in range(40)]
        self.resolvers = ("9.9.9.9", "1.1.1.1", "8.8.8.8")
        self.ham_syms = [(f"{n}({s:.2f}){{}}", s) for n, s in _HAM_SYMS]
        self.spam_syms = [(f"{n}({s:.2f}){{}}", s) for n, s in _SPAM_SYMS]

    # ---- emitting ----------------------------------------------------
    def emit(self, t: float, text: str) -> None:
        heapq.heappush(self.heap, (t, next(self.seq), text))

    def header(self, sec: int) -> str:
        """``Mmm dd HH:MM:SS`` for second ``sec`` since day0 midnight (space-padded day)."""
        day, sod = divmod(sec, 86400)
        d = self.day0 + timedelta(days=day)
        return f"{_MONTHS[d.month - 1]} {d.day:2d} {sod // 3600:02d}:{sod // 60 % 60:02d}:{sod % 60:02d}"

    # ---- small helpers -----------------------------------------------
    def qid(self) -> str:
        return f"{self.rng.getrandbits(40):010X}"

    def sess(self) -> str:
        return "".join(self.rng.choices(_B64, k=16))

    def user(self) -> tuple[int, str]:
        i = self.rng.choices(range(len(self.users)), cum_weights=self.user_cw)[0]
        return i, self.users[i]

    def msgid(self, dom: str, style: int) -> str:
        r = self.rng
        if style == 0:
            return f"CA{''.join(r.choices(_B64[:62], k=30))}@mail.gmail.com"
        if style == 1:
            return f"{r.getrandbits(64):016x}.{r.getrandbits(24):06x}@{dom}"
        return f"{r.randint(10**11, 10**12 - 1)}.{r.randint(1000, 99999)}.{r.getrandbits(32):08x}@{dom}"

    def tls(self) -> str:
        r = self.rng.random()
        if r < 0.8:
            return f"TLSv1.3 with cipher {self.rng.choice(_TLS13)}" + (_KEX if r < 0.25 else "")
        return f"TLSv1.2 with cipher {self.rng.choice(_TLS12)}"

    def asa_conn(self) -> int:
        self._conn += self.rng.randint(1, 60)
        return self._conn

    def asa_in(self, t: float, end: float, ip: str, port: int, dport: int, nbytes: int) -> None:
        """ASA build/teardown of an inbound TCP connection to the mail server."""
        c = self.asa_conn()
        self.emit(t, f"{FW_HOST} : %ASA-6-302013: Built inbound TCP connection {c} for outside:{ip}/{port} "
                     f"({ip}/{port}) to inside:{MX_INSIDE}/{dport} ({MX_OUTSIDE}/{dport})")
        why = "TCP FINs" if self.rng.random() < 0.9 else self.rng.choice(("TCP Reset-I", "TCP Reset-O", "SYN Timeout"))
        self.emit(end, f"{FW_HOST} : %ASA-6-302014: Teardown TCP connection {c} for outside:{ip}/{port} "
                       f"to inside:{MX_INSIDE}/{dport} duration {_dur(end - t)} bytes {nbytes} {why}")

    def rspamd(self, t: float, msgid: str, qid: str, ip: str, sender: str, rcpts: list[str],
               size: int, spamminess: float) -> tuple[str, float]:
        """Emit the rspamd task log of one scan; returns (action, score)."""
        r = self.rng
        picks = r.sample(self.ham_syms, r.randint(3, 7))
        if spamminess > 0:
            k = min(len(self.spam_syms), max(1, int(spamminess * r.uniform(1, 4))))
            picks += r.sample(self.spam_syms, k)
            if sum(v for _, v in picks) > 6:  # a spammy message is not also Bayes-ham
                picks = [p for p in picks if not p[0].startswith(("BAYES_HAM", "NEURAL_HAM"))]
        score = sum(v for _, v in picks)
        syms = sorted(s for s, _ in picks)
        if score >= 15:
            action = "reject"
        elif score >= 6:
            action = "add header"
        elif score >= 4:
            action = "greylist"
        else:
            action = "no action"
        uid = f"{r.getrandbits(24):06x}"
        pid = r.choice(self.rspamd_pids)
        rc = ",".join(f"<{x}>" for x in rcpts)
        pre = f"{self.host} rspamd[{pid}]: (normal) <{uid}>; "
        if r.random() < 0.3:  # rspamd logs the parsed message before the verdict at info level
            self.emit(t - 0.002, f"{pre}task; rspamd_message_parse: loaded message; id: <{msgid}>; queue-id: <{qid}>; "
                                 f"size: {size}; checksum: <{r.getrandbits(128):032x}>")
        real = r.uniform(40, 900)
        self.emit(t, f"{pre}task; rspamd_task_write_log: id: <{msgid}>, qid: <{qid}>, ip: {ip}, from: <{sender}>, "
                     f"(default: {'T' if score >= 6 else 'F'} ({action}): [{score:.2f}/15.00] [{','.join(syms)}]), "
                     f"len: {size}, time: {real:.1f}ms real, {real / r.uniform(8, 30):.1f}ms virtual, "
                     f"dns req: {r.randint(3, 60)}, digest: <{r.getrandbits(128):032x}>, rcpts: {rc}, mime_rcpts: {rc}")
        return action, score

    # ---- postfix: inbound ----------------------------------------------
    def postscreen(self, t: float, ip: str, v6: bool, port: int, outcome: str, sender: str = "",
                   rcpt: str = "", helo: str = "") -> float:
        """postscreen part of an inbound connection; returns the time of handoff/end."""
        r = self.rng
        P = self.p_ps
        cl = f"[{ip}]:{port}"
        self.emit(t, f"{P}CONNECT from {cl} to [{MX_V6 if v6 else MX_INSIDE}]:25")
        if outcome == "old":
            t += 0.002
            self.emit(t, f"{P}PASS OLD {cl}")
            return t
        if outcome == "new":
            t += 6.0 + r.random() * 0.2  # greet wait
            self.emit(t, f"{P}PASS NEW {cl}")
            return t
        if outcome == "hangup":
            t += r.uniform(0.2, 6.0)
            self.emit(t, f"{P}HANGUP after {r.uniform(0.2, 6):.2g} from {cl} in tests "
                         f"{'after' if r.random() < 0.5 else 'before'} SMTP handshake")
            self.emit(t + 0.001, f"{P}DISCONNECT {cl}")
            return t
        # dnsbl / pregreet: listed clients get the 550 once they talk
        if outcome == "pregreet" or r.random() < 0.3:
            t += r.uniform(0.05, 2.0)
            g = helo if not helo.startswith("[") else "User"
            self.emit(t, f"{P}PREGREET {len(g) + 7} after {r.uniform(0.05, 2):.2g} from {cl}: EHLO {g}\\r\\n")
        t += r.uniform(0.1, 1.0)
        self.emit(t, f"{P}DNSBL rank {r.choice((3, 3, 3, 4, 6))} for {cl}")
        t += r.uniform(1.0, 8.0)
        self.emit(t, f"{P}NOQUEUE: reject: RCPT from {cl}: 550 5.7.1 Service unavailable; client [{ip}] blocked "
                     f"using zen.spamhaus.org; from=<{sender}>, to=<{rcpt}>, proto=ESMTP, helo=<{helo}>")
        t += r.uniform(0.1, 2.0)
        self.emit(t, f"{P}DISCONNECT {cl}")
        return t

    def smtpd_connect(self, t: float, host: str, ip: str, bad_rdns: str | None, prefix: str, tls: bool) -> float:
        """smtpd connect (+ rDNS warning, TLS line); returns time after the handshake."""
        if bad_rdns:
            msg = f"warning: hostname {bad_rdns} does not resolve to address {ip}"
            self.emit(t - 0.01, prefix + (msg + ": Name or service not known" if self.rng.random() < 0.5 else msg))
        self.emit(t, f"{prefix}connect from {host}[{ip}]")
        t += self.rng.uniform(0.05, 0.4)
        if tls:
            self.emit(t, f"{prefix}Anonymous TLS connection established from {host}[{ip}]: {self.tls()}")
            t += self.rng.uniform(0.02, 0.2)
        return t

    def deliver_local(self, t: float, qid: str, rcpts: list[str], msgid: str, folder: str, start_q: float) -> float:
        """qmgr -> lmtp -> dovecot lmtp -> removed; returns the time of 'removed'."""
        r = self.rng
        lm = self.pools["lmtp"].get(t, t + 0.5)
        dpid = self.dlmtp.get(t, t + 0.5)
        pre = f"{self.host} postfix/lmtp[{lm}]: {qid}: "
        a = max(0, int((t - start_q) * 100))
        if r.random() < 0.3:
            self.emit(t + 0.005, f"{self.host} dovecot: lmtp({dpid}): Connect from local")
        for rc in rcpts:
            b, c, d = r.randint(0, 2), r.randint(0, 2), r.randint(2, 40)
            t += (b + c + d) / 100
            sess = "".join(r.choices(_B64[:62], k=22))
            if folder == "INBOX":
                self.emit(t - 0.002, f"{self.host} dovecot: lmtp({rc})<{dpid}><{sess}>: msgid=<{msgid}>: saved mail to INBOX")
            else:
                self.emit(t - 0.002, f"{self.host} dovecot: lmtp({rc})<{dpid}><{sess}>: sieve: msgid=<{msgid}>: "
                                     f"stored mail into mailbox '{folder}'")
            self.emit(t, f"{pre}to=<{rc}>, relay={self.fqdn}[private/dovecot-lmtp], delay={_fd(a + b + c + d)}, "
                         f"delays={_fd(a)}/{_fd(b)}/{_fd(c)}/{_fd(d)}, dsn=2.0.0, status=sent "
                         f"(250 2.0.0 <{rc}> {sess} Saved)")
        if r.random() < 0.3:
            self.emit(t + 0.003, f"{self.host} dovecot: lmtp({dpid}): Disconnect from local: "
                                 f"Client has quit the connection (state=READY)")
        t += 0.001
        self.emit(t, f"{self.qmgr_pre(qid)}removed")
        return t

    def qmgr_pre(self, qid: str) -> str:
        return f"{self.p_qmgr}{qid}: "

    def remember_ip(self, ip: str) -> None:
        rec = self.recent_ips
        rec.append(ip)
        if len(rec) > 50:
            del rec[:25]

    def inbound(self, t: float) -> None:
        """A legitimate sender delivers one message to local users."""
        r = self.rng
        ip, host, helo, dom, v6, mid_host, _ = r.choices(self.senders, cum_weights=self.sender_cw)[0]
        self.remember_ip(ip)
        port = r.randint(1024, 65535)
        t = self.postscreen(t, ip, v6, port, "old" if r.random() < 0.9 else "new")
        tls = r.random() < 0.86
        bad = None
        if r.random() < 0.01:
            bad, host = host, "unknown"
        nr = 1 if r.random() < 0.85 else r.randint(2, 4)
        rcpts = [self.user()[1] for _ in range(nr)]
        rcpts = list(dict.fromkeys(rcpts))  # no duplicate recipients
        local = r.choice(("noreply", "news", "info", "billing", "alerts")) if r.random() < 0.3 else \
            f"{r.choice(_FIRST)}.{r.choice(_LAST)}"
        sender = "" if r.random() < 0.02 else f"{local}@{dom}"
        size = int(r.lognormvariate(9.3, 1.1)) + 600
        spamminess = 0.0 if r.random() < 0.93 else r.uniform(0.3, 2.5)
        self.smtp_message(t, ip, host, helo, bad, tls, sender, rcpts, size,
                          self.msgid(mid_host or dom, 0 if dom == "gmail.com" else r.randint(1, 2)),
                          spamminess, v6, port)

    def smtp_message(self, t: float, ip: str, host: str, helo: str, bad: str | None, tls: bool, sender: str,
                     rcpts: list[str], size: int, msgid: str, spamminess: float, v6: bool, port: int) -> None:
        """An accepted smtpd session: queue, scan, deliver (or milter reject), disconnect."""
        r = self.rng
        t_conn = t + 0.003
        pid = self.pools["smtpd"].get(t_conn)
        pre = f"{self.host} postfix/smtpd[{pid}]: "
        t = self.smtpd_connect(t_conn, host, ip, bad, pre, tls)
        qid = self.qid()
        t += r.uniform(0.05, 0.6)
        t_q = t
        self.emit(t, f"{pre}{qid}: client={host}[{ip}]")
        cpid = self.pools["cleanup"].get(t, t + 1)
        cpre = f"{self.host} postfix/cleanup[{cpid}]: {qid}: "
        t += r.uniform(0.05, 0.5) + size / 2e6
        self.emit(t, f"{cpre}message-id=<{msgid}>")
        t += r.uniform(0.05, 0.9)
        action, _ = self.rspamd(t, msgid, qid, ip, sender, rcpts, size, spamminess)
        t += 0.003
        nr = len(rcpts)
        counts = [("ehlo", 1, 1)] + ([("starttls", 1, 1)] if tls else []) + [("mail", 1, 1), ("rcpt", nr, nr)]
        if action in ("reject", "greylist"):
            why = "5.7.1 Spam message rejected" if action == "reject" else "4.7.1 Try again later"
            self.emit(t, f"{cpre}milter-reject: END-OF-MESSAGE from {host}[{ip}]: {why}; from=<{sender}> "
                         f"to=<{rcpts[0]}> proto=ESMTP helo=<{helo}>")
            counts.append(("data", 0, 1))
        else:
            self.emit(t, f"{self.qmgr_pre(qid)}from=<{sender}>, size={size}, nrcpt={nr} (queue active)")
            self.deliver_local(t + 0.01, qid, rcpts, msgid, "INBOX" if action == "no action" else "Junk", t_q)
            counts.append(("data", 1, 1))
        counts.append(("quit", 1, 1))
        t_end = t + r.uniform(0.02, 0.3)
        self.emit(t_end, f"{pre}disconnect from {host}[{ip}] {_cmds(counts)}")
        self.pools["smtpd"].put(pid, t_end)
        if not v6 and r.random() < 0.25:
            self.asa_in(t_conn - 0.02, t_end + 0.001, ip, port, 25, size + r.randint(1500, 6000))

    # ---- postfix: spam and rejects -----------------------------------
    def spam(self, t: float) -> None:
        """A spammy client: blocked by postscreen, rejected by smtpd, by rspamd, or delivered to Junk."""
        r = self.rng
        t0 = t
        ip, host, helo, dom, v6, listed, _ = r.choices(self.spammers, cum_weights=self.spam_cw)[0]
        self.remember_ip(ip)
        port = r.randint(1024, 65535)
        sender = f"{r.choice(('promo', 'info', 'news', 'offer', 'sales', 'noreply'))}{r.randint(1, 999)}@{dom}"
        rcpt = self.user()[1]
        x = r.random()
        if listed and x < 0.8:
            t = self.postscreen(t, ip, v6, port, "pregreet" if x < 0.15 else "dnsbl", sender, rcpt, helo)
            if not v6 and r.random() < 0.2:
                self.asa_in(t0 - 0.02, t + 0.01, ip, port, 25, r.randint(300, 900))
            return
        if x < 0.12 and not listed:
            self.postscreen(t, ip, v6, port, "hangup")
            return
        t = self.postscreen(t, ip, v6, port, "old" if r.random() < 0.5 else "new")
        y = r.random()
        if y < 0.5:
            code = r.random()
            if code < 0.25:
                msg = (f"554 5.7.1 Service unavailable; Client host [{ip}] blocked using zen.spamhaus.org; "
                       f"https://www.spamhaus.org/query/ip/{ip}")
            elif code < 0.45:
                msg = f"550 5.7.23 <{rcpt}>: Recipient address rejected: Message rejected due to: SPF fail"
            elif code < 0.6:
                msg = f"504 5.5.2 <{helo}>: Helo command rejected: need fully-qualified hostname"
            elif code < 0.75:
                msg = f"450 4.1.8 <{sender}>: Sender address rejected: Domain not found"
            elif code < 0.85:
                o = f"{r.choice(_FIRST)}@{self._word()}.{r.choice(_TLDS)}"
                rcpt = o
                msg = f"554 5.7.1 <{o}>: Relay access denied"
            else:
                rcpt = f"{r.choice(_LAST)}{r.randint(1, 99)}@{OUR_DOMAINS[0]}"
                msg = f"550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown in virtual mailbox table"
            self.noqueue(t, ip, host, helo, sender, rcpt, msg, tls=r.random() < 0.4)
            return
        size = int(r.lognormvariate(8.5, 0.8)) + 400
        self.smtp_message(t, ip, host, helo, None, r.random() < 0.4, sender, [rcpt], size,
                          self.msgid(dom, 1 if r.random() < 0.5 else 2), r.uniform(1.2, 3.5), v6, port)

    def noqueue(self, t: float, ip: str, host: str, helo: str, sender: str, rcpt: str, msg: str,
                tls: bool = False, bad: str | None = None, stage: str = "RCPT") -> None:
        """smtpd session ending in a NOQUEUE reject (and a disconnect or lost connection)."""
        r = self.rng
        pid = self.pools["smtpd"].get(t)
        pre = f"{self.host} postfix/smtpd[{pid}]: "
        t = self.smtpd_connect(t, host, ip, bad, pre, tls) + r.uniform(0.1, 1.0)
        if stage == "MAIL":
            self.emit(t, f"{pre}NOQUEUE: reject: MAIL from {host}[{ip}]: {msg}; proto=ESMTP helo=<{helo}>")
            counts = [("ehlo", 1, 1), ("mail", 0, 1)]
        else:
            self.emit(t, f"{pre}NOQUEUE: reject: RCPT from {host}[{ip}]: {msg}; from=<{sender}> to=<{rcpt}> "
                         f"proto=ESMTP helo=<{helo}>")
            counts = [("ehlo", 1, 1)] + ([("starttls", 1, 1)] if tls else []) + [("mail", 1, 1), ("rcpt", 0, 1)]
        t += r.uniform(0.05, 2.0)
        if r.random() < 0.3:
            self.emit(t, f"{pre}lost connection after {'DATA' if r.random() < 0.5 else 'RCPT'} from {host}[{ip}]")
            counts.append(("data", 0, 1))
        else:
            if r.random() < 0.5:
                counts.append(("data", 0, 1))
            counts += [("rset", 1, 1), ("quit", 1, 1)]
        self.emit(t + 0.001, f"{pre}disconnect from {host}[{ip}] {_cmds(counts)}")
        self.pools["smtpd"].put(pid, t + 0.001)

    def misc_reject(self, t: float) -> None:
        """Odd clients: greylisting, unknown users, missing rDNS, full disk moments."""
        r = self.rng
        ip, host, helo, dom, v6, _, _ = r.choice(self.misc)
        self.remember_ip(ip)
        t = self.postscreen(t, ip, v6, r.randint(1024, 65535), "old" if r.random() < 0.7 else "new")
        sender = f"{r.choice(_FIRST)}@{dom}"
        rcpt = self.user()[1]
        x = r.random()
        bad = None
        stage = "RCPT"
        if host == "unknown" and x < 0.4:
            if r.random() < 0.3:
                bad = f"{self._word()}.{dom}"
            msg = f"450 4.7.1 Client host rejected: cannot find your hostname, [{ip}]"
        elif x < 0.6:
            msg = (f"450 4.2.0 <{rcpt}>: Recipient address rejected: Greylisted, see "
                   f"http://postgrey.schweikert.ch/help/{rcpt.split('@')[1]}.html")
        elif x < 0.8:
            rcpt = f"{r.choice(_FIRST)}{r.choice(('', '.x', '2', '.old'))}@{r.choice(OUR_DOMAINS)}"
            msg = f"550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown in virtual mailbox table"
        elif x < 0.9:
            msg = f"504 5.5.2 <{helo}>: Helo command rejected: need fully-qualified hostname"
        elif x < 0.97:
            msg = f"450 4.1.8 <{sender}>: Sender address rejected: Domain not found"
        else:
            msg, stage = "452 4.3.1 Insufficient system storage", "MAIL"
        self.noqueue(t + 0.003, ip, host, helo, sender, rcpt, msg, tls=r.random() < 0.5, bad=bad, stage=stage)

    def pf_noise(self, t: float) -> None:
        """Postfix lines outside message lifecycles: lost connections, warnings."""
        r = self.rng
        ip, host, *_ = r.choice(self.misc) if r.random() < 0.7 else r.choice(self.spammers)
        pid = self.pools["smtpd"].get(t)
        pre = f"{self.host} postfix/smtpd[{pid}]: "
        x = r.random()
        self.emit(t, f"{pre}connect from {host}[{ip}]")
        t += r.uniform(0.1, 3)
        if x < 0.45:
            stage = r.choice(("CONNECT", "EHLO", "EHLO", "STARTTLS", "AUTH"))
            self.emit(t, f"{pre}lost connection after {stage} from {host}[{ip}]")
            counts = {"CONNECT": [], "EHLO": [("ehlo", 1, 1)], "STARTTLS": [("ehlo", 1, 1), ("starttls", 1, 1)],
                      "AUTH": [("ehlo", 1, 1), ("auth", 0, 1)]}[stage]
        elif x < 0.6:
            self.emit(t, f"{pre}warning: non-SMTP command from {host}[{ip}]: "
                         f"{r.choice(('GET / HTTP/1.1', 'CONNECT 1.1.1.1:443 HTTP/1.1', 'User-Agent: Go-http-client/1.1'))}")
            counts = [("unknown", 0, 1)]
        elif x < 0.75:
            self.emit(t, f"{pre}SSL_accept error from {host}[{ip}]: -1")
            self.emit(t, f"{pre}warning: TLS library problem: error:0A000126:SSL routines::unexpected eof while "
                         f"reading:../ssl/record/rec_layer_s3.c:317:")
            self.emit(t + 0.001, f"{pre}lost connection after STARTTLS from {host}[{ip}]")
            counts = [("ehlo", 1, 1), ("starttls", 0, 1)]
        elif x < 0.85:
            self.emit(t, f"{pre}improper command pipelining after CONNECT from {host}[{ip}]: EHLO {self._word()}\\r\\n")
            counts = [("ehlo", 1, 1), ("quit", 1, 1)]
        elif x < 0.95:
            self.emit(t, f"{pre}timeout after {r.choice(('EHLO', 'RCPT', 'DATA', 'END-OF-MESSAGE'))} from {host}[{ip}]")
            counts = [("ehlo", 1, 1), ("mail", 1, 1)]
        else:
            self.emit(t, f"{self.p_ps}warning: dnsblog reply timeout 10s for zen.spamhaus.org")
            counts = [("ehlo", 1, 1), ("quit", 1, 1)]
        self.emit(t + 0.001, f"{pre}disconnect from {host}[{ip}] {_cmds(counts)}")
        self.pools["smtpd"].put(pid, t + 0.001)

    # ---- postfix: outbound -------------------------------------------
    def outbound(self, t: float) -> None:
        """A local user submits mail for remote recipients (sent, deferred+retried, or bounced)."""
        r = self.rng
        ui, user = self.user()
        home, phone_net, office = self.user_ips[ui]
        ip = r.choice((home, office, office, f"{phone_net}.{r.randint(0, 255)}.{r.randint(1, 254)}"))
        host = "unknown" if r.random() < 0.3 else f"{ip.replace('.', '-').replace(':', '-')}.client.{self._word()}-isp.net"
        pid = self.pools["submission"].get(t)
        pre = f"{self.host} postfix/submission/smtpd[{pid}]: "
        t = self.smtpd_connect(t, host, ip, None, pre, True)
        nr = 1 if r.random() < 0.75 else r.randint(2, 3)
        rcpts = []
        for _ in range(nr):
            d = r.choice(self.remote_doms)
            rcpts.append((f"{r.choice(_FIRST)}.{r.choice(_LAST)}@{d}", d))
        qid = self.qid()
        t += r.uniform(0.2, 1.0)
        t_q = t
        self.emit(t, f"{pre}{qid}: client={host}[{ip}], sasl_method={r.choice(('PLAIN', 'PLAIN', 'LOGIN'))}, "
                     f"sasl_username={user}")
        cpid = self.pools["cleanup"].get(t, t + 1)
        msgid = self.msgid(user.split("@")[1], 1)
        size = int(r.lognormvariate(9.0, 1.3)) + 800
        t += r.uniform(0.1, 0.6) + size / 2e6
        self.emit(t, f"{self.host} postfix/cleanup[{cpid}]: {qid}: message-id=<{msgid}>")
        t += r.uniform(0.05, 0.5)
        self.rspamd(t, msgid, qid, ip, user, [x[0] for x in rcpts], size, 0.0)
        t += 0.005
        self.emit(t, f"{self.qmgr_pre(qid)}from=<{user}>, size={size}, nrcpt={nr} (queue active)")
        t_end = t + r.uniform(0.05, 0.3)
        self.emit(t_end, f"{pre}disconnect from {host}[{ip}] " + _cmds(
            [("ehlo", 2, 2), ("starttls", 1, 1), ("auth", 1, 1), ("mail", 1, 1), ("rcpt", nr, nr),
             ("data", 1, 1), ("quit", 1, 1)]))
        self.pools["submission"].put(pid, t_end)
        pending = False
        bounces = []
        for rc, d in rcpts:
            t, outcome = self.smtp_delivery(t, qid, rc, d, size, t_q, retry=False)
            if outcome == "deferred":
                pending = True
                self.smtp_retry(t + r.uniform(300, 1800), qid, rc, d, size, t_q, user)
            elif outcome == "bounced":
                bounces.append(rc)
        if bounces:
            t = self.bounce(t + 0.01, qid, user, size)
        if not pending:
            self.emit(t + 0.002, f"{self.qmgr_pre(qid)}removed")

    def smtp_delivery(self, t: float, qid: str, rc: str, dom: str, size: int, t_q: float,
                      retry: bool) -> tuple[float, str]:
        """One postfix/smtp attempt; returns (time, 'sent'|'deferred'|'bounced')."""
        r = self.rng
        mx, mip = self.remote_mx[dom]
        spid = self.pools["smtp"].get(t, t + 2)
        pre = f"{self.host} postfix/smtp[{spid}]: "
        a = max(0, int((t - t_q) * 100))
        b = r.randint(0, 3)
        x = r.random()
        lport = r.randint(32768, 60999)
        if x < 0.03 and not retry:  # remote MX unreachable
            c = 3000
            t += 30 + b / 100
            self.emit(t, f"{pre}connect to {mx}[{mip}]:25: Connection timed out")
            self.emit(t + 0.001, f"{pre}{qid}: to=<{rc}>, relay=none, delay={_fd(a + b + c)}, "
                                 f"delays={_fd(a)}/{_fd(b)}/{_fd(c)}/0, dsn=4.4.1, status=deferred "
                                 f"(connect to {mx}[{mip}]:25: Connection timed out)")
            return t + 0.001, "deferred"
        c, d = r.randint(5, 80), r.randint(10, 120) + size // 20000
        t += (b + c) / 100
        if r.random() < 0.9:
            kind = "Trusted" if r.random() < 0.75 else r.choice(("Verified", "Untrusted"))
            self.emit(t, f"{pre}{kind} TLS connection established to {mx}[{mip}]:25: {self.tls()}")
        if r.random() < 0.3:
            nat = f"inside:{MX_INSIDE}/{lport} to outside:{MX_OUTSIDE}/{lport}"
            self.emit(t - 0.05, f"{FW_HOST} : %ASA-6-305011: Built dynamic TCP translation from {nat}")
            self.emit(t + 60, f"{FW_HOST} : %ASA-6-305012: Teardown dynamic TCP translation from {nat} "
                              f"duration 0:01:0{r.randint(0, 9)}")
        t += d / 100
        common = f"{pre}{qid}: to=<{rc}>, relay={mx}[{mip}]:25, delay={_fd(a + b + c + d)}, " \
                 f"delays={_fd(a)}/{_fd(b)}/{_fd(c)}/{_fd(d)}, "
        if x < 0.07 and not retry:
            self.emit(t, common + f"dsn=4.7.1, status=deferred (host {mx}[{mip}] said: 450 4.7.1 <{rc}>: Recipient "
                                  f"address rejected: greylisted, try again later (in reply to RCPT TO command))")
            return t, "deferred"
        if x < 0.1 and not retry:
            self.emit(t, common + f"dsn=5.1.1, status=bounced (host {mx}[{mip}] said: 550 5.1.1 <{rc}>: Recipient "
                                  f"address rejected: User unknown in virtual mailbox table (in reply to RCPT TO command))")
            return t, "bounced"
        self.emit(t, common + f"dsn=2.0.0, status=sent (250 2.0.0 OK  {r.randint(1700000000, 1760000000)} "
                              f"{''.join(r.choices(_B64[:62], k=12))} - queued as {r.getrandbits(40):010X})")
        return t, "sent"

    def smtp_retry(self, t: float, qid: str, rc: str, dom: str, size: int, t_q: float, sender: str) -> None:
        """Deferred queue retry: qmgr reactivates the message, usually delivered now."""
        self.emit(t, f"{self.qmgr_pre(qid)}from=<{sender}>, size={size}, nrcpt=1 (queue active)")
        t, _ = self.smtp_delivery(t + 0.01, qid, rc, dom, size, t_q, retry=True)
        self.emit(t + 0.002, f"{self.qmgr_pre(qid)}removed")

    def bounce(self, t: float, qid: str, sender: str, size: int) -> float:
        """Non-delivery notification: a new queue entry delivered back to the local sender."""
        q2 = self.qid()
        cpid = self.pools["cleanup"].get(t, t + 1)
        bpid = self.pools["bounce"].get(t, t + 1)
        mid = f"{self.header(int(t)).replace(' ', '').replace(':', '')}.{q2}@{self.fqdn}"
        self.emit(t, f"{self.host} postfix/cleanup[{cpid}]: {q2}: message-id=<{mid}>")
        self.emit(t + 0.001, f"{self.host} postfix/bounce[{bpid}]: {qid}: sender non-delivery notification: {q2}")
        self.emit(t + 0.002, f"{self.qmgr_pre(q2)}from=<>, size={size + 2500}, nrcpt=1 (queue active)")
        self.deliver_local(t + 0.01, q2, [sender], mid, "INBOX", t)
        return t + 0.05

    def pickup(self, t: float) -> None:
        """Local mail (cron, logwatch) through pickup to the postmaster."""
        r = self.rng
        qid = self.qid()
        uid, who = r.choice(((0, "root"), (0, "root"), (33, "www-data"), (1000, "backup")))
        self.emit(t, f"{self.p_pickup}{qid}: uid={uid} from=<{who}>")
        cpid = self.pools["cleanup"].get(t, t + 1)
        mid = f"{r.getrandbits(48):012x}.{qid}@{self.fqdn}"
        self.emit(t + 0.01, f"{self.host} postfix/cleanup[{cpid}]: {qid}: message-id=<{mid}>")
        size = r.randint(600, 40000)
        self.emit(t + 0.02, f"{self.qmgr_pre(qid)}from=<{who}@{self.fqdn}>, size={size}, nrcpt=1 (queue active)")
        self.deliver_local(t + 0.05, qid, [f"postmaster@{OUR_DOMAINS[0]}"], mid, "INBOX", t)

    def burst(self, t: float) -> None:
        """Password guessing from one attacker: SASL on submission, or IMAP logins."""
        r = self.rng
        ip = r.choice(self.attackers)
        n = int(r.paretovariate(1.2) * 15)
        gap = r.uniform(1.5, 25)
        imap = r.random() < 0.35
        for _ in range(min(n, 400)):
            t += r.expovariate(1 / gap)
            if imap:
                self.imap_fail(t, ip, r.choice(_ATTACK_USERS) if r.random() < 0.7 else self.user()[1])
                continue
            svc = "submission" if r.random() < 0.8 else "smtpd"
            pid = self.pools[svc].get(t)
            pre = f"{self.host} postfix/{'submission/' if svc == 'submission' else ''}smtpd[{pid}]: "
            self.emit(t, f"{pre}connect from unknown[{ip}]")
            t2 = t + r.uniform(0.5, 2.5)
            self.emit(t2, f"{pre}warning: unknown[{ip}]: SASL LOGIN authentication failed: authentication failure")
            self.emit(t2 + 0.1, f"{pre}lost connection after AUTH from unknown[{ip}]")
            self.emit(t2 + 0.101, f"{pre}disconnect from unknown[{ip}] " +
                      _cmds([("ehlo", 1, 1)] + ([("starttls", 1, 1)] if svc == "submission" else []) + [("auth", 0, 1)]))
            self.pools[svc].put(pid, t2 + 0.101)

    # ---- dovecot -------------------------------------------------------
    def imap(self, t: float, pop3: bool = False) -> None:
        """A user's IMAP (or POP3) session: login now, logout later."""
        r = self.rng
        ui, user = self.user()
        home, phone_net, office = self.user_ips[ui]
        x = r.random()
        mpid = self.new_pid()
        sess = self.sess()
        if x < 0.15 and not pop3:  # webmail on the same box
            rip = lip = "127.0.0.1"
            sec = "secured"
        else:
            rip = home if x < 0.55 else office if x < 0.8 else f"{phone_net}.{r.randint(0, 255)}.{r.randint(1, 254)}"
            lip = MX_V6 if ":" in rip else MX_INSIDE
            sec = "TLS" if r.random() < 0.98 else ""
        svc = "pop3" if pop3 else "imap"
        tls_part = f" {sec}," if sec else ""
        self.emit(t, f"{self.host} dovecot: {svc}-login: Login: user=<{user}>, method=PLAIN, rip={rip}, lip={lip}, "
                     f"mpid={mpid},{tls_part} session=<{sess}>")
        if pop3:
            dur = r.uniform(0.2, 5)
            n = r.randint(0, 5)
            sz = sum(r.randint(1500, 90000) for _ in range(n))
            self.emit(t + dur, f"{self.host} dovecot: pop3({user})<{mpid}><{sess}>: Disconnected: Logged out "
                               f"top=0/0, retr={n}/{sz}, del={n}/{n + r.randint(0, 3)}, size={sz}")
        else:
            dur = r.expovariate(1 / 900) if rip != "127.0.0.1" else r.uniform(1, 60)
            ins, out = r.randint(50, 5000), int(r.lognormvariate(8, 2))
            dl = r.randint(0, 3) if r.random() < 0.2 else 0
            counters = (f"in={ins} out={out} deleted={dl} expunged={dl} trashed={dl if r.random() < 0.5 else 0} "
                        f"hdr_count={r.randint(0, 40)} hdr_bytes={r.randint(0, 40000)} body_count={r.randint(0, 10)} "
                        f"body_bytes={r.randint(0, 400000)}")
            if r.random() < 0.75:
                what = "Logged out"
            else:
                what = (f"Disconnected: Connection closed (IDLE running for {r.uniform(0, 1):.3f} + waiting input for "
                        f"{dur * r.uniform(0.3, 1):.3f} secs, 2 B in + 10 B out, state=wait-input)")
            self.emit(t + dur, f"{self.host} dovecot: imap({user})<{mpid}><{sess}>: {what} {counters}")
        if sec == "TLS" and r.random() < 0.3:
            self.asa_in(t - 0.03, t + dur + 0.01, rip, r.randint(1024, 65535), 995 if pop3 else 993,
                        r.randint(4000, 900000))

    def imap_fail(self, t: float, ip: str, user: str) -> None:
        r = self.rng
        sess = self.sess()
        lip = MX_V6 if ":" in ip else MX_INSIDE
        x = r.random()
        if "@" in user and user.split("@")[1] in OUR_DOMAINS:
            self.emit(t, f"{self.host} dovecot: auth: passwd-file({user},{ip},<{sess}>): Password mismatch")
        elif x < 0.5:
            self.emit(t, f"{self.host} dovecot: auth: passwd-file({user},{ip}): unknown user")
        else:
            self.emit(t, f"{self.host} dovecot: auth: passwd-file({user},{ip},<{sess}>): unknown user")
        svc = "imap" if r.random() < 0.85 else "pop3"
        self.emit(t + r.uniform(0.5, 2.5), f"{self.host} dovecot: {svc}-login: Disconnected (auth failed, 1 attempts "
                  f"in {r.randint(2, 6)} secs): user=<{user}>, method=PLAIN, rip={ip}, lip={lip}, TLS, session=<{sess}>")

    def dovecot_fail(self, t: float) -> None:
        """Scanners poking IMAP: no auth, or a single failed guess."""
        r = self.rng
        ip = r.choice(self.scanners)
        if r.random() < 0.5:
            self.emit(t, f"{self.host} dovecot: imap-login: Disconnected (no auth attempts in {r.randint(0, 10)} secs): "
                         f"user=<>, rip={ip}, lip={MX_INSIDE}, TLS, session=<{self.sess()}>")
        else:
            self.imap_fail(t, ip, r.choice(_ATTACK_USERS))

    def user_fail(self, t: float) -> None:
        """A real user typing the wrong password (phone after a password change)."""
        ui, user = self.user()
        self.imap_fail(t, self.user_ips[ui][0], user)

    # ---- Cisco ASA -----------------------------------------------------
    def asa(self, t: float) -> None:
        """Firewall background: ACL denies, DNS, stray packets, threat detection."""
        r = self.rng
        x = r.random()
        F = f"{FW_HOST} : %ASA-"
        if x < 0.45:
            ip = r.choice(self.scanners) if r.random() < 0.7 else self._ip4()
            dst = f"10.0.0.{r.choice((25, 25, 10, 11, 80))}"
            if r.random() < 0.85:
                proto = "tcp" if r.random() < 0.85 else "udp"
                port = r.choice((22, 23, 80, 443, 445, 1433, 3306, 3389, 5900, 8080, 8443, 25, 465, 2222, 6379, 161))
                self.emit(t, f"{F}4-106023: Deny {proto} src outside:{ip}/{r.randint(1024, 65535)} dst inside:{dst}/{port} "
                             f'by access-group "outside_in" [0x0, 0x0]')
            else:
                self.emit(t, f"{F}4-106023: Deny icmp src outside:{ip} dst inside:{dst} (type 8, code 0) "
                             f'by access-group "outside_in" [0x0, 0x0]')
        elif x < 0.8:  # the mail server's DNS lookups: UDP translation + connection
            res = r.choice(self.resolvers)
            lport = r.randint(32768, 60999)
            c = self.asa_conn()
            nat = f"inside:{MX_INSIDE}/{lport} to outside:{MX_OUTSIDE}/{lport}"
            self.emit(t, f"{F}6-305011: Built dynamic UDP translation from {nat}")
            self.emit(t + 0.001, f"{F}6-302015: Built outbound UDP connection {c} for outside:{res}/53 ({res}/53) "
                                 f"to inside:{MX_INSIDE}/{lport} ({MX_OUTSIDE}/{lport})")
            self.emit(t + 0.05, f"{F}6-302016: Teardown UDP connection {c} for outside:{res}/53 to inside:{MX_INSIDE}/{lport} "
                                f"duration 0:00:00 bytes {r.randint(60, 600)}")
            self.emit(t + 30.05, f"{F}6-305012: Teardown dynamic UDP translation from {nat} duration 0:00:30")
        elif x < 0.93:
            ip = r.choice(self.senders)[0] if r.random() < 0.5 else r.choice(self.misc)[0]
            if ":" in ip:
                ip = r.choice(self.misc)[0]
            flags = r.choice(("RST", "FIN ACK", "RST ACK", "ACK", "PSH ACK"))
            self.emit(t, f"{F}6-106015: Deny TCP (no connection) from {ip}/{r.randint(1024, 65535)} to "
                         f"{MX_INSIDE}/{r.choice((25, 25, 993, 587))} flags {flags}  on interface outside")
        elif x < 0.98:
            ip = self._ip4()
            self.emit(t, f"{F}4-313005: No matching connection for ICMP error message: icmp src outside:{ip} dst "
                         f"inside:{MX_INSIDE} (type 3, code 3) on outside interface.  Original IP payload: udp src "
                         f"{MX_INSIDE}/{r.randint(32768, 60999)} dst {ip}/53.")
        else:
            burst, avg = r.randint(10, 80), r.randint(5, 30)
            self.emit(t, f"{F}4-733100: [ Scanning] drop rate-1 exceeded. Current burst rate is {burst} per second, "
                         f"max configured rate is 10; Current average rate is {avg} per second, max configured rate "
                         f"is 5; Cumulative total count is {r.randint(3000, 90000)}")

    def asa_rare(self, t: float) -> None:
        """Failover hiccups and admin commands."""
        r = self.rng
        if r.random() < 0.4:
            self.emit(t, f"{FW_HOST} : %ASA-1-105005: (Primary) Lost Failover communications with mate on interface "
                         f"{r.choice(('inside', 'failover', 'outside'))}")
        else:
            for cmd in r.choice((("write memory",), ("configure terminal", "access-list outside_in line 1 extended "
                                 "permit tcp any host 10.0.0.25 eq smtp", "write memory"), ("show running-config",))):
                self.emit(t, f"{FW_HOST} : %ASA-5-111008: User '{r.choice(('admin', 'netops'))}' executed the '{cmd}' command.")
                t += r.uniform(1, 20)

    def anvil(self, t: float) -> None:
        """anvil's 10-minute statistics (connection rate/count, cache size)."""
        r = self.rng
        pre = f"{self.host} postfix/anvil[{self.anvil_pid}]: statistics: "
        ips = self.recent_ips or ["127.0.0.1"]
        when = self.header(int(t - r.uniform(1, 590)))
        self.emit(t, f"{pre}max connection rate {r.randint(1, 12)}/60s for (smtp:{r.choice(ips)}) at {when}")
        self.emit(t, f"{pre}max connection count {r.randint(1, 4)} for (smtp:{r.choice(ips)}) at {when}")
        if r.random() < 0.3:
            self.emit(t, f"{pre}max auth rate {r.randint(1, 6)}/60s for (submission:{r.choice(ips)}) at {when}")
        self.emit(t, f"{pre}max cache size {r.randint(2, 40)} at {when}")
        if r.random() < 0.1:  # anvil exits when idle; the next one has a new pid
            self.anvil_pid = self.new_pid()


def _open(target) -> tuple[IO, bool, bool]:
    """(file, is_text, we_opened_it) for a path or an open file object."""
    if isinstance(target, (str, Path)):
        p = Path(target)
        raw = open(p, "wb")
        if p.name.endswith(".gz"):
            # no name and mtime 0 in the gzip header: same seed, same bytes
            return gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6), False, True
        return raw, False, True
    mode = getattr(target, "mode", None)
    text = isinstance(target, io.TextIOBase) or (isinstance(mode, str) and "b" not in mode)
    return target, text, False


def generate(path_or_file, lines: int = 1_000_000, seed: int = 42, start: datetime | None = None,
             hostname: str = "mx1") -> int:
    """Write exactly ``lines`` maillog lines to a path (``.gz`` compressed) or file object; return the count."""
    start = (start or _DEFAULT_START).replace(tzinfo=None)
    sim = _Sim(seed, start, hostname)
    rng = sim.rng
    heap = sim.heap
    pop = heapq.heappop
    handlers = {name: getattr(sim, name, None) for name, _ in _MACHINE + _HUMAN}
    handlers["pop3"] = lambda t: sim.imap(t, pop3=True)
    m_names = [n for n, _ in _MACHINE]
    m_cw = list(itertools.accumulate(w for _, w in _MACHINE))
    h_names = [n for n, _ in _HUMAN]
    h_cw = list(itertools.accumulate(w for _, w in _HUMAN))
    m_rate, h_rate = m_cw[-1], h_cw[-1]
    f, text, owned = _open(path_or_file)
    write = f.write
    out: list[str] = []
    n = 0
    now = sim.t0
    next_anvil = (int(now) // 600 + 1) * 600
    last_sec = -1
    last_t = now
    hdr = ""
    try:
        while n < lines:
            # Next arrival: flat machine traffic plus day-curved human traffic.
            hour = int(now) // 3600 % 24
            rate_h = h_rate * _DAY_CURVE[hour]
            now += rng.expovariate(m_rate + rate_h)
            # Emit every pending line up to now (new lines are never earlier than now).
            while heap and heap[0][0] <= now:
                t, _, body = pop(heap)
                # Safety net: a scenario may log a little before its arrival time.
                if t < last_t:
                    t = last_t
                last_t = t
                sec = int(t)
                if sec != last_sec:
                    last_sec = sec
                    hdr = sim.header(sec)
                out.append(f"{hdr} {body}")
                n += 1
                if n >= lines:
                    break
                if len(out) >= 20000:
                    s = "\n".join(out) + "\n"
                    write(s if text else s.encode())
                    out.clear()
            if n >= lines:
                break
            if now >= next_anvil:
                sim.anvil(next_anvil + rng.uniform(0, 0.5))
                next_anvil += 600
            if rng.random() * (m_rate + rate_h) < m_rate:
                name = rng.choices(m_names, cum_weights=m_cw)[0]
            else:
                name = rng.choices(h_names, cum_weights=h_cw)[0]
            # Scenarios may log up to ~0.05 s before their start (ASA sees the SYN
            # first, rDNS warnings precede "connect"), so start them a bit later.
            handlers[name](now + 0.05)
        if out:
            s = "\n".join(out) + "\n"
            write(s if text else s.encode())
        f.flush()
    finally:
        if owned:
            if isinstance(f, gzip.GzipFile):
                raw = f.fileobj
                f.close()
                raw.close()
            else:
                f.close()
    return n


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m logscope.generate -n 1000 -o x.log``."""
    ap = argparse.ArgumentParser(prog="python -m logscope.generate",
                                 description="Write a seeded, realistic mixed mail-server syslog "
                                             "(postfix, dovecot, rspamd, Cisco ASA).")
    ap.add_argument("-n", "--lines", type=int, default=1_000_000, help="number of lines (default 1000000)")
    ap.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    ap.add_argument("--start", type=datetime.fromisoformat, default=None,
                    help="first timestamp, e.g. 2025-03-01T00:00:00 (the default)")
    ap.add_argument("--hostname", default="mx1", help="mail server host name (default mx1)")
    ap.add_argument("-o", "--output", default="-", help="output file, .gz compresses; default - (stdout)")
    args = ap.parse_args(argv)
    if args.lines < 0:
        ap.error("--lines must be >= 0")
    try:
        if args.output == "-":
            generate(sys.stdout.buffer, args.lines, args.seed, args.start, args.hostname)
        else:
            generate(args.output, args.lines, args.seed, args.start, args.hostname)
    except BrokenPipeError:
        # e.g. `| head`: not an error; keep Python from complaining at exit
        import os
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
