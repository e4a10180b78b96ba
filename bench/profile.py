#!/usr/bin/env python3
"""Sums callgrind's self costs by shared object: bench/profile.md.

    profile.py CALLGRIND.OUT REQUESTS VERSIONS

Reads the callgrind output file itself (not callgrind_annotate, whose
exclusive figures charge the frames active when the counters were zeroed
with all that ran below them): each cost line belongs to the function
named by the last fn= and to the object of the last ob=, except the line
after a calls= line, which is that call's inclusive cost and is skipped.
REQUESTS is how many requests wrk completed while the counters ran.
"""

import re
import sys
from collections import defaultdict

path, requests, versions = sys.argv[1], int(sys.argv[2] or 0), sys.argv[3]
name_re = re.compile(r"^\((\d+)\)(?: (.*))?$")
names = {"ob": {}, "fn": {}}


def name(kind, v):
    """Resolves callgrind's name compression: "(id) name" or "(id)"."""
    m = name_re.match(v)
    if not m:
        return v
    if m.group(2) is not None:
        names[kind][m.group(1)] = m.group(2)
    return names[kind].get(m.group(1), v)


total = 0
by_obj = defaultdict(int)
by_fn = defaultdict(int)
into = defaultdict(int)  # (caller object, callee object): inclusive cost
obj, fn, skip, cob = "?", "?", False, None
with open(path) as f:
    for line in f:
        line = line.rstrip("\n")
        if not line:
            continue
        c = line[0]
        if c.isdigit() or c in "+-*":
            if skip:
                parts = line.split()
                callee = cob if cob is not None else obj
                if callee != obj:
                    into[(obj, callee)] += int(parts[1]) if len(parts) > 1 \
                        else 0
                skip, cob = False, None
                continue
            parts = line.split()
            ir = int(parts[1]) if len(parts) > 1 else 0
            by_obj[obj] += ir
            by_fn[(fn, obj)] += ir
            continue
        key, _, val = line.partition("=")
        if key == "ob":
            obj = name("ob", val)
        elif key == "fn":
            fn = name("fn", val)
        elif key == "cob":
            cob = name("ob", val)
        elif key == "cfn":
            name("fn", val)  # defines a name, changes nothing
        elif key == "calls":
            skip = True
        elif line.startswith("summary:") or line.startswith("totals:"):
            total = max(total, int(line.split()[1]))
total = total or sum(by_obj.values())
funcs = [(ir, fn_, o) for (fn_, o), ir in by_fn.items()]


def is_curl(o):
    return "libcurl" in o


# Inside libcurl, with what it calls (libc, OpenSSL...) but without the
# callbacks it makes into other code (ollama-pool's header and write
# callbacks, and what they call): calls into libcurl from outside it,
# less calls out of libcurl into the objects that called it.
callers = {a for (a, b) in into if is_curl(b) and not is_curl(a)}
curl_in = sum(v for (a, b), v in into.items()
              if is_curl(b) and not is_curl(a))
curl_back = sum(v for (a, b), v in into.items()
                if is_curl(a) and b in callers)
curl_incl = curl_in - curl_back


def short(o):
    name = o.rsplit("/", 1)[-1]
    return re.sub(r"\.so[.\d]*$", "", name)


if total == 0:
    sys.exit("profile.py: no costs in " + path)
out = ["# Where ollama-pool's instructions go",
       "",
       "`make bench-profile` (`bench/profile.sh`): the daemon under "
       "valgrind's callgrind in front of the nginx stand-in, wrk with 50 "
       "connections on `/api/version`, counters zeroed after a warm-up. "
       "Instructions executed in user space, by the object they are in "
       "(a libc function called by libcurl counts as libc); the kernel's "
       "work is not in these counts. {}.".format(versions),
       ""]
if requests:
    out += ["{:,} requests: **{:,.0f} instructions per request** in user "
            "space.".format(requests, total / requests), ""]
curl_self = sum(v for o, v in by_obj.items() if is_curl(o))
out += ["Inside libcurl: **{:.1f}%** of the instructions with what it "
        "calls (libc, ...) but not the callbacks it makes into "
        "ollama-pool; {:.1f}% in libcurl's own code.".format(
            100.0 * curl_incl / total, 100.0 * curl_self / total), ""]
out += ["| object | share of instructions | per request |", "|---|---|---|"]
for o, ir in sorted(by_obj.items(), key=lambda kv: -kv[1]):
    if ir * 200 < total:
        continue
    out.append("| {} | {:.1f}% | {} |".format(
        short(o), 100.0 * ir / total,
        "{:,.0f}".format(ir / requests) if requests else "—"))
out += ["", "The 15 costliest functions (their own instructions):", "",
        "| function | object | share |", "|---|---|---|"]
for ir, fn, o in sorted(funcs, reverse=True)[:15]:
    out.append("| `{}` | {} | {:.1f}% |".format(fn, short(o),
                                                100.0 * ir / total))
print("\n".join(out))
