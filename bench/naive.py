#!/usr/bin/env python3
"""Times Ollama calls made the way many apps make them.

    naive.py --url BASE [--cert PEM] [--count N] [--session] [--warm URL]

Each call is requests.post(BASE + "/api/generate", json=..., verify=cert)
with stream:false and no Session, so every call opens its own connection
(TCP, and TLS for an https BASE).  With --session all calls share one
requests.Session: in-process pooling, the ideal a proxy can only approach.
--warm makes one untimed call to another URL first, so the client's own
first-call costs (imports, certificate loading) stay out of the numbers.
Prints one line: the milliseconds of each call, space separated.
"""

import argparse
import sys
import time

import requests

BODY = {"model": "llama3.2", "prompt": "Why is the sky blue?",
        "stream": False}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--cert")
    ap.add_argument("--count", type=int, default=30)
    ap.add_argument("--session", action="store_true")
    ap.add_argument("--warm")
    a = ap.parse_args()
    verify = a.cert if a.cert else True
    if a.warm:
        requests.post(a.warm + "/api/generate", json=BODY,
                      verify=verify).raise_for_status()
    post = requests.Session().post if a.session else requests.post
    url = a.url + "/api/generate"
    times = []
    for _ in range(a.count):
        t0 = time.perf_counter()
        r = post(url, json=BODY, verify=verify)
        r.raise_for_status()
        r.json()
        times.append((time.perf_counter() - t0) * 1000.0)
    print(" ".join("%.3f" % t for t in times))
    return 0


if __name__ == "__main__":
    sys.exit(main())
