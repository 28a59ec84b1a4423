#!/usr/bin/python3
# SPDX-License-Identifier: MIT
# producer.py: a Python producer feeding a C consumer (consumer.c) over a named channel: large messages filled in place in loaned pool buffers with NumPy, small ones copied, each with a checksum the consumer verifies.
"""
From the memport sources, after `make` (the binding built; see doc/python.md):

    PYTHONPATH=python/build LD_LIBRARY_PATH=.libs /usr/bin/python3 examples/python/producer.py examples/python/consumer

With a consumer program as argument, the producer starts it (it connects to the service
"py-producer"); without one, it waits for a consumer to connect (run `consumer` yourself).

Message format (little-endian): a 16-byte header {uint32 seq, uint32 nwords, uint64 sum} and
nwords uint32 words; sum is their sum mod 2^64. Sizes cycle from 100 bytes to 4 MiB: the small
ones go through the channel's ring with send() (one copy), the large ones are loans, filled in
place through numpy.frombuffer and sent without a copy. At the end the producer half-closes
(shutdown), and the consumer answers with the count of messages and bytes it checked.
Exit status 0 when the consumer checked everything that was sent.
"""
import subprocess
import sys
import time

import numpy as np

import memport

NAME = "py-producer"
HEAD = np.dtype([("seq", "<u4"), ("nwords", "<u4"), ("sum", "<u8")])
SIZES = [100, 4096, 64 << 10, 1 << 20, 4 << 20]  # bytes, header included
MESSAGES = 500
LOAN_FROM = 64 << 10  # from this size: loan, fill in place, send without a copy


def fill(buf, seq):
    """Write message `seq` into the writable buffer `buf` (a loan or a bytearray), in place."""
    words = np.frombuffer(buf, dtype="<u4", offset=HEAD.itemsize)
    words[:] = np.arange(seq, seq + words.size, dtype=np.uint32)  # different in every message
    head = np.frombuffer(buf, dtype=HEAD, count=1)
    head["seq"], head["nwords"] = seq, words.size
    head["sum"] = words.sum(dtype=np.uint64)
    del words, head  # the views must be gone before the loan is sent


def main():
    consumer = None
    with memport.Service(NAME) as svc:
        if len(sys.argv) > 1:
            consumer = subprocess.Popen([sys.argv[1], NAME])
        print(f"producer: serving {NAME}; waiting for the consumer")
        chan = svc.accept(timeout=30)
    with chan:
        pid, uid, _ = chan.peer
        print(f"producer: consumer pid {pid} (uid {uid}) connected")
        sent_bytes, t0 = 0, time.perf_counter()
        for seq in range(MESSAGES):
            size = SIZES[seq % len(SIZES)]
            if size >= LOAN_FROM:
                loan = chan.loan(size, timeout=10)   # a pool buffer, writable, no copy to come
                fill(loan, seq)
                loan.send(timeout=10)
            else:
                buf = bytearray(size)
                fill(buf, seq)
                chan.send(buf, timeout=10)           # one copy, into the ring
            sent_bytes += size
        secs = time.perf_counter() - t0
        chan.shutdown()                              # the consumer gets Closed after the last one
        reply = np.frombuffer(chan.recv_bytes(timeout=30), dtype="<u8")
    print(f"producer: sent {MESSAGES} messages, {sent_bytes / 2**20:.1f} MiB in {secs:.3f} s "
          f"({sent_bytes / 2**30 / secs:.2f} GiB/s); the consumer checked {int(reply[0])} messages, "
          f"{int(reply[1])} bytes")
    ok = int(reply[0]) == MESSAGES and int(reply[1]) == sent_bytes
    if consumer is not None:
        ok = consumer.wait(timeout=30) == 0 and ok
    print("producer:", "every message delivered and checked" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
