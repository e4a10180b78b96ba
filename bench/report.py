#!/usr/bin/env python3
"""Turns run.sh's raw figures into bench/results.md and the chart's data.

    report.py RAW.tsv OUT.md CHART.dat
    report.py --merge NEW.tsv OLD.tsv MERGED.tsv

RAW (bench/results-raw.tsv) holds one block per run: a "# ..." line, the
run's settings as lines "#<TAB>key<TAB>value", then one figure per line:
scenario, target, metric, value (one line per run).  Every figure in the
table is the median over runs; overheads are medians of per-run
differences (proxy minus direct, measured back to back in the same run).

--merge writes NEW (one run's block) after the blocks of OLD, each kept
with only its figures of the scenarios NEW did not run: a run of some
scenarios keeps the others' figures, with the settings of the run that
made them.  Missing OLD is an empty one.
"""

import re
import statistics
import sys
from collections import defaultdict


def owner(scen):
    """The scenario a figure line belongs to: "1s" is 1's, "4f" 4's;
    scenario 0 (figures scen_local takes after 1 and 2) is "0"."""
    m = re.match(r"\d+", scen)
    return m.group(0) if m else scen


def read_blocks(path):
    """[(header, [(key, value)], [figure lines])], in the file's order."""
    blocks = []
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            parts = line.split("\t")
            if line.startswith("# ") or not blocks and parts[0] == "#":
                blocks.append((line if line.startswith("# ") else
                               "# ollama-pool bench/run.sh raw figures",
                               [], []))
                if line.startswith("# "):
                    continue
            if parts[0] == "#":
                if len(parts) >= 3:
                    blocks[-1][1].append((parts[1], parts[2]))
            elif line and blocks:
                blocks[-1][2].append(line)
            elif line:
                blocks.append(("# ollama-pool bench/run.sh raw figures",
                               [], [line]))
    return blocks


def block_scenarios(b):
    """The scenarios a block's run made: its "scenarios" setting, else
    those of its figures (0 with 1 and 2)."""
    meta = dict(b[1])
    if "scenarios" in meta:
        sc = set(meta["scenarios"].split())
    else:
        sc = {owner(l.split("\t")[0]) for l in b[2]}
    if sc & {"1", "2"}:
        sc.add("0")
    return sc


if sys.argv[1:2] == ["--merge"]:
    new_path, old_path, merged_path = sys.argv[2:5]
    new = read_blocks(new_path)
    ran = set().union(*(block_scenarios(b) for b in new)) if new else set()
    try:
        old = read_blocks(old_path)
    except FileNotFoundError:
        old = []
    with open(merged_path, "w") as f:
        for head, kv, figs in old:
            figs = [l for l in figs if owner(l.split("\t")[0]) not in ran]
            if not figs:
                continue
            keep = sorted({owner(l.split("\t")[0]) for l in figs} - {"0"},
                          key=int)
            f.write(head + "\n")
            for k, v in kv:
                if k != "scenarios":
                    f.write("#\t{}\t{}\n".format(k, v))
            f.write("#\tscenarios\t{}\n".format(" ".join(keep)))
            for l in figs:
                f.write(l + "\n")
        for head, kv, figs in new:
            f.write(head + "\n")
            for k, v in kv:
                f.write("#\t{}\t{}\n".format(k, v))
            for l in figs:
                f.write(l + "\n")
    sys.exit(0)

raw_path, md_path, dat_path = sys.argv[1:4]

raw = defaultdict(list)
blocks = read_blocks(raw_path)
run_of = {}  # scenario -> the settings of the run that made its figures
for b in blocks:
    d = dict(b[1])
    for sc in block_scenarios(b):
        run_of.setdefault(sc, d)
    for line in b[2]:
        parts = line.split("\t")
        if len(parts) != 4 or parts[3] in ("", "nan"):
            continue
        try:
            raw[(parts[0], parts[1], parts[2])].append(float(parts[3]))
        except ValueError:
            pass
# The settings in the heading: those of the run of scenarios 1 to 7 (of
# the first of them found), else the first run's.
meta = next((run_of[s] for s in "1234567" if s in run_of),
            dict(blocks[0][1]) if blocks else {})
meta8 = run_of.get("8", run_of.get("9", {}))
meta10 = run_of.get("10", {})

TARGETS = ["pool", "nginx", "haproxy"]
NAMES = {"direct": "direct", "pool": "ollama-pool", "nginx": "nginx",
         "haproxy": "HAProxy"}


def med(s, t, m):
    v = raw.get((s, t, m))
    return statistics.median(v) if v else None


def diff(s, t, m, base="direct"):
    """Median of per-run differences t - base (runs paired in order)."""
    a, b = raw.get((s, t, m)), raw.get((s, base, m))
    if not a or not b:
        return None
    n = min(len(a), len(b))
    return statistics.median(a[i] - b[i] for i in range(n))


def fmt(v, nd=0, unit=""):
    if v is None:
        return "—"
    if nd == 0:
        return "{:,.0f}{}".format(v, unit)
    return "{:,.{}f}{}".format(v, nd, unit)


def pratio(s, a, b, m):
    """Median of per-run ratios a/b (runs paired in order): the ratio of
    two figures measured back to back, so machine drift between runs
    cancels."""
    x, y = raw.get((s, a, m)), raw.get((s, b, m))
    if not x or not y:
        return None
    n = min(len(x), len(y))
    v = [x[i] / y[i] for i in range(n) if y[i] != 0]
    return statistics.median(v) if v else None


def sfmt(v):
    """A signed overhead: +38, -12 (a negative one is noise)."""
    if v is None:
        return "—"
    return "{}{:,.0f}".format("+" if v >= 0 else "−", abs(v))


def ratio(a, b, nd=2):
    if a is None or b is None or b == 0:
        return None
    return a / b


def parse_size(v):
    mult = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}.get(v[-1:].lower())
    return int(v[:-1]) * mult if mult else int(v)


def verdict(ok):
    if ok is None:
        return "not measured"
    return "**met**" if ok else "**not met**"


rows = []   # (scenario, direct, pool, nginx, haproxy, ratios, target, met)
chart = []  # (label, pool, nginx, haproxy) relative to direct, higher better

def per_run(s, t, f, *metrics):
    """Median over runs of f(values of one run), runs paired in order."""
    cols = [raw.get((s, t, m)) for m in metrics]
    if not all(cols):
        return None
    n = min(len(c) for c in cols)
    v = [f(*(c[i] for c in cols)) for i in range(n)]
    v = [x for x in v if x is not None]
    return statistics.median(v) if v else None


# 1. throughput
d, p, n, h = (med("1", t, "rps") for t in ["direct"] + TARGETS)
if p is not None:
    rph, rpn = pratio("1", "pool", "haproxy", "rps"), \
        pratio("1", "pool", "nginx", "rps")
    rows.append((
        "1. keep-alive throughput, `/api/version`, 50 connections (req/s)",
        fmt(d), fmt(p), fmt(n), fmt(h),
        "pool/nginx **{}**, pool/HAProxy **{}**".format(fmt(rpn, 2),
                                                        fmt(rph, 2)),
        "pool ≥ 0.85 × nginx",
        verdict(rpn is not None and rpn >= 0.85)))
    chart.append(("1 throughput", *(pratio("1", t, "direct", "rps")
                                    for t in TARGETS)))

# 1. the bare libcurl multi client: the ceiling of a proxy built on libcurl
for k in meta.get("curl_inflight", "20 50").split():
    c = med("1", "curl" + k, "rps")
    if c is None:
        continue
    rows.append((
        "1. bare libcurl multi client, {} transfers in flight on one multi "
        "handle, straight at the stand-in (req/s; no proxy)".format(k),
        fmt(c), "", "", "",
        "pool/libcurl **{}**, nginx/libcurl {}, HAProxy/libcurl {}".format(
            *(fmt(pratio("1", t, "curl" + k, "rps"), 2) for t in TARGETS)),
        "report: the ceiling of any libcurl proxy", ""))

# 1. upstream connections opened during the throughput runs
p = med("1", "pool", "upstream_opened")
if p is not None:
    d, n, h = (med("1", t, "upstream_opened")
               for t in ("direct", "nginx", "haproxy"))
    po = raw.get(("1", "pool", "pool_opened"), [])
    pmax = max(po) if po else None
    rows.append((
        "1. upstream connections opened during one throughput run (median; "
        "accepts the stand-in counted)",
        fmt(d) + " (wrk's own)", "{} (its metric: {})".format(
            fmt(p), fmt(med("1", "pool", "pool_opened"))), fmt(n), fmt(h),
        "pool's `upstream_connections_opened_total` at most {} in a run, "
        "after a warm-up that fills the pools".format(fmt(pmax)),
        "no connection opened once the pool is full",
        verdict(None if pmax is None else pmax == 0)))

# 1. system calls per request (strace -c during one wrk run)
p = med("1", "pool", "sys_total")
if p is not None:
    def top(t, k=4):
        calls = sorted(((statistics.median(v), m) for (sc, tt, m), v in
                        raw.items() if sc == "1s" and tt == t),
                       reverse=True)[:k]
        return ", ".join("{} {:.2f}".format(m, v) for v, m in calls)
    n, h = med("1", "nginx", "sys_total"), med("1", "haproxy", "sys_total")
    rows.append((
        "1. system calls per request, 50 connections (`strace -c -f`)",
        "", fmt(p, 1), fmt(n, 1), fmt(h, 1),
        "pool: {}; nginx: {}; HAProxy: {}".format(top("pool"), top("nginx"),
                                                 top("haproxy")),
        "report", ""))

# 2. latency at one connection
for m, label in (("p50_us", "p50"), ("p99_us", "p99")):
    d, p, n, h = (med("2", t, m) for t in ["direct"] + TARGETS)
    if p is None:
        continue
    op, on, oh = (diff("2", t, m) for t in TARGETS)
    tgt = met = ""
    if label == "p50":
        tgt = "pool's p50 overhead ≤ nginx's + 5 µs"
        met = verdict(op is not None and on is not None and op <= on + 5)
        chart.append(("2 latency p50", *(pratio("2", "direct", t, m)
                                         for t in TARGETS)))
    rows.append((
        "2. latency at one connection, {} (µs)".format(label),
        fmt(d), fmt(p), fmt(n), fmt(h),
        "overhead: pool {}, nginx {}, HAProxy {} µs".format(
            sfmt(op), sfmt(on), sfmt(oh)), tgt, met))

# 3. naive clients, far upstream
d, p, n, h = (med("3", t, "ms") for t in ["direct"] + TARGETS)
s, loc = med("3", "session", "ms"), med("3", "local", "ms")
if p is not None:
    rps_ = pratio("3", "pool", "session", "ms")
    rdp = pratio("3", "direct", "pool", "ms")
    rows.append((
        "3. naive `requests.post`, TLS upstream 20 ms away, one call (ms)",
        fmt(d, 1) + " (naive)", fmt(p, 1), fmt(n, 1), fmt(h, 1),
        "one `Session` direct {} ms; pool/Session **{}**; naive direct/pool "
        "**{}×** (a naive call to the fake alone, plain loopback: {} ms)"
        .format(fmt(s, 1), fmt(rps_, 3), fmt(rdp, 2), fmt(loc, 1)),
        "pool ≤ 1.05 × Session, naive direct/pool ≥ 2.5",
        verdict(rps_ is not None and rdp is not None and rps_ <= 1.05 and
                rdp >= 2.5)))
    chart.append(("3 naive far call", *(pratio("3", "direct", t, "ms")
                                        for t in TARGETS)))

# 4. streaming, per-line delay
for m, label in (("delay_p50_us", "p50"), ("delay_p99_us", "p99")):
    d, p, n, h = (med("4", t, m) for t in ["direct"] + TARGETS)
    if p is None:
        continue
    op, on, oh = (diff("4", t, m) for t in TARGETS)
    tgt = met = ""
    if label == "p50":
        tgt = "pool's p50 overhead ≤ 30 µs"
        met = verdict(op is not None and op <= 30)
    if label == "p99":
        tgt = "pool's p99 overhead < 1,000 µs"
        met = verdict(op is not None and op < 1000)
        chart.append(("4 stream line p50", *(pratio("4", "direct", t,
                                                    "delay_p50_us")
                                             for t in TARGETS)))
    rows.append((
        "4. streaming, each line's delay, {} (µs; HAProxy with `option "
        "http-no-delay`)".format(label),
        fmt(d), fmt(p), fmt(n), fmt(h),
        "overhead: pool {}, nginx {}, HAProxy {} µs".format(
            sfmt(op), sfmt(on), sfmt(oh)), tgt, met))


def lines_reads(s, t):
    li, re = med(s, t, "lines"), med(s, t, "reads")
    if li is None:
        return "—"
    return "{:.0f} / {:.0f}".format(li, re)


if med("4", "pool", "lines") is not None:
    pl, pr = med("4", "pool", "lines"), med("4", "pool", "reads")
    mx = max(raw.get(("4", "pool", "max_lines_per_read"), [0]))
    h0l, h0r = (med("4", "haproxy_default", "lines"),
                med("4", "haproxy_default", "reads"))
    extra = ""
    if h0l is not None:
        extra = "; HAProxy without `http-no-delay`: {:.0f} / {:.0f}".format(
            h0l, h0r)
    rows.append((
        "4. streaming, lines / reads that delivered them (median)",
        lines_reads("4", "direct"), lines_reads("4", "pool"),
        lines_reads("4", "nginx"), lines_reads("4", "haproxy"),
        "most lines in one read through pool: {:.0f}{}".format(mx, extra),
        "1,000 lines, ≥ 90% in reads of their own",
        verdict(pl == 1000 and pr >= 900)))
if med("4f", "pool", "lines") is not None:
    rows.append((
        "4. the same with the test fake Ollama upstream, lines / reads",
        lines_reads("4f", "direct"), lines_reads("4f", "pool"), "", "",
        "fake's own line gap p50 {} µs".format(
            fmt(med("4f", "direct", "gap_p50_us"))), "", ""))

# 5. connections
idle = meta.get("idle", "10000")
p, n, h = (med("5", t, "rss_idle_kib") for t in TARGETS)
if p is not None:
    ps, ns, hs = (med("5", t, "rss_start_kib") for t in TARGETS)
    ok = [med("5", t, "idle_ok") for t in TARGETS]
    mib = lambda v: None if v is None else v / 1024.0
    rows.append((
        "5. RSS with {:,} idle keep-alive clients (MiB; at start)".format(
            int(idle)),
        "", "{} ({})".format(fmt(mib(p), 1), fmt(mib(ps), 1)),
        "{} ({})".format(fmt(mib(n), 1), fmt(mib(ns), 1)),
        "{} ({})".format(fmt(mib(h), 1), fmt(mib(hs), 1)),
        "clients served: pool {}, nginx {}, HAProxy {}".format(
            *(fmt(v) for v in ok)),
        "pool < 64 MiB", verdict(p < 64 * 1024)))
    pc = [per_run("5", t, lambda i, s_, k: (i - s_) / k if k else None,
                  "rss_idle_kib", "rss_start_kib", "idle_ok")
          for t in TARGETS]
    rows.append((
        "5. memory per idle kept-alive client: (RSS with the clients − RSS "
        "at start) / clients (KiB)",
        "", *(fmt(v, 2) for v in pc),
        "pool/nginx {}, pool/HAProxy {}".format(
            fmt(ratio(pc[0], pc[1]), 2), fmt(ratio(pc[0], pc[2]), 2)),
        "pool ≤ 1.5 KiB", verdict(None if pc[0] is None else pc[0] <= 1.5)))
streams = meta.get("streams", "1000")
d, p, n, h = (med("5", t, "streams_ok") for t in ["direct"] + TARGETS)
if p is not None:
    inflight = med("5", "pool", "streams_inflight")
    rows.append((
        "5. {:,} concurrent streams (40 lines, 50 ms apart) completed".format(
            int(streams)),
        fmt(d), fmt(p), fmt(n), fmt(h),
        "most in flight at once through pool: {}".format(fmt(inflight)),
        "all complete", verdict(p == float(streams))))
    cl = [per_run("5", t, lambda c, li: c * 1e6 / li if li else None,
                  "stream_cpu_s", "stream_lines") for t in TARGETS]
    if cl[0] is not None:
        rows.append((
            "5. CPU per streamed line, {:,} concurrent streams (µs of "
            "utime+stime / lines delivered)".format(int(streams)),
            "", *(fmt(v, 1) for v in cl),
            "pool/nginx **{}**, pool/HAProxy {}; lines per run {}".format(
                fmt(ratio(cl[0], cl[1]), 2), fmt(ratio(cl[0], cl[2]), 2),
                fmt(med("5", "pool", "stream_lines"))),
            "pool ≤ nginx's",
            verdict(None if cl[1] is None else cl[0] <= cl[1])))

# 6. upload
size = meta.get("upload", "4g")
d, p, n, h = (med("6", t, "mib_s") for t in ["direct"] + TARGETS)
if p is not None:
    st = raw.get(("6", "pool", "status"), [])
    nbytes = parse_size(size)
    whole = all(v == nbytes for t in ["direct"] + TARGETS
                for v in raw.get(("6", t, "received"), [None]))
    rpd = pratio("6", "pool", "direct", "mib_s")
    rows.append((
        "6. {} chunked blob upload into a sink that counts every byte "
        "(MiB/s)".format(size.upper() + "iB" if size[-1:].isalpha()
                         else size),
        fmt(d), fmt(p), fmt(n), fmt(h),
        "pool/direct **{}**, nginx/direct {}, HAProxy/direct {}; status "
        "{}; every byte counted: {}".format(
            fmt(rpd, 2), fmt(pratio("6", "nginx", "direct", "mib_s"), 2),
            fmt(pratio("6", "haproxy", "direct", "mib_s"), 2),
            ",".join(str(int(x)) for x in sorted(set(st))),
            "yes" if whole else "**no**"),
        "pool/direct ≥ 0.8",
        verdict(rpd is not None and rpd >= 0.8 and whole)))
    gib = nbytes / float(1 << 30)
    cd, cp, cn, ch = (med("6", t, "cpu_s") for t in ["direct"] + TARGETS)
    if cp is not None:
        per = lambda v: None if v is None else v / gib
        rows.append((
            "6. CPU seconds per GiB uploaded (utime+stime; direct: the "
            "sink's own)",
            fmt(per(cd), 2), fmt(per(cp), 2), fmt(per(cn), 2),
            fmt(per(ch), 2),
            "pool/HAProxy **{}**, pool/nginx {}".format(
                fmt(ratio(cp, ch), 2), fmt(ratio(cp, cn), 2)),
            "pool ≤ HAProxy's", verdict(None if ch is None else cp <= ch)))
    chart.append(("6 upload", *(pratio("6", t, "direct", "mib_s")
                                for t in TARGETS)))
    p, n, h = (med("6", t, "hwm_kib") for t in TARGETS)
    mib = lambda v: None if v is None else v / 1024.0
    rows.append((
        "6. peak RSS (VmHWM) during the upload (MiB)", "",
        fmt(mib(p), 1), fmt(mib(n), 1), fmt(mib(h), 1), "",
        "pool < 64 MiB", verdict(p is not None and p < 64 * 1024)))

def pratio7(t):
    x, y = raw.get(("7", t, "first_ms")), raw.get(("7", t, "warm_ms"))
    if not x or not y:
        return None
    return statistics.median(x[i] / y[i] for i in range(min(len(x),
                                                              len(y))))


# 7. cold start
p, n, h = (med("7", t, "first_ms") for t in TARGETS)
if p is not None:
    pw, nw, hw = (med("7", t, "warm_ms") for t in TARGETS)
    d = med("3", "direct", "ms")
    rows.append((
        "7. cold start: first call after the proxy starts (ms; warm "
        "median), far upstream",
        fmt(d, 1) + " (naive)" if d is not None else "",
        "{} ({})".format(fmt(p, 1), fmt(pw, 1)),
        "{} ({})".format(fmt(n, 1), fmt(nw, 1)),
        "{} ({})".format(fmt(h, 1), fmt(hw, 1)),
        "first/warm: pool {}×, nginx {}×, HAProxy {}×".format(
            *(fmt(pratio7(t), 1) for t in TARGETS)),
        "report (prewarming: backends issue)", ""))

# 8. time to first byte when models must load
load_ms = float(meta8.get("load_ms", "3000"))
n8 = meta8.get("s8_requests", "20")
for order, label in (("alt", "alternating m1, m2"),
                     ("mixed", "m1 and m2 in a mixed order")):
    p = med("8", "pool", order + "_ttfb_p50_ms")
    h = med("8", "haproxy", order + "_ttfb_p50_ms")
    if p is None and h is None:
        continue

    def ttfb(t):
        v = [med("8", t, order + "_ttfb_" + k + "_ms")
             for k in ("p50", "p95", "max")]
        if v[0] is None:
            return "—"
        return " / ".join(fmt(x, 1) for x in v)

    def loads(t):
        v = med("8", t, order + "_loads")
        return "—" if v is None else "{:.0f}/{}".format(v, n8)

    pl = med("8", "pool", order + "_loads")
    fails = sum(med("8", t, order + "_failed") or 0 for t in TARGETS)
    rows.append((
        "8. time to first byte, {} sequential streaming generates, {}, "
        "two backends, each with one of the two loaded, load {} s, one model "
        "loaded at most: p50 / p95 / max (ms)".format(
            n8, label, fmt(load_ms / 1000.0, 0)),
        "{} (load)".format(fmt(load_ms)), ttfb("pool"), "", ttfb("haproxy"),
        "requests that paid a load (TTFB > {} ms): pool **{}**, HAProxy "
        "**{}**; loads the backends did: pool {}, HAProxy {}{}".format(
            fmt(load_ms / 2), loads("pool"), loads("haproxy"),
            fmt(med("8", "pool", order + "_evictions")),
            fmt(med("8", "haproxy", order + "_evictions")),
            "" if not fails else "; **{:.0f} failed**".format(fails)),
        "pool pays no load",
        verdict(None if pl is None else pl == 0 and fails == 0)))

# 9. the fair queue under a batch
nb = int(meta8.get("batch", "500"))
ni = int(meta8.get("inter", "10"))
busy = float(meta8.get("busy_ms", "40"))
p = med("9", "pool", "makespan_s")
if p is not None or med("9", "haproxy", "makespan_s") is not None:
    def okfail(t):
        b, i = med("9", t, "batch_ok"), med("9", t, "inter_ok")
        if b is None:
            return "—"
        return "{:.0f} ({:.0f} failed)".format(b + i, nb + ni - b - i)
    allok = med("9", "pool", "batch_ok") == nb and \
        med("9", "pool", "inter_ok") == ni
    rows.append((
        "9. {} batch requests at once (token A), then {} interactive ones "
        "one after the other (token B), one model with 4 slots, each "
        "generation {} ms: answered (failed)".format(nb, ni, fmt(busy)),
        "", okfail("pool"), "", okfail("haproxy"),
        "most generations at once upstream: pool {}, HAProxy {}".format(
            fmt(med("9", "pool", "upstream_max_concurrent")),
            fmt(med("9", "haproxy", "upstream_max_concurrent"))),
        "all answered", verdict(allok)))
    rows.append((
        "9. the batch's makespan, its start to its last answer (s; "
        "median batch request)",
        "{} (ideal)".format(fmt(nb * busy / 4 / 1000.0, 2)),
        *("{} ({})".format(fmt(med("9", t, "makespan_s"), 2),
                           fmt(med("9", t, "batch_p50_s"), 2)) if t != "nginx"
          else "" for t in TARGETS),
        "pool/HAProxy {}".format(fmt(ratio(
            p, med("9", "haproxy", "makespan_s")), 2)),
        "report", ""))
    pi = med("9", "pool", "inter_p50_ms")
    hi = med("9", "haproxy", "inter_p50_ms")
    rows.append((
        "9. the interactive requests' latency, connect to last byte: p50 / "
        "max (ms; the first one's)",
        "{} (one generation)".format(fmt(busy)),
        *("{} / {} ({})".format(fmt(med("9", t, "inter_p50_ms")),
                                fmt(med("9", t, "inter_max_ms")),
                                fmt(med("9", t, "inter_first_ms")))
          if t != "nginx" else "" for t in TARGETS),
        "all {} answered after: pool **{} s**, HAProxy **{} s** (from the "
        "first sent)".format(
            ni, fmt((med("9", "pool", "inter_total_ms") or 0) / 1000.0, 2),
            fmt((med("9", "haproxy", "inter_total_ms") or 0) / 1000.0, 2)),
        "pool's p50 ≤ 2.5 generations ({} ms)".format(fmt(2.5 * busy)),
        verdict(None if pi is None else pi <= 2.5 * busy)))
    rows.append((
        "9. proxy CPU per request over the run (µs of utime+stime); peak "
        "RSS (VmHWM, MiB)", "",
        *("{}; {}".format(fmt(med("9", t, "cpu_us_per_req")),
                          fmt((med("9", t, "hwm_kib") or 0) / 1024.0, 1))
          if t != "nginx" else "" for t in TARGETS),
        "pool/HAProxy CPU {}".format(fmt(ratio(
            med("9", "pool", "cpu_us_per_req"),
            med("9", "haproxy", "cpu_us_per_req")), 2)),
        "report", ""))


# 10. a simulated fleet from DNS behind two replicas
m10 = meta10.get("s10_members", "32")
if med("10", "pool", "requests") is not None:
    req, ok10 = med("10", "pool", "requests"), med("10", "pool", "ok")
    fail10 = (med("10", "pool", "failed") or 0)
    rows.append((
        "10. {} conversations of {} streaming `/api/chat` turns at once, "
        "each turn through the other of two ollama-pool replicas, {} "
        "members from DNS (one name), each generation {} ms: answered "
        "(failed)".format(
            fmt(float(meta10.get("s10_convs", "1000"))),
            meta10.get("s10_turns", "5"), m10,
            meta10.get("s10_busy_ms", "200")),
        "", "{} ({} failed)".format(fmt(ok10), fmt(fail10)), "", "",
        "most in flight at once {}; a turn, connect to last byte: p50 {} "
        "ms, p99 {} ms; all in {} s".format(
            fmt(med("10", "pool", "max_in_flight")),
            fmt(med("10", "pool", "turn_p50_ms")),
            fmt(med("10", "pool", "turn_p99_ms")),
            fmt(med("10", "pool", "seconds"), 1)),
        "all answered", verdict(fail10 == 0 and ok10 == req)))
    mean = med("10", "pool", "spread_mean")
    rows.append((
        "10. requests per member: min / max / standard deviation (mean)",
        "", "{} / {} / {} ({})".format(
            fmt(med("10", "pool", "spread_min")),
            fmt(med("10", "pool", "spread_max")),
            fmt(med("10", "pool", "spread_sd"), 1), fmt(mean, 1)),
        "", "",
        "max/mean {}, min/mean {}; attempts retried on another member: "
        "{}".format(
            fmt(ratio(med("10", "pool", "spread_max"), mean), 2),
            fmt(ratio(med("10", "pool", "spread_min"), mean), 2),
            fmt(med("10", "pool", "retried"))),
        "report", ""))
    pc = lambda v: None if v is None else 100.0 * v
    rows.append((
        "10. conversation affinity: turns 2 to {} that reached the member "
        "of their turn 1, whichever replica; conversations on one member "
        "throughout (%)".format(meta10.get("s10_turns", "5")),
        "", "{} ({})".format(fmt(pc(med("10", "pool", "affinity_hit")), 1),
                             fmt(pc(med("10", "pool", "affinity_whole")),
                                 1)),
        "", "",
        "at light load ({} conversations, about one a member): {}%".format(
            meta10.get("s10_light", "32"),
            fmt(pc(med("10", "pool", "light_affinity_hit")), 1)),
        "report", ""))
    rows.append((
        "10. proxy CPU per request, both replicas (µs of utime+stime); "
        "peak RSS of a replica (VmHWM, MiB)", "",
        "{}; {}".format(fmt(med("10", "pool", "cpu_us_per_req")),
                        fmt((med("10", "pool", "hwm_kib") or 0) / 1024.0,
                            1)),
        "", "", "", "report", ""))
    rv = raw.get(("10", "pool", "remove_ms"), [])
    jv = raw.get(("10", "pool", "join_ms"), [])
    pv = raw.get(("10", "pool", "joined_ms"), [])
    cf = med("10", "pool", "churn_failed")
    ag = med("10", "pool", "after_gone")

    def mm(v):
        return "—" if not v else "{} / {}".format(
            fmt(statistics.median(v)), fmt(max(v)))
    rows.append((
        "10. a membership change taking effect, `resolve_interval` and "
        "`probe_interval` 1 s, {} of each: an address dropped from the "
        "answer until both replicas stop placing on it; one added until it "
        "serves its first request (through either): median / max (ms)".format(len(rv)),
        "", "dropped {}; added {}".format(mm(rv), mm(jv)), "", "",
        "added: joined both replicas (first probe answered) after {} ms; "
        "requests to a dropped member after both dropped it: {}; steady "
        "load meanwhile: {} requests, {} failed".format(
            mm(pv), fmt(ag), fmt(med("10", "pool", "churn_requests")),
            fmt(cf)),
        "no failed request",
        verdict(None if cf is None else cf == 0 and ag == 0)))

# --- results.md --------------------------------------------------------------
quick = meta.get("quick") == "1"
out = []
w = out.append
w("# ollama-pool benchmark results")
w("")
if quick:
    w("**Trial run (`BENCH_QUICK=1`): fewer runs and smaller loads; not "
      "the committed figures.**")
    w("")
w("Generated by `make bench` (`bench/run.sh`) on {}: {} cores ({}), "
  "load average {} before and {} after; {} s in all.".format(
      meta.get("date"), meta.get("cores"), meta.get("cpu"),
      meta.get("load_before"), meta.get("load_after"), meta.get("seconds")))
w("{}, {}, {}, load from {} with one thread; niceness {}.".format(
    meta.get("pool_version"), meta.get("nginx_version"),
    meta.get("haproxy_version"), meta.get("wrk_version"),
    meta.get("nice", "0")))
w("")
once = [x for x in ("8", "9", "10") if x in run_of]
one_run = "" if not once else "; {}: one run".format(
    once[0] if len(once) == 1 else
    ", ".join(once[:-1]) + " and " + once[-1])
w("Every figure is the median of {runs} runs (scenario 5: {runs5}; "
  "scenario 6: {up}{one}), the targets interleaved within each run. "
  "Absolute "
  "figures drift on a shared machine; compare the ratios, which are "
  "medians of per-run ratios of figures taken back to back (so they need "
  "not equal the ratio of the medians shown).".format(
      runs=meta.get("runs"), runs5=meta.get("runs5"),
      up=meta.get("upruns"),
      one=one_run))
w("")
if meta8 and meta8 is not meta:
    w("Scenarios 8 and 9 are from {}run on {}: load average {} before and "
      "{} after; {} s.".format(
          "a trial (`BENCH_QUICK=1`) " if meta8.get("quick") == "1" else
          "another ",
          meta8.get("date"), meta8.get("load_before"),
          meta8.get("load_after"), meta8.get("seconds")))
    w("")
if meta10 and meta10 is not meta and meta10 is not meta8:
    w("Scenario 10 is from {}run on {}: load average {} before and "
      "{} after; {} s.".format(
          "a trial (`BENCH_QUICK=1`) " if meta10.get("quick") == "1" else
          "another ",
          meta10.get("date"), meta10.get("load_before"),
          meta10.get("load_after"), meta10.get("seconds")))
    w("")
ceil = med("1", "direct", "rps")
if ceil is not None:
    w("Stand-in upstream alone (nginx, one worker, fixed `/api/version` JSON, "
      "wrk with 50 connections): **{} req/s**, its ceiling; the proxies' "
      "throughput below stays under it.".format(fmt(ceil)))
    w("")
if meta.get("wrk_errors", "0") not in ("0", ""):
    w("wrk reported errors in {} runs (see the run's log).".format(
        meta.get("wrk_errors")))
    w("")
w("Tail latencies (the p99 rows) on a shared two-core machine are mostly "
  "scheduling: a process that has to wait for a core waits a time slice, "
  "about a millisecond, whatever it is. A proxy adds one more process to "
  "wake per request or line, so its p99 suffers most when the load average "
  "is high; the p50 rows and the ratios are the stable figures.")
w("")
w("| scenario | direct | ollama-pool | nginx | HAProxy | ratios | target "
  "| |")
w("|---|---|---|---|---|---|---|---|")
for r in rows:
    w("| " + " | ".join(r) + " |")
w("")
w("""How each figure is made:

- **Proxies.** nginx: one worker, `keepalive 32`, `proxy_http_version
  1.1`, `proxy_set_header Connection ""`, `proxy_buffering off`,
  `proxy_request_buffering off` (otherwise the upload is spooled to disk),
  `access_log off`. HAProxy: `nbthread 1`, `http-reuse always`, and
  `option http-no-delay` in scenario 4 only. ollama-pool: its defaults with
  `pool_maxsize = 32` (like nginx's `keepalive 32`), 1000 in scenario 5.
  Configurations: `bench/conf/`.
- **1, 2.** wrk, one thread, 50 connections (1) or one (2, `--latency`),
  on `/api/version` (which every proxy forwards as it is), against the
  stand-in upstream directly and through each proxy. The stand-in (nginx
  `return 200`) does several times the proxies' rate, so they, not it,
  are the limit. Overheads are proxy minus direct, per run, then the
  median.
- **1, libcurl.** `bench/curlbench`: one multi handle, N easy handles
  re-added as each transfer ends (so N in flight, over connections the
  multi handle keeps), `CURLOPT_NOSIGNAL`, body dropped; against the
  stand-in directly, in the same rounds as wrk. It does no proxying: it
  is what a proxy built on libcurl could reach if its own side cost
  nothing.
- **1, connections.** The stand-in's `stub_status` `accepts` before and
  after each throughput run (one way that counts for every proxy); for
  ollama-pool also `ollama_pool_upstream_connections_opened_total` from
  `/ollama-pool/metrics`. Warm-up runs fill every pool first. nginx keeps
  at most 32 idle upstream connections (`keepalive 32`) and, by default,
  closes one after 1,000 requests (`keepalive_requests`), so it opens
  more under 50 concurrent clients.
- **1, system calls.** `strace -c -f -p` on the proxy's working process
  (nginx's worker) during one {sys} s wrk run with 50 connections, each
  call's count over the requests wrk completed. strace slows the proxy
  several times over, so the run is short; wrk's 50 connects (`accept4`,
  `setsockopt`) are in the counts.
- **3.** The far upstream is the test fake Ollama behind an nginx TLS
  terminator (a self-signed certificate made at run time) behind
  `bench/relay.py`, which delivers every byte 10 ms late each way and the
  first bytes of each connection one more round trip late (the TCP
  handshake). `bench/naive.py` times `requests.post(url, json=...,
  verify=cert)` on `/api/generate` with `stream:false`, no Session: direct
  over https (a TCP and a TLS handshake per call), and through each proxy
  over plain loopback (the proxies keep TLS connections to the relay);
  and with one `requests.Session` direct, the in-process ideal. Each run
  is the median of {calls} calls after one untimed call.
- **4.** Per-line delay needs each line's send time, which the fake Ollama
  does not write. So the upstream here is `benchtool tsource`: the same
  NDJSON generate stream (1,000 lines on an absolute 2 ms schedule, one
  chunk and one write per line, TCP_NODELAY as Go sets it), each line
  carrying its CLOCK_MONOTONIC send time. `benchtool stream` stamps each
  line when the read that completes it returns; delay = arrival − send,
  on one clock (same machine). Direct is the loopback floor; the overhead
  is proxy minus direct for each percentile, per run. Reads: how many
  read() calls delivered the lines (1,000 lines in ~1,000 reads means no
  batching; a few 2-line reads happen when the client itself is
  descheduled). The test fake itself is also streamed through ollama-pool
  to check the count; its timer-driven gaps are not 2 ms, and carry no
  timestamps.
- **5.** `benchtool idle` opens the clients (200 connecting at a time),
  makes one GET `/api/tags` on each and holds them; RSS is then read from
  `/proc` (nginx: master plus worker); per client is that minus the RSS
  at start, over the clients served. `benchtool streams` then runs the
  concurrent streaming generates against the fake Ollama; a stream counts
  when it ends with status 200, the terminating chunk and a `done:true`
  line. CPU per line is the proxy's utime+stime (`/proc/PID/stat`, all
  its processes and threads) across that run, over the lines delivered.
  A fresh proxy process each run.
- **6.** `benchtool upload` POSTs a pseudo-random body chunked (1 MiB
  chunks, no Content-Length) to `/api/blobs/sha256:...`; the upstream is
  `benchtool sink`, which reads the whole body (256 KiB reads, one thread
  per connection, no hashing) and answers 201 with the count of body
  bytes, which `upload` checks against what it sent. CPU is the proxy's
  utime+stime across the upload over the GiB moved. A fresh proxy each
  run; peak RSS is the proxy's VmHWM after the upload.
- **7.** A fresh proxy in front of the far upstream, waited for until it
  listens, then 11 naive calls (after an untimed call that goes to the
  fake directly and only warms the client): the first against the median
  of the other ten.
""".format(calls=meta.get("calls"), sys=meta.get("sys_s", "3")))
if "8" in run_of or "9" in run_of:
    out[-1] = out[-1].rstrip("\n")
    w("""- **8.** Two fake Ollamas (`tests/fake-ollama -T m1,m2 -D {load}
  -M 1`), both with m1 and m2 installed, fake1 with m1 loaded and fake2
  with m2; a model that is not loaded loads for {load} ms, sending no
  byte meanwhile (its `load_duration` in the last line), and loading one
  unloads the other (`-M 1`, like `OLLAMA_MAX_LOADED_MODELS=1`). Through
  ollama-pool (the two as `[backend]`s, waited for until its first
  probes saw what each has loaded) and through HAProxy (`balance
  roundrobin` over the two, no health checks), fresh fakes for each
  target. `benchtool ttfb` sends {n} streaming `/api/generate`, one after
  the other, each on a new connection, and times the first byte of each
  answer; one over {half} ms paid a load (the fakes' own count of loads
  agrees). Round robin sends request i where request i−2 went, so a
  request pays a load when its model differs from the one two before it:
  strictly alternating models stay in phase with it (no load, or one per
  backend when it starts out of phase), requests in a mixed order (a
  fixed shuffle, 10 of each in 20, the first two the same) pay one about
  half the time. ollama-pool sends each model where it is loaded.
- **9.** One fake Ollama with m loaded whose generations take {busy} ms
  each (`-B {busy}`), at most 4 at once through either proxy:
  ollama-pool with one `[backend]`, `num_parallel = 4`, `pool_maxsize =
  4` and `client_tokens` of two tokens (its fair queue serves the
  clients that wait in turn, FIFO within each); HAProxy with `maxconn 4`
  on the server (its queue is FIFO across clients). `benchtool queue`
  opens {batch} streaming generates at once with token A; 200 ms later
  the interactive client sends {inter}, each once the one before has
  ended, with token B. A request counts when it ends with status 200 and
  `done:true`. Latency is connect to last byte. Through ollama-pool an
  interactive request takes the next slot that frees, so it waits
  between none and one generation before its own: the 4 slots tend to
  free together (the batch's generations start in step), and one sent
  just after they were taken again waits the whole generation. Only the first interactive request meets HAProxy's
  full queue; the ones after it find the batch done, so HAProxy's p50 is
  one generation while its first waits about the makespan. CPU is the proxy's utime+stime across the
  run over the {total} requests; peak RSS is its VmHWM, a fresh process
  per target.
""".format(load=meta8.get("load_ms", "3000"),
           n=meta8.get("s8_requests", "20"),
           half=fmt(float(meta8.get("load_ms", "3000")) / 2),
           busy=meta8.get("busy_ms", "40"), batch=meta8.get("batch", "500"),
           inter=meta8.get("inter", "10"),
           total=int(meta8.get("batch", "500")) +
           int(meta8.get("inter", "10"))))
if "10" in run_of:
    out[-1] = out[-1].rstrip("\n")
    w("""- **10.** A simulated fleet, as pods behind a Kubernetes headless
  Service: {m} fake Ollamas (`tests/fake-ollama -T m -P m -B {busy}`),
  bound to 127.0.0.2, 127.0.0.3, ... on one port, and `benchtool dns`,
  a DNS stand-in on loopback answering `pods.test` with their
  addresses, its table read anew for every query. (`tests/fake-dns`
  answers 16 addresses at most and within 512 bytes; 32 A records take
  539, which the stand-in sends whole, as a server does to a client
  with a larger EDNS buffer. evdns 2.1 takes such an answer, up to 32
  addresses, but sends no EDNS itself, so a server that keeps to 512
  bytes truncates it, and evdns fails a truncated answer.) Two
  ollama-pool replicas with the same configuration
  (`bench/conf/ollama-pool-pods.conf`: `resolver` the stand-in,
  `resolve_interval` and `probe_interval` 1 s, one `[backend]` with url
  `http://pods.test:PORT`, {slots} slots a member), each waited for
  until it lists every member up. `benchtool fleet` then opens {convs}
  conversations at once, {turns} streaming `/api/chat` turns each, one
  after the other, turn t of conversation c through replica (c + t)
  mod 2; every turn resends the conversation's system prompt and first
  user message (its affinity key) and the turns before it, and carries
  `X-Fake-Tag: c<c>.<t>`, which each fake records with the requests it
  gets: where each turn went, and so the spread and the affinity, are
  the fakes' own account. A light run of {light} conversations, the
  same otherwise, comes first. CPU is both replicas' utime+stime across
  the main run over its requests. Then, under a steady load ({churn}
  one-turn conversations kept going through both replicas), {rounds}
  rounds each drop the last member from the answer and add a new one,
  each change a random fraction of a second after the last, so it lands
  at any point of the lookup cycle: a drop takes effect when both
  replicas log `member ... is gone` (the later line's own time stamp),
  an addition when the new member's fake has had its first request
  (polled every 10 ms). Affinity falls short of 100% by the bounded
  load (`src/affinity.c`): a member holding more than 1.25 times the
  average in flight is passed over for the next in the key's order, and
  each replica counts only its own requests, which with the turns
  alternating between replicas are a different half of the
  conversations at each turn; at light load the bound is one or two
  requests. In a trial build with the bound lifted (not part of the
  suite; 16 members, 200 conversations), every turn stayed on its first
  member, and the spread widened to max/mean 1.92 (1.18 with it).
""".format(m=meta10.get("s10_members", "32"),
           busy=meta10.get("s10_busy_ms", "200"),
           slots=meta10.get("s10_slots", "64"),
           convs=fmt(float(meta10.get("s10_convs", "1000"))),
           turns=meta10.get("s10_turns", "5"),
           light=meta10.get("s10_light", "32"),
           churn=meta10.get("s10_churn", "64"),
           rounds=meta10.get("s10_rounds", "5")))
with open(md_path, "w") as f:
    f.write("\n".join(out))

with open(dat_path, "w") as f:
    f.write("# label pool nginx haproxy (relative to direct, higher is "
            "better)\n")
    for label, *vals in chart:
        f.write('"{}" {}\n'.format(label, " ".join(
            "{:.4f}".format(v) if v is not None else "NaN" for v in vals)))
