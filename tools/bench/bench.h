/* SPDX-License-Identifier: MIT */
/* bench.h: what the files of memport-bench share: the configuration, the result table, the helpers, the
 * message layout and the entry points of each measurement, table and check. */
#ifndef MEMPORT_BENCH_H
#define MEMPORT_BENCH_H

#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "memport.h"

/* ------------------------------------------------------------------------------------------ */
/* Configuration (main.c).                                                                     */

#define MAX_SIZES   64
#define MAX_MODES   3
#define MIB         ((size_t)1 << 20)
#define KIB         ((size_t)1 << 10)
#define IO_TIMEOUT  ((int64_t)10 * 1000000000) /* every memport call in the benchmark */
#define HDR_BYTES   32                         /* seq, len, timestamp, check */
#define MARK_MIN    48                         /* sizes from here carry a middle and a tail mark */
#define MIN_BYTES   32

enum part { P_TABLE = 1, P_LIMITS = 2, P_STREAM = 4, P_SYSCHECK = 8, P_RSS = 16, P_FANOUT = 32, P_BRIDGE = 64, P_PYTHON = 128 };

struct config {
  size_t sizes[MAX_SIZES];
  size_t nsizes;
  unsigned messages;     /* timed messages per size below 1 MiB */
  unsigned big_messages; /* timed messages per size from 1 MiB */
  unsigned warmup, big_warmup;
  unsigned base_messages; /* futex / spin ping-pong */
  size_t memcpy_bytes;
  unsigned memcpy_reps;
  uint64_t stream_bytes;
  size_t stream_ring;
  unsigned sys_messages;
  size_t rss_ring;
  int modes[MAX_MODES];
  size_t nmodes;
  unsigned parts;
  bool pin, quick, verbose;
  int placement; /* PLACE_* */
  const char *csv, *plot;
};

extern struct config cfg;

/* ------------------------------------------------------------------------------------------ */
/* Placement (util.c; the pinning itself is os_*.c).                                           */

/* A blocking hand-off is a context switch: on one CPU it costs a few microseconds, while waking a
 * peer asleep on another (virtual) CPU can cost much more; spinning needs a CPU per side.
 * PLACE_AUTO runs blocking paths with both processes on cpus[0], spinning ones on cpus[0], cpus[1]. */
#define PLACE_AUTO  0
#define PLACE_SAME  1
#define PLACE_SPLIT 2

extern int cpus[2]; /* the two CPUs the processes are pinned to, -1: not pinned */

/* The CPU for role 0 (sender/producer) or 1 (receiver/consumer) of a spinning or blocking path. */
int cpu_for(int role, bool spinning);
const char *placement_text(bool spinning);

/* ------------------------------------------------------------------------------------------ */
/* What differs by OS (os_linux.c, os_darwin.c).                                               */

extern const bool bench_can_pin;          /* CPU affinity exists here */
extern const bool bench_have_futex;       /* the futex ping-pong can run here */
extern const char bench_port_transport[]; /* what a memport port is made of here */

int pin_to(int cpu); /* pin the calling process to one CPU; 0 when pinned */
void save_affinity(void);
void restore_affinity(void);
void choose_cpus(void);                     /* the two CPUs of the allowed set, into cpus[] */
int usable_cpus(void);                      /* CPUs this process may run on: spinning needs two */
void cpu_model(char *out, size_t cap);      /* leaves out alone when unknown */
void futex_wait_word(_Atomic uint32_t *w, uint32_t val); /* at most 100 ms */
void futex_wake_word(_Atomic uint32_t *w);
void futex_wake_all_word(_Atomic uint32_t *w); /* every waiter */

/* ------------------------------------------------------------------------------------------ */
/* Heap-allocation counter (alloc_count.c, alloc_none.c).                                      */

extern const bool bench_counts_malloc; /* this build counts the library's allocations */
unsigned long alloc_count(void);

/* ------------------------------------------------------------------------------------------ */
/* Small helpers (util.c).                                                                     */

extern int64_t bench_start;
/* python.c: the Python part (tools/bench/python-bench.py), when the binding is built. */
const char *python_unavailable(void);
int run_python(const char *csv);

extern unsigned bench_failures; /* measurements that failed (not merely unavailable) */
extern bool progress_off;       /* the paired target runs report once, not per round */

int64_t now_ns(void);
void sleep_ns(int64_t ns);

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__) || defined(__arm__)
  __asm__ __volatile__("yield" ::: "memory");
#else
  atomic_signal_fence(memory_order_seq_cst);
#endif
}

__attribute__((format(printf, 1, 2))) void progress(const char *fmt, ...);
__attribute__((format(printf, 1, 2))) void progress_more(const char *fmt, ...);
void *shared_alloc(size_t len);
const char *mode_name(int policy);
void size_label(size_t bytes, char *out, size_t cap);
int online_cpus(void);
int cmp_i64(const void *a, const void *b);
double pct_us(const int64_t *sorted, size_t n, double p); /* nearest rank, in microseconds */
double median_of(double *v, int n);                         /* sorts v */
void wait_child(pid_t pid, int *status);
void describe_status(int st, char *out, size_t cap);

/* ------------------------------------------------------------------------------------------ */
/* Results (util.c): one row of the CSV each.                                                  */

#define R_BYTES 1u
#define R_MSGS  2u
#define R_LAT   4u
#define R_GBPS  8u
#define R_SUBS  16u /* fan-out rows: the subscribers column */

struct result {
  char method[12];
  char mode[12];
  size_t bytes;
  unsigned messages;
  double p50, p98, gbps;
  unsigned subscribers;
  unsigned has;
};

extern struct result *results;
extern size_t nresults;

struct result *add_result(const char *method, const char *mode);
/* The first row of (method, mode) with the fields need; bytes 0 matches any size. */
const struct result *find_result(const char *method, const char *mode, size_t bytes, unsigned need);
/* Take the last row if it is a latency row of (method, mode) and drop it from the table. */
bool pop_result(const char *method, const char *mode, double *p50);

/* ------------------------------------------------------------------------------------------ */
/* Message layout (util.c): a header (seq, len, send timestamp, check) at offset 0, a mark in   */
/* the middle and one at the end; the rest is a fixed pattern compared outside the timing.     */

void fill_pattern(unsigned char *p, size_t len);
void stamp(unsigned char *p, size_t len, uint64_t seq); /* marks, then the header with the send time */
int64_t check_marks(const unsigned char *p, size_t len, uint64_t seq); /* the send time or -1 */
void unstamp(unsigned char *p, const unsigned char *pat, size_t len); /* the pattern back at header and marks */
bool check_body(const unsigned char *p, const unsigned char *ref, size_t len);

/* ------------------------------------------------------------------------------------------ */
/* Latency methods (lat.c and lat_*.c, one file per family).                                   */

enum lat_kind { LK_PIPE, LK_UNIX, LK_PORT, LK_RING, LK_ZC };

struct lat_method {
  enum lat_kind kind;
  const char *method; /* CSV name */
  int policy;         /* MEMPORT_WAIT_* for the channel, -1 otherwise */
  char label[16];     /* table column */
};

size_t method_limit(const struct lat_method *m); /* the largest message the path carries */
void chan_options(const struct lat_method *m, size_t maxlen, memport_chan_opts_t *o);
void run_latency(const struct lat_method *m); /* every size of the run; a row per size */

/* The table's columns (report.c). */
extern struct lat_method methods[2 + 1 + 2 * MAX_MODES];
extern size_t nmethods;
void build_methods(void);
const struct result *lat_result(const struct lat_method *m, size_t bytes);
size_t small_size(void);
size_t large_size(void);

/* ------------------------------------------------------------------------------------------ */
/* The machine's limits and throughput.                                                        */

/* pingpong.c: futex or spin ping-pong on one cache line; split: the futex one across two CPUs. */
void run_pingpong(bool futex, bool split);
extern struct futex_split {
  bool have;
  unsigned n;
  double p50, p98;
} futex_split; /* shown next to the one-CPU figure, not in the CSV */

/* memcpy.c: large buffers (DRAM), and 64 KiB blocks through a buffer of the stream ring's size. */
void run_memcpy(void);
void run_memcpy_blocks(void);

#define STREAM_RECORD   (64 * KIB)
#define STREAM_SEGMENTS 8

/* stream.c: 64 KiB records through a memport ring, one process each side. */
void run_stream(int policy);
/* rawring.c: the same records through a bare shared-memory ring, no library: the physical limit. */
void run_rawring(void);
/* The median rate over the segments, from the consumer's clock at the boundaries; sorts nothing in t. */
double segments_gbps(const int64_t *t, uint64_t seg_bytes);

/* ------------------------------------------------------------------------------------------ */
/* Fan-out (fanout.c): one publisher, 1, 2, 4, 8 subscriber processes; topic and copyfanout rows.  */

void run_fanout(void); /* the rows, then the paired rounds of the 1->8 target (pair_fanout) */
void print_fanout(void);
/* The row of method with `subscribers` and bytes that has the fields need. */
const struct result *find_fanout(const char *method, size_t bytes, unsigned subscribers, unsigned need);

/* ------------------------------------------------------------------------------------------ */
/* Bridge (bridge.c with libmemport-bridge, or bridge_none.c): memport-bridge over TCP loopback   */
/* against raw ZeroMQ, paired rounds; rows "bridge" and "zmq", mode "tcp".                       */

#define BRIDGE_NSIZES 2
extern const size_t bridge_sizes[BRIDGE_NSIZES]; /* 64 KiB, 8 MiB */
extern struct bridge_pair {
  bool have;
  int rounds;
  double tput_ratio[BRIDGE_NSIZES], p50_ratio[BRIDGE_NSIZES]; /* bridge / zmq, medians of the rounds' ratios */
} pair_bridge;
void run_bridge(void);
void print_bridge(void);

/* ------------------------------------------------------------------------------------------ */
/* Steady state (syscheck.c with ptrace, or syscheck_none.c).                                  */

#define SYS_RUNS 6 /* ring spin, zero-copy spin, ring block, topic 100 B spin, topic 64 KiB spin */

struct sys_result {
  bool ok;
  bool topic; /* role 0 is the publisher, role 1 the subscriber */
  char what[80];
  unsigned messages;
  unsigned long syscalls[2], allocs[2];
  unsigned long probe_allocs; /* allocations counted in one memport_msg_create: proves the counter sees the library */
  long first_nr[2][6];
  unsigned nfirst[2];
  char err[256];
};

extern struct sys_result sysres[SYS_RUNS];
extern size_t nsysres;
void run_syscheck(void);
const char *syscall_name(long nr); /* NULL when unknown */

/* ------------------------------------------------------------------------------------------ */
/* Resident memory (smaps.c, or rss_none.c).                                                   */

struct rss_report {
  bool ok, notsup;
  size_t ring_capacity;
  size_t ring_objects, ring_resident, ctl_objects, ctl_resident, other_resident, pool_objects, pool_resident;
  char err[200];
};

extern struct rss_report rssrep;
void run_rss(void);

/* ------------------------------------------------------------------------------------------ */
/* Targets (targets.c), tables and CSV (report.c), plot (plot.c).                              */

#define PAIR_ROUNDS 5

struct pair_result {
  bool have;
  int rounds;
  double ratio, chan_p50, base_p50; /* medians over the rounds */
};

extern struct pair_result pair_block, pair_adaptive;
extern struct pair_result pair_fanout; /* chan_p50: topic 1->8 8 MiB p50; base_p50: 1->1 */
extern struct pair_result pair_fanout_floor; /* the same rounds without the library: raw futex fan-out, 1->8 / 1->1 */
extern double pair_fanout_excess; /* median over the rounds of (topic ratio - floor ratio) */
#define FAN_PAIR_ROUNDS 9 /* the fan-out target's rounds: 9 processes on few CPUs vary more */
void run_pair(struct pair_result *out, int policy);

void fmt_us(double us, char *out, size_t cap);
void print_table(void);
void print_limits(void);
void print_targets(void);
int write_csv(const char *path);
int write_plot(const char *path);

#endif
