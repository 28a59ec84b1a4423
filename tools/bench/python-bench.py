#!/usr/bin/python3
# SPDX-License-Identifier: MIT
# python-bench.py: memport-bench's Python part: a Python subscriber of 8 MiB frames against a C one, and memport against multiprocessing.Queue and shared_memory + Queue, with the targets (PASS/MISS) and rows of method "python".
"""
Run with Debian's /usr/bin/python3, the binding importable (PYTHONPATH: the build tree's package
directory, LD_LIBRARY_PATH: .libs) and the C helper tools/bench/python-peer (python_peer.c) built:

    /usr/bin/python3 tools/bench/python-bench.py [--quick] [--c-helper PATH] [--csv FILE] [--rounds N]

memport-bench runs it for `--only python` (and in a full run when the binding is built).

1. Frames: a C publisher (python-peer pub) publishes 8 MiB loaned frames (overflow block, depth 8,
   16 pool buffers), writing only each frame's number into its first 8 bytes. The subscriber reads
   that value and adds it up, then releases the frame: in C (python-peer sub), and in Python here
   (`np.frombuffer(msg, np.uint64, count=1)[0]`, and `struct.unpack_from` for reference). Frame
   rate = frames from the first to the last received, per second; rounds alternate C and Python,
   the median is reported. Target: Python >= 0.8x C.
2. Stdlib: one producer process (multiprocessing, fork) sends messages of 100 B, 64 KiB and 8 MiB to
   the consumer (this process), which reads the first 8 bytes of each (the message number) and
   checks it:
     memport        a Channel.pair(); the producer loans a pool buffer (send() of a bytes object
                    at 100 B, through the ring), writes the number in place and sends it; the
                    consumer reads it in place (struct.unpack_from on the Message) and releases it
     queue          multiprocessing.Queue(maxsize=8): put() of a bytes object, pickled and copied
                    through a pipe; get() on the other side
     shm-queue      multiprocessing.shared_memory: 16 slots of the message size; the producer
                    writes a slot and puts its index on a Queue, the consumer reads it in place and
                    gives the index back on a second Queue
   Target: memport >= 10x the queue at 8 MiB (messages per second).
Exit status 0 when every measurement ran (the targets are reporting only, as in memport-bench), 1
when one failed, 2 on bad arguments.
"""
import argparse
import multiprocessing as mp
import os
import shutil
import statistics
import struct
import subprocess
import sys
import time
from multiprocessing import shared_memory

import numpy as np

try:
    import memport
except ImportError as e:  # noqa: the message says what to set
    print(f"python-bench: cannot import memport ({e}); set PYTHONPATH to the build tree's package "
          "directory and LD_LIBRARY_PATH to .libs", file=sys.stderr)
    sys.exit(1)

MIB = 1 << 20
FRAME = 8 * MIB
SIZES = [100, 64 << 10, 8 * MIB]
CTX = mp.get_context("fork")
failures = 0
rows = []  # memport-bench's CSV: method,mode,bytes,messages,p50_us,p98_us,gbps,subscribers


def progress(text):
    print(f"python-bench: {text}", file=sys.stderr, flush=True)


def fail(what, why):
    global failures
    failures += 1
    progress(f"{what}: FAILED: {why}")


def row(mode, nbytes, messages, secs):
    gbps = nbytes * messages / secs / 1e9 if secs > 0 else 0.0
    rows.append(("python", mode, nbytes, messages, "", "", f"{gbps:.3f}", ""))


def find_helper(given):
    if given:
        return given
    here = os.path.dirname(os.path.abspath(__file__))
    for cand in (os.environ.get("MEMPORT_PYTHON_PEER"), os.path.join(here, "python-peer"),
                 os.path.join("tools", "bench", "python-peer")):
        if cand and os.access(cand, os.X_OK):
            return cand
    return shutil.which("python-peer")


# --- 1. 8 MiB frames: Python subscriber against C subscriber ------------------------------------

def start_publisher(helper, topic, frames):
    return subprocess.Popen([helper, "pub", topic, str(frames), str(FRAME)])


def c_subscriber(helper, topic, frames):
    pub = start_publisher(helper, topic, frames)
    try:
        sub = subprocess.run([helper, "sub", topic], capture_output=True, text=True, timeout=120)
    finally:
        pub_rc = pub.wait(timeout=120)
    if sub.returncode != 0 or pub_rc != 0:
        raise RuntimeError(f"C subscriber exit {sub.returncode}, publisher exit {pub_rc}: {sub.stderr.strip()}")
    n, secs, total, cpu = sub.stdout.split()
    n, secs, total, cpu = int(n), float(secs), int(total), float(cpu)
    if n != frames or total != frames * (frames - 1) // 2:
        raise RuntimeError(f"C subscriber: {n} frames, sum {total}")
    return n, secs, cpu


def py_subscriber(helper, topic, frames, how):
    pub = start_publisher(helper, topic, frames)
    n = total = 0
    t0 = t1 = 0.0
    frombuffer, u64, unpack_from, clock = np.frombuffer, np.uint64, struct.unpack_from, time.perf_counter
    cpu0 = cpu1 = 0.0
    try:
        sub = memport.Subscriber(topic, timeout=30)
        try:
            while True:
                try:
                    msg = sub.recv(timeout=30)
                except memport.Closed:
                    break
                if how == "numpy":
                    total += int(frombuffer(msg, u64, count=1)[0])  # the array is gone before release
                else:
                    total += unpack_from("<Q", msg)[0]
                msg.release()
                t1 = clock()
                if n == 0:
                    t0, cpu0 = t1, time.process_time()
                n += 1
            cpu1 = time.process_time()
        finally:
            sub.close()
    finally:
        pub_rc = pub.wait(timeout=120)
    if pub_rc != 0 or n != frames or total != frames * (frames - 1) // 2:
        raise RuntimeError(f"Python subscriber: {n} frames, sum {total}, publisher exit {pub_rc}")
    return n, t1 - t0, cpu1 - cpu0


def run_frames(helper, frames, rounds):
    res = {"c": [], "numpy": [], "struct": []}
    if helper is None:
        fail("frames", "no C helper (python-peer; --c-helper PATH)")
        return res
    progress(f"8 MiB frames, {frames} per run, {rounds} rounds of C / Python (numpy) / Python (struct)")
    for r in range(rounds):
        for kind in ("c", "numpy", "struct"):
            topic = f"pybench-{os.getpid()}-{r}-{kind}"
            try:
                if kind == "c":
                    n, secs, cpu = c_subscriber(helper, topic, frames)
                else:
                    n, secs, cpu = py_subscriber(helper, topic, frames, kind)
            except (RuntimeError, memport.Error, subprocess.SubprocessError, OSError, ValueError) as e:
                fail(f"frames {kind}", e)
                continue
            if n > 1 and secs > 0:
                res[kind].append(((n - 1) / secs, n, secs, cpu / n * 1e6))
    for kind, runs in res.items():
        if runs:
            fps, n, secs, _ = sorted(runs)[len(runs) // 2]
            row(f"sub-{kind if kind == 'c' else 'py-' + kind}", FRAME, n, secs)
    return res


# --- 2. memport against multiprocessing.Queue and shared_memory + Queue --------------------------

def producer_memport(end, other, n, size, ready):
    other.close()
    buf = bytearray(size)
    ready.set()
    for i in range(n):
        if size < 4096:
            struct.pack_into("<Q", buf, 0, i)
            end.send(buf, timeout=60)
        else:
            loan = end.loan(size, timeout=60)
            struct.pack_into("<Q", loan, 0, i)
            loan.send(timeout=60)
    end.shutdown()
    end.recv_bytes(timeout=60)  # the consumer's "done": this end stays open until then


def consume_memport(n, size):
    a, b = memport.Channel.pair()
    ready = CTX.Event()
    p = CTX.Process(target=producer_memport, args=(b, a, n, size, ready))
    p.start()
    b.close()  # this process's copy of the child's end
    ready.wait(30)
    unpack_from, clock = struct.unpack_from, time.perf_counter
    t0 = t1 = 0.0
    try:
        for i in range(n):
            msg = a.recv(timeout=60)
            if unpack_from("<Q", msg)[0] != i or len(msg) != size:
                raise RuntimeError(f"memport: message {i} wrong")
            msg.release()
            t1 = clock()
            if i == 0:
                t0 = t1
        a.send(b"done", timeout=10)
    finally:
        p.join(60)
        a.close()
    if p.exitcode != 0:
        raise RuntimeError(f"memport producer exit {p.exitcode}")
    return t1 - t0


def producer_queue(q, n, size):
    buf = bytearray(size)
    for i in range(n):
        struct.pack_into("<Q", buf, 0, i)
        q.put(bytes(buf))


def consume_queue(n, size):
    q = CTX.Queue(maxsize=8)
    p = CTX.Process(target=producer_queue, args=(q, n, size))
    p.start()
    clock = time.perf_counter
    t0 = t1 = 0.0
    try:
        for i in range(n):
            m = q.get(timeout=60)
            if struct.unpack_from("<Q", m)[0] != i or len(m) != size:
                raise RuntimeError(f"queue: message {i} wrong")
            del m
            t1 = clock()
            if i == 0:
                t0 = t1
    finally:
        p.join(60)
    if p.exitcode != 0:
        raise RuntimeError(f"queue producer exit {p.exitcode}")
    return t1 - t0


SLOTS = 16


def producer_shm(name, full, free, n, size):
    shm = shared_memory.SharedMemory(name=name)
    try:
        for i in range(n):
            slot = free.get(timeout=60)
            struct.pack_into("<Q", shm.buf, slot * size, i)
            full.put(slot)
    finally:
        shm.close()


def consume_shm(n, size):
    shm = shared_memory.SharedMemory(create=True, size=SLOTS * size)
    full, free = CTX.Queue(), CTX.Queue()
    for s in range(SLOTS):
        free.put(s)
    p = CTX.Process(target=producer_shm, args=(shm.name, full, free, n, size))
    p.start()
    clock = time.perf_counter
    t0 = t1 = 0.0
    try:
        for i in range(n):
            slot = full.get(timeout=60)
            if struct.unpack_from("<Q", shm.buf, slot * size)[0] != i:
                raise RuntimeError(f"shm-queue: message {i} wrong")
            free.put(slot)
            t1 = clock()
            if i == 0:
                t0 = t1
    finally:
        p.join(60)
        shm.close()
        shm.unlink()
    if p.exitcode != 0:
        raise RuntimeError(f"shm-queue producer exit {p.exitcode}")
    return t1 - t0


def memport_factor(kind, size):
    """memport runs this many times more messages than the stdlib methods, to last long enough to time."""
    return 1 if kind != "memport" else 100 if size >= MIB else 10


STDLIB = {"memport": consume_memport, "queue": consume_queue, "shm-queue": consume_shm}


def run_stdlib(counts, rounds):
    res = {}
    for size in SIZES:
        progress(f"{size} B: memport / queue / shm-queue, {counts[size]} messages ({counts[size] * memport_factor('memport', size)} "
                 f"for memport), "
                 f"{rounds} rounds")
        for r in range(rounds):
            for kind, fn in STDLIB.items():
                n = counts[size] * memport_factor(kind, size)
                try:
                    secs = fn(n, size)
                except (RuntimeError, memport.Error, OSError, ValueError) as e:
                    fail(f"{kind} {size} B", e)
                    continue
                if secs > 0:
                    res.setdefault((kind, size), []).append((n - 1) / secs)
    for (kind, size), rates in res.items():
        rate = statistics.median(rates)
        n = counts[size] * memport_factor(kind, size)
        row(kind, size, n, (n - 1) / rate)
    return res


# --- the report ---------------------------------------------------------------------------------

def fmt_rate(v):
    return f"{v:.0f}" if v >= 100 else f"{v:.1f}"


def verdict(what, value, have, limit, detail=""):
    if not have:
        print(f"  {what:<62} n/a{'  ' + detail if detail else ''}")
        return
    ok = value >= limit
    print(f"  {what:<62} {value:7.2f}  (>= {limit:.2f})  {'PASS' if ok else 'MISS'}{'  ' + detail if detail else ''}")


def size_label(b):
    return f"{b // MIB} MiB" if b >= MIB and b % MIB == 0 else f"{b // 1024} KiB" if b >= 1024 and b % 1024 == 0 else f"{b} B"


def main():
    ap = argparse.ArgumentParser(description="memport-bench's Python part")
    ap.add_argument("--quick", action="store_true", help="short runs")
    ap.add_argument("--c-helper", help="path of python-peer (default: beside this script, then tools/bench/)")
    ap.add_argument("--csv", help="append the rows (memport-bench's CSV columns) to this file")
    ap.add_argument("--rounds", type=int, default=0, help="rounds per measurement (median reported)")
    ap.add_argument("--only", default="frames,stdlib", help="frames, stdlib or both")
    args = ap.parse_args()
    parts = set(args.only.split(","))
    if not parts <= {"frames", "stdlib"} or args.rounds < 0:
        ap.error("--only: frames,stdlib; --rounds: >= 1")
    rounds = args.rounds or (1 if args.quick else 3)
    frames = 500 if args.quick else 3000
    counts = {100: 5000 if args.quick else 20000, 64 << 10: 2000 if args.quick else 5000,
              8 * MIB: 32 if args.quick else 100}
    helper = find_helper(args.c_helper)

    version = getattr(memport, "__version__", None) or getattr(memport, "version", "")
    version = version() if callable(version) else version
    print(f"\npython-bench: memport {version} from {os.path.dirname(memport.__file__)}, "
          f"Python {sys.version.split()[0]} ({sys.executable}), NumPy {np.__version__}, {os.cpu_count()} CPUs")
    fr = run_frames(helper, frames, rounds) if "frames" in parts else {}
    sl = run_stdlib(counts, rounds) if "stdlib" in parts else {}

    def med(kind, i=0):
        runs = fr.get(kind) or []
        return statistics.median([r[i] for r in runs]) if runs else None

    if "frames" in parts:
        print(f"\nPython subscriber of 8 MiB frames from a C publisher (frames/s, median of {rounds} rounds of {frames})")
        print(f"  {'subscriber':<36} {'frames/s':>10} {'GB/s':>9} {'us/frame':>9} {'x C':>6} {'CPU us/frame':>13}")
        c = med("c")
        for kind, label in (("c", "C (memport_sub_recv + release)"), ("numpy", "Python, np.frombuffer(msg)[0]"),
                            ("struct", "Python, struct.unpack_from(msg)")):
            v = med(kind)
            if v is None:
                print(f"  {label:<36} {'n/a':>10}")
                continue
            x = f"{v / c:.2f}" if c else "n/a"
            print(f"  {label:<36} {fmt_rate(v):>10} {v * FRAME / 1e9:9.1f} {1e6 / v:9.2f} {x:>6} {med(kind, 3):13.2f}")
        print("  each frame a loaned pool buffer whose first 8 bytes the subscriber reads and adds up (GB/s: frame\n"
              "  bytes handed over, not read); publisher overflow block, depth 8, 16 buffers. CPU us/frame: the\n"
              "  subscriber's CPU time (user + system, from its first frame to the end) per frame. A subscriber\n"
              "  that keeps up sleeps and is woken for every frame, one that lags drains its queue without\n"
              "  sleeping: the frame rate depends on that rhythm as much as on the cost per frame")

    if "stdlib" in parts:
        print(f"\nmemport against the stdlib, one producer process to one consumer (messages/s, median of {rounds} rounds)")
        print(f"  {'bytes':<9} {'memport':>12} {'queue':>12} {'shm-queue':>12}  x queue  x shm-queue")
        for size in SIZES:
            cells = []
            for kind in STDLIB:
                v = sl.get((kind, size))
                cells.append(statistics.median(v) if v else None)
            line = f"  {size:<9}" + "".join(f" {fmt_rate(v) if v else 'n/a':>12}" for v in cells)
            m, q, s = cells
            line += f"  {m / q:7.1f}" if m and q else f"  {'n/a':>7}"
            line += f"  {m / s:10.1f}" if m and s else f"  {'n/a':>10}"
            print(line)
        print("  memport: Channel.pair, loan + send (send of bytes at 100 B), recv read in place + release;\n"
              "  queue: multiprocessing.Queue(maxsize=8) of bytes (pickled, copied through a pipe);\n"
              "  shm-queue: multiprocessing.shared_memory, 16 slots, slot numbers over two Queues")

    print("\nTargets (issue 12; reporting only)")
    if "frames" in parts:
        c, p = med("c"), med("numpy")
        verdict("8 MiB frames: Python subscriber / C subscriber (frames/s)", p / c if p and c else 0, bool(p and c), 0.8,
                f"{fmt_rate(p)} / {fmt_rate(c)} frames/s" if p and c else "")
    if "stdlib" in parts:
        m, q = sl.get(("memport", 8 * MIB)), sl.get(("queue", 8 * MIB))
        m, q = (statistics.median(m) if m else None), (statistics.median(q) if q else None)
        verdict("8 MiB: memport / multiprocessing.Queue (messages/s)", m / q if m and q else 0, bool(m and q), 10.0,
                f"{fmt_rate(m)} / {fmt_rate(q)} messages/s" if m and q else "")

    if args.csv:
        new = not os.path.exists(args.csv) or os.path.getsize(args.csv) == 0
        with open(args.csv, "a") as f:
            if new:
                f.write("method,mode,bytes,messages,p50_us,p98_us,gbps,subscribers\n")
            for r in rows:
                f.write(",".join(str(x) for x in r) + "\n")
        print(f"\nCSV: {len(rows)} rows appended to {args.csv}")
    if failures:
        print(f"\n{failures} measurement(s) FAILED (see the progress output on stderr)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
