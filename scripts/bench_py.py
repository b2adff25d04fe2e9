#!/usr/bin/env python3
"""The Python client of scripts/bench: what cachefs's users are.

    bench_py.py MODE [-p PATH | -d DIR -k PREFIX] [-n N] [-w W] [-s SIZE] [-j PROCS] [-o SAMPLES]
                     [--diskcache DIR]

Modes, each op timed with time.perf_counter_ns():
  read     with open(PATH, "rb") as f: data = f.read()     (checks len(data) == SIZE)
  miss     open(DIR/KEY, "rb") of a new missing key -> FileNotFoundError
  publish  with open(DIR/KEY, "wb") as f: f.write(15 KB)   (a new key each op)
With --diskcache DIR the same rows on python-diskcache (diskcache.Cache(DIR)):
  read     cache.get(KEY)  of an entry set beforehand (`setup` mode sets it)
  miss     cache.get(KEY)  of an absent key -> None
  publish  cache.set(KEY, value), a new key each op
  setup    cache.set(KEY, value) of -k PREFIX index 0 (untimed)
-j PROCS runs PROCS processes at once after their warm-up (a barrier), each with its own keys;
the JSON then has "procs" and "wall_s".

Keys are the same 64-hex names as scripts/bench_client.c (key(PREFIX, i)).
Output: one JSON object on stdout like bench_client's; -o FILE gets the samples in ns.
"""

import argparse
import json
import multiprocessing as mp
import os
import sys
import time

M64 = (1 << 64) - 1


def fnv1a(s):
    h = 0xcbf29ce484222325
    for b in s.encode():
        h ^= b
        h = (h * 0x100000001b3) & M64
    return h


def key(prefix, i):
    """Same as keyname() in bench_client.c."""
    x = fnv1a(prefix) ^ ((i * 0xd6e8feb86659fd93) & M64)
    out = []
    for _ in range(4):
        x = (x + 0x9e3779b97f4a7c15) & M64
        z = x
        z = ((z ^ (z >> 30)) * 0xbf58476d1ce4e5b9) & M64
        z = ((z ^ (z >> 27)) * 0x94d049bb133111eb) & M64
        z ^= z >> 31
        out.append("%016x" % z)
    return "".join(out)


def make_op(a, prefix):
    """(op(i), warm-up indexes start at n) for this process."""
    value = (b"abcdefghijklmnopqrstuvwxyz" * (a.size // 26 + 1))[:a.size]
    total = a.n + a.w
    if a.diskcache:
        import diskcache
        cache = diskcache.Cache(a.diskcache)
        if a.mode == "read":
            k = key(prefix, 0) if a.path is None else os.path.basename(a.path)

            def op(i):
                v = cache.get(k)
                if v is None or len(v) != a.size:
                    raise SystemExit(f"bench_py diskcache read: {k}: got {None if v is None else len(v)}")
            return op
        keys = [key(prefix, i) for i in range(total)]
        if a.mode == "miss":
            def op(i):
                if cache.get(keys[i]) is not None:
                    raise SystemExit(f"bench_py diskcache miss: {keys[i]} exists")
            return op
        if a.mode == "publish":
            def op(i):
                cache.set(keys[i], value)
            return op
        raise SystemExit(f"bench_py: mode {a.mode} not supported with --diskcache")
    if a.mode == "read":
        p = a.path

        def op(i):
            with open(p, "rb") as f:
                data = f.read()
            if len(data) != a.size:
                raise SystemExit(f"bench_py read: {p}: got {len(data)} bytes, expected {a.size}")
        return op
    paths = [os.path.join(a.dir, key(prefix, i)) for i in range(total)]
    if a.mode == "miss":
        def op(i):
            try:
                open(paths[i], "rb")
            except FileNotFoundError:
                return
            raise SystemExit(f"bench_py miss: {paths[i]} exists")
        return op
    if a.mode == "publish":
        def op(i):
            with open(paths[i], "wb") as f:
                f.write(value)
        return op
    raise SystemExit(f"bench_py: unknown mode {a.mode}")


def run_ops(a, prefix, ready=None, go=None):
    op = make_op(a, prefix)
    for i in range(a.w):
        op(a.n + i)
    if ready is not None:
        ready.put(1)
        go.wait()
    s = [0] * a.n
    clock = time.perf_counter_ns
    for i in range(a.n):
        t0 = clock()
        op(i)
        s[i] = clock() - t0
    return s


def worker(a, j, ready, go, q):
    try:
        s = run_ops(a, f"{a.k}j{j}-", ready, go)
        q.put((j, s, None))
    except BaseException as e:  # report, never hang the parent
        ready.put(0)
        q.put((j, None, repr(e)))


def pct(v, q):
    n = len(v)
    rank = min(n, max(1, int(q * n + 0.999999999)))
    return v[rank - 1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode")
    ap.add_argument("-p", dest="path")
    ap.add_argument("-d", dest="dir")
    ap.add_argument("-k", default="k")
    ap.add_argument("-n", type=int, default=1000)
    ap.add_argument("-w", type=int, default=10)
    ap.add_argument("-s", dest="size", type=int, default=10240)
    ap.add_argument("-j", dest="procs", type=int, default=1)
    ap.add_argument("-o", dest="out")
    ap.add_argument("--diskcache")
    a = ap.parse_args()
    if a.mode == "setup":
        import diskcache
        value = (b"abcdefghijklmnopqrstuvwxyz" * (a.size // 26 + 1))[:a.size]
        with diskcache.Cache(a.diskcache) as c:
            c.set(key(a.k, 0), value)
        print(json.dumps({"mode": "setup", "key": key(a.k, 0), "diskcache": diskcache.__version__}))
        return 0
    wall = None
    if a.procs == 1:
        s = run_ops(a, a.k)
    else:
        ctx = mp.get_context("fork")
        ready, q, go = ctx.Queue(), ctx.Queue(), ctx.Event()
        ps = [ctx.Process(target=worker, args=(a, j, ready, go, q)) for j in range(a.procs)]
        for p in ps:
            p.start()
        oks = [ready.get() for _ in ps]
        t0 = time.perf_counter_ns()
        go.set()
        res = [q.get() for _ in ps]
        wall = (time.perf_counter_ns() - t0) / 1e9
        for p in ps:
            p.join()
        errs = [e for _, _, e in res if e]
        if errs or not all(oks):
            print(f"bench_py {a.mode}: a worker failed: {errs}", file=sys.stderr)
            return 1
        s = [x for _, v, _ in sorted(res, key=lambda r: r[0]) for x in v]
    if a.out:
        with open(a.out, "w") as f:
            f.write("".join(f"{x}\n" for x in s))
    v = sorted(s)
    res = {"mode": a.mode, "n": len(v), "median_us": pct(v, 0.5) / 1e3, "p99_us": pct(v, 0.99) / 1e3,
           "mean_us": sum(v) / len(v) / 1e3, "min_us": v[0] / 1e3, "max_us": v[-1] / 1e3}
    if wall is not None:
        res.update(procs=a.procs, wall_s=wall)
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
