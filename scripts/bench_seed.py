#!/usr/bin/env python3
"""The seed-style workload of scripts/bench: a service caching slow results, in Python.

    bench_seed.py (--root MOUNT | --mounts MOUNT,MOUNT... | --diskcache DIR) [-j 4] [-n 2000] [--inputs 5000] [--salt S]

-j processes at once (after a barrier), each making -n requests. A request picks an input by a
Zipf law (s = 1) over --inputs inputs, and a namespace: even inputs go to one whose entries
live 3 s ("seedttl"), odd ones to one with a 2 MiB quota ("seedq"). It gets the input's key
(sha256 of the salted input text, 64 hex); on a miss it "computes" (sleeps 1-5 ms) and writes
the value (10-15 KB, a pure function of the input, with the time it was made), half the time
directly and half as write-temp-then-rename (os.replace), the way Python services do; then it
reads it back at once (read-your-writes). With --diskcache the same on python-diskcache: one
Cache per namespace (set with expire=3; a Cache with size_limit=2 MiB), set() for both writes.

With --mounts (mounts of one backing dir by several daemons), process j works through the
j-th mount (round robin): one cache shared by the processes across mounts.

Counted: torn (a value that is not exactly its input's), stale (served more than 0.5 s past
its 3 s life: what the writer measured from before its write), lost (missing right after its
own successful write). Prints one JSON object: requests/s over the wall time (barrier to the
last process's end), hit ratio, hit p50/p99 (us), publish p50/p99 (us, the write alone; also
by kind of write and by namespace: the quota namespace's publishes evict), the counts.
"""

import argparse
import hashlib
import itertools
import json
import multiprocessing as mp
import os
import random
import struct
import time

TTL_S = 3.0
QUOTA = 2 * 1024 * 1024
STALE_SLACK_S = 0.5


def value_of(i, made):
    """The value of input i, made at `made` (time.time()): a header, then bytes from i alone."""
    n = 10240 + (i * 7919) % 5120
    body = hashlib.sha256(b"input %d" % i).digest() * (n // 32 + 1)
    return struct.pack("<Qd", i, made) + body[:n]


def check(i, data):
    """(whole, made): whether data is exactly input i's value, and when it was made."""
    if len(data) < 16:
        return False, 0.0
    j, made = struct.unpack("<Qd", data[:16])
    return j == i and data == value_of(i, made), made


class Files:
    """The cache as files: a cachefs mount's two namespaces."""

    def __init__(self, root, salt):
        self.root, self.salt = root, salt

    def path(self, ns, i):
        return os.path.join(self.root, ns, hashlib.sha256(f"{self.salt} {i}".encode()).hexdigest())

    def get(self, ns, i):
        try:
            with open(self.path(ns, i), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def put(self, ns, i, data, via_rename):
        p = self.path(ns, i)
        if via_rename:
            tmp = os.path.join(os.path.dirname(p), f".tmp-{os.getpid()}-{os.path.basename(p)}")
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, p)
        else:
            with open(p, "wb") as f:
                f.write(data)


class Disk:
    """python-diskcache: one Cache per namespace."""

    def __init__(self, root, salt):
        import diskcache
        self.salt = salt
        self.c = {"seedttl": diskcache.Cache(os.path.join(root, "seedttl")),
                  "seedq": diskcache.Cache(os.path.join(root, "seedq"), size_limit=QUOTA)}

    def key(self, i):
        return hashlib.sha256(f"{self.salt} {i}".encode()).hexdigest()

    def get(self, ns, i):
        return self.c[ns].get(self.key(i))

    def put(self, ns, i, data, via_rename):
        self.c[ns].set(self.key(i), data, expire=TTL_S if ns == "seedttl" else None)


def worker(a, j, ready, go, q):
    rng = random.Random(f"{a.salt}-{j}")
    cum = list(itertools.accumulate(1.0 / (k + 1) for k in range(a.inputs)))
    cache = Disk(a.diskcache, a.salt) if a.diskcache else Files(a.roots[j % len(a.roots)], a.salt)
    hits, pubs, direct, renamed = [], [], [], []
    by_ns = {"seedttl": [], "seedq": []}
    torn = stale = lost = misses = 0
    ready.wait()
    go.wait()
    for r in range(a.n):
        i = rng.choices(range(a.inputs), cum_weights=cum)[0]
        ns = "seedttl" if i % 2 == 0 else "seedq"
        t0 = time.perf_counter_ns()
        data = cache.get(ns, i)
        t1 = time.perf_counter_ns()
        if data is not None:
            whole, made = check(i, data)
            if not whole:
                torn += 1
            elif ns == "seedttl" and time.time() > made + TTL_S + STALE_SLACK_S:
                stale += 1
            hits.append(t1 - t0)
            continue
        misses += 1
        time.sleep(rng.uniform(0.001, 0.005))
        value = value_of(i, time.time())
        t0 = time.perf_counter_ns()
        cache.put(ns, i, value, via_rename=(r % 2 == 1))
        pubs.append(time.perf_counter_ns() - t0)
        (renamed if r % 2 else direct).append(pubs[-1])
        by_ns[ns].append(pubs[-1])
        back = cache.get(ns, i)
        if back is None:
            lost += 1
        elif back != value and not check(i, back)[0]:
            torn += 1
    q.put({"hits": hits, "pubs": pubs, "direct": direct, "renamed": renamed, **by_ns, "torn": torn, "stale": stale,
           "lost": lost,
           "misses": misses, "end": time.monotonic()})


def pct(v, p):
    if not v:
        return None
    v = sorted(v)
    return round(v[min(len(v) - 1, int(p * len(v)))] / 1000.0, 1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root")
    ap.add_argument("--mounts", help="comma list of mounts of one backing dir; process j uses the j-th")
    ap.add_argument("--diskcache")
    ap.add_argument("-j", dest="procs", type=int, default=4)
    ap.add_argument("-n", type=int, default=2000)
    ap.add_argument("--inputs", type=int, default=5000)
    ap.add_argument("--salt", default="s")
    a = ap.parse_args()
    if (a.root is not None) + (a.mounts is not None) + (a.diskcache is not None) != 1:
        ap.error("one of --root, --mounts, --diskcache")
    a.roots = a.mounts.split(",") if a.mounts else [a.root]
    ready, go, q = mp.Barrier(a.procs + 1), mp.Barrier(a.procs + 1), mp.Queue()
    ps = [mp.Process(target=worker, args=(a, j, ready, go, q)) for j in range(a.procs)]
    for p in ps:
        p.start()
    ready.wait()
    t0 = time.monotonic()
    go.wait()
    res = []
    while len(res) < len(ps):
        try:
            res.append(q.get(timeout=1.0))
        except Exception:   # queue.Empty: a worker that died sends nothing
            dead = [p for p in ps if p.exitcode not in (None, 0)]
            if dead:
                for p in ps:
                    p.kill()
                raise SystemExit(f"bench_seed: a worker failed (exit {dead[0].exitcode})")
    for p in ps:
        p.join()
    wall = max(r["end"] for r in res) - t0
    hits = [x for r in res for x in r["hits"]]
    pubs = [x for r in res for x in r["pubs"]]
    reqs = a.procs * a.n
    out = {"mode": "seed", "procs": a.procs, "requests": reqs, "wall_s": round(wall, 3),
           "requests_per_s": round(reqs / wall, 1), "hit_ratio": round(len(hits) / reqs, 3),
           "hit_p50_us": pct(hits, 0.5), "hit_p99_us": pct(hits, 0.99),
           "publish_p50_us": pct(pubs, 0.5), "publish_p99_us": pct(pubs, 0.99),
           "publishes": len(pubs)}
    for k in ("direct", "renamed", "seedttl", "seedq"):
        v = [x for r in res for x in r[k]]
        out[f"publish_{k}_p50_us"], out[f"publish_{k}_p99_us"] = pct(v, 0.5), pct(v, 0.99)
    for k in ("torn", "stale", "lost"):
        out[k] = sum(r[k] for r in res)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
