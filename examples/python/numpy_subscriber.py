#!/usr/bin/python3
# SPDX-License-Identifier: MIT
# numpy_subscriber.py: a NumPy subscriber of a C camera's 1080p topic: each frame a NumPy array over the camera's own pages, checked and summed in place, with the time per frame and the resident memory.
"""
The camera is examples/python/frame_publisher.c (camera-fanout's camera on its own, with the same
frame format: 1920 x 1080 x 3 bytes, a 16-byte header {uint32 magic "MPFR", uint32 seq, uint64
sample_sum} and the pixels; sample_sum = s*31 + byte over every 4096th byte after the header).

From the memport sources, after `make` (the binding built; see doc/python.md):

    examples/python/frame-publisher -t camera0 -f 300 &        # or build it by hand: see its header
    PYTHONPATH=python/build LD_LIBRARY_PATH=.libs /usr/bin/python3 examples/python/numpy_subscriber.py camera0

Each frame is `numpy.frombuffer(msg, ...)`: no copy; the header is read through a structured
dtype, the checksum from a strided view, and the pixels summed in place (interval: from one
frame to the next, the camera's pace; work: this program's time on the frame, receive to
release, reading all 6 MB of it). Resident memory is
read from /proc/self/statm: the mapped frames are shared pages (the camera's), so reading
hundreds of megabytes of frames adds almost nothing to this process's private memory.
Exit status 0 when every frame received was intact and in order.
"""
import os
import sys
import time

import numpy as np

import memport

WIDTH, HEIGHT = 1920, 1080
FRAME_BYTES = WIDTH * HEIGHT * 3
FRAME_MAGIC = 0x4D504652  # "MPFR"
HEAD = np.dtype([("magic", "<u4"), ("seq", "<u4"), ("sample_sum", "<u8")])
PAGE = os.sysconf("SC_PAGE_SIZE")

# sample_sum as a polynomial: s = sum(b_k * 31^(n-1-k)) mod 2^64, computed with wrapping uint64.
_N_SAMPLES = len(range(HEAD.itemsize, FRAME_BYTES, 4096))
with np.errstate(over="ignore"):
    _POWERS = np.concatenate([np.cumprod(np.full(_N_SAMPLES - 1, 31, dtype=np.uint64))[::-1],
                              np.ones(1, dtype=np.uint64)])


def statm_kib():
    """(resident, shared, private) KiB of this process, from /proc/self/statm."""
    with open("/proc/self/statm") as f:
        fields = f.read().split()
    resident, shared = int(fields[1]) * PAGE // 1024, int(fields[2]) * PAGE // 1024
    return resident, shared, resident - shared


def sample_sum(frame):
    samples = frame[HEAD.itemsize::4096]          # a strided view of the frame, no copy
    with np.errstate(over="ignore"):
        return int((samples.astype(np.uint64) * _POWERS).sum(dtype=np.uint64))


def main():
    topic = sys.argv[1] if len(sys.argv) > 1 else "camera0"
    sub = memport.Subscriber(topic, timeout=30)
    rss0 = statm_kib()
    print(f"numpy_subscriber: joined {topic}; resident {rss0[0]} KiB (private {rss0[2]} KiB)")
    print(f"{'frame':>6} {'seq':>6} {'interval ms':>11} {'work ms':>8} {'mean px':>8} {'resident KiB':>13} {'private KiB':>12}")
    ok, received, expect, first_seq = True, 0, None, None
    t_prev = t_start = time.perf_counter()
    try:
        while True:
            try:
                msg = sub.recv(timeout=30)
            except memport.Closed:
                break  # the camera ended in order
            t_got = time.perf_counter()
            with msg:
                frame = np.frombuffer(msg, dtype=np.uint8)            # the camera's pages
                head = np.frombuffer(msg, dtype=HEAD, count=1)[0]     # read in place too
                seq = int(head["seq"])
                if len(msg) != FRAME_BYTES or int(head["magic"]) != FRAME_MAGIC or \
                        int(head["sample_sum"]) != sample_sum(frame):
                    print(f"frame {seq}: damaged")
                    ok = False
                elif expect is not None and seq < expect:
                    print(f"frame {seq} after {expect - 1}")
                    ok = False
                pixels = frame[HEAD.itemsize:]
                mean = float(pixels.sum(dtype=np.uint64)) / pixels.size  # reads the whole frame, copies nothing
                del frame, head, pixels                                     # no view outlives the message
            if first_seq is None:
                first_seq = seq
            expect = seq + 1
            received += 1
            now = time.perf_counter()
            if received <= 5 or received % 30 == 0:
                r = statm_kib()
                print(f"{received:6d} {seq:6d} {(now - t_prev) * 1e3:11.2f} {(now - t_got) * 1e3:8.2f} {mean:8.2f} "
                      f"{r[0]:13d} {r[2]:12d}")
            t_prev = now
    finally:
        missed = sub.missed
        sub.close()
    secs = time.perf_counter() - t_start
    rss1 = statm_kib()
    grew = rss1[2] - rss0[2]
    print(f"numpy_subscriber: {received} frames ({received * FRAME_BYTES / 2**20:.0f} MiB) in {secs:.2f} s, "
          f"missed {missed}; private memory {rss0[2]} -> {rss1[2]} KiB ({grew:+d} KiB; one frame is "
          f"{FRAME_BYTES // 1024} KiB), resident {rss0[0]} -> {rss1[0]} KiB (shared pages of the camera's pool)")
    if received == 0:
        print("numpy_subscriber: no frame received")
        ok = False
    if grew > FRAME_BYTES // 1024 // 2:
        print("numpy_subscriber: private memory grew by more than half a frame: a copy?")
        ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
