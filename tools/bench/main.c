/* SPDX-License-Identifier: MIT */
/* main.c: memport-bench's command line and run order: parses the options, runs the parts asked for (latency
 * table, limits, stream, steady state, resident memory) and prints the tables, targets, CSV and plot. */
#include "bench.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>

static const size_t default_sizes[] = {100,  200,  500,  1024, 2048,    3072,    4096,   5120,
                                       6144, 7168, 8192, 9216, 1048576, 5242880, 7340032};

static void usage(FILE *out) {
  fprintf(out,
          "Usage: memport-bench [OPTIONS]\n"
          "Measure memport against pipes and unix sockets on this machine, and the machine's limits.\n"
          "The table goes to stdout, progress to stderr. A default run takes under a minute.\n"
          "\n"
          "  --quick            a short run (200 messages per size, 5 from 1 MiB, small stream) for CI\n"
          "  --sizes LIST       message sizes in bytes, comma-separated (suffixes k, m: KiB, MiB);\n"
          "                     default: the seed's 100,200,500,1024,...,9216,1048576,5242880,7340032\n"
          "  --messages N       timed messages per size (default 2000)\n"
          "  --big-messages N   timed messages per size from 1 MiB on the copying paths (default 100)\n"
          "  --modes LIST       channel wait policies for the table: block,adaptive,spin (default block,adaptive)\n"
          "  --only LIST        run only these parts: table,limits,stream,syscheck,rss,fanout,bridge,python\n"
          "                     (default: all; python only where the Python binding is built)\n"
          "  --syscheck         same as --only syscheck\n"
          "  --stream-mib N     MiB streamed through the ring per wait policy (default 1024)\n"
          "  --stream-ring N    ring capacity in KiB for the stream (default 1024)\n"
          "  --csv FILE         write every figure as CSV: method,mode,bytes,messages,p50_us,p98_us,gbps,subscribers\n"
          "  --plot FILE        draw latency against size (log-log) with gnuplot (PNG with pngcairo or png,\n"
          "                     else SVG, else text); without gnuplot a notice, not a failure\n"
          "  --placement MODE   auto (default): blocking paths on one CPU, spinning ones on two; same: every\n"
          "                     path on one CPU; split: every path on two CPUs\n"
          "  --no-pin           do not pin the processes at all (the scheduler places them)\n"
          "  -v, --verbose      details on stderr (the mappings the resident-memory figure counts)\n"
          "  -h, --help         this text\n"
          "\n"
          "Method. Every latency figure is one-way: the sender writes CLOCK_MONOTONIC into the message header\n"
          "just before the send call; the receiver reads the clock after the receive call returned and it\n"
          "checked the header and the marks in the middle and at the end of the payload. The receiver then\n"
          "compares the whole payload with the expected pattern (outside the timing) and acknowledges with\n"
          "8 bytes over the same path, so exactly one message is in flight. The two processes (fork) are\n"
          "pinned (see --placement).\n"
          "  pipe       write()/read() of the whole message on a pipe, ack on a second pipe\n"
          "  unix       SOCK_STREAM socketpair, write()/read() of the whole message\n"
          "  port       memport_msg_set_bytes + memport_port_send / memport_port_recv (<= MEMPORT_MSG_MAX_BYTES)\n"
          "  ring       memport_chan_send (copy into the ring) / memport_chan_recv in place + release; the\n"
          "             ring is large enough for every size and wrapped twice before the timing starts\n"
          "  zerocopy   memport_chan_alloc, payload written in place, timed from memport_chan_send_buf to\n"
          "             memport_chan_recv (a read-only view of the same pages) + release; each pool buffer\n"
          "             is written and compared in full once, header and marks on every message\n"
          "  futex      raw futex ping-pong on one shared cache line (FUTEX_WAIT / FUTEX_WAKE)\n"
          "  spin       busy-poll ping-pong on one shared cache line\n"
          "  memcpy     one process, large buffers (bound by DRAM), median of several copies; and 64 KiB blocks\n"
          "             copied one after another into a buffer of the stream ring's size (in cache)\n"
          "  stream     64 KiB records, memport_ring_write in one process, memport_ring_read in the other\n"
          "  rawring    the same records through a bare ring of the same size in a shared anonymous mapping, no\n"
          "             library: copy in, release-store a counter; spin on it, copy out (the physical limit)\n"
          "  topic      fan-out: one publisher, 1/2/4/8 subscriber processes, 100 B, 64 KiB, 8 MiB; memport_pub_loan,\n"
          "             header and marks written in place, memport_pub_publish; each subscriber memport_sub_recv (a\n"
          "             read-only view of the same pages; 100 B travels inline in its queue), checks, releases\n"
          "  copyfanout the same message memport_chan_send-copied into one channel per subscriber, in turn\n"
          "             Fan-out latency runs until the LAST subscriber has the message: each writes its one-way time\n"
          "             into its own cache line and counts itself in; the last one posts a semaphore the publisher\n"
          "             sleeps on (nothing on the measured path). Throughput: 8 MiB messages back to back, payload\n"
          "             counted once per message, until the last subscriber has the last. Every fan-out wait blocks;\n"
          "             the publisher on the first CPU, subscribers alternating over the second and the first: with\n"
          "             more processes than CPUs the last subscriber queues for a CPU (the scheduler is measured too)\n"
          "  bridge     a topic carried by memport-bridge over TCP 127.0.0.1: the bench publishes (loan, marks in place,\n"
          "             publish), a forked export bridge lends each view to ZeroMQ, a forked import bridge copies it into a\n"
          "             local topic, a forked subscriber receives it; 64 KiB and 8 MiB, throughput and latency\n"
          "  zmq        the same over a raw ZeroMQ PUSH/PULL pair (zmq_send, zmq_msg_recv), no memport, same high-water\n"
          "             mark; both receivers check header and marks, post a memport semaphore back (latency: one in\n"
          "             flight); each round runs both, rows are medians over the rounds (built with libzmq only)\n"
          "  python     tools/bench/python-bench.py, run last with the build tree's binding (only where it is built):\n"
          "             8 MiB frames from a C publisher received by a Python subscriber (np.frombuffer, one value read\n"
          "             per frame) against a C subscriber, and memport against multiprocessing.Queue and\n"
          "             shared_memory + Queue at 100 B, 64 KiB, 8 MiB; its rows have method python\n"
          "\n"
          "Targets: the ratios the issue names, PASS/MISS from this run's figures (reporting only). The two\n"
          "latency ratios (channel / futex, channel / spin at 100 B) come from %d back-to-back rounds of\n"
          "baseline then channel, median ratio: the host moves this machine's CPUs around between runs.\n"
          "The stream target compares each ring stream with the raw ring of the same run (same records, same\n"
          "working set). The fan-out latency target (topic 8 MiB, 1->8 / 1->1) is taken from %d paired rounds too,\n"
          "each also measuring the same fan-out without the library (Linux: one FUTEX_WAKE of 1 or 8 processes\n"
          "sleeping on one word, same placement): that floor's ratio is printed beside the target's.\n"
          "Steady state (--syscheck, Linux): two processes run a channel ping-pong of 100 B messages in spin\n"
          "mode (and a topic, publisher and one subscriber, 100 B inline and 64 KiB zero-copy, acked through\n"
          "shared memory); after 1000 warm-up round trips the parent attaches to both with ptrace (PTRACE_SEIZE +\n"
          "PTRACE_SYSCALL) and counts every system call entry between two flags in shared memory; heap\n"
          "allocations are counted by malloc/calloc/realloc/posix_memalign/aligned_alloc definitions in this\n"
          "program that forward to glibc (libmemport's calls bind to them; not in sanitizer builds, where\n"
          "the counts read 0 by construction). Blocking mode is shown for contrast (it sleeps in futex).\n"
          "Resident memory (Linux): a channel is opened and both rings exercised over 8 wraps; the\n"
          "mappings added since before the open are read from /proc/self/smaps, each shared memory object\n"
          "counted once by mincore (a mirrored ring counts once), anonymous private mappings (heap,\n"
          "malloc'd memory) by their Rss growth; library code and data pages are not counted;\n"
          "objects larger than the ring are the pool and reported apart.\n",
          PAIR_ROUNDS, PAIR_ROUNDS);
}

static size_t parse_size(const char *s, bool *ok) {
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || end == s) {
    *ok = false;
    return 0;
  }
  if (*end == 'k' || *end == 'K') {
    v *= 1024;
    end++;
  } else if (*end == 'm' || *end == 'M') {
    v *= 1024 * 1024;
    end++;
  }
  if (*end != 0 && *end != ',') *ok = false;
  return (size_t)v;
}

static bool parse_list(const char *arg, bool (*item)(const char *tok, size_t len)) {
  const char *p = arg;
  while (*p) {
    const char *e = strchr(p, ',');
    size_t len = e ? (size_t)(e - p) : strlen(p);
    if (len > 0 && !item(p, len)) return false;
    p += len;
    if (*p == ',') p++;
  }
  return true;
}

static bool size_item(const char *tok, size_t len) {
  char buf[32];
  bool ok = true;
  if (len >= sizeof buf || cfg.nsizes >= MAX_SIZES) return false;
  memcpy(buf, tok, len);
  buf[len] = 0;
  size_t v = parse_size(buf, &ok);
  if (!ok || v < MIN_BYTES || v > ((size_t)1 << 30)) return false;
  cfg.sizes[cfg.nsizes++] = v;
  return true;
}

static bool mode_item(const char *tok, size_t len) {
  int m = -1;
  if (len == 5 && strncmp(tok, "block", 5) == 0) m = MEMPORT_WAIT_BLOCK;
  if (len == 4 && strncmp(tok, "spin", 4) == 0) m = MEMPORT_WAIT_SPIN;
  if (len == 8 && strncmp(tok, "adaptive", 8) == 0) m = MEMPORT_WAIT_ADAPTIVE;
  if (m < 0 || cfg.nmodes >= MAX_MODES) return false;
  for (size_t i = 0; i < cfg.nmodes; i++)
    if (cfg.modes[i] == m) return true;
  cfg.modes[cfg.nmodes++] = m;
  return true;
}

static bool part_item(const char *tok, size_t len) {
  static const struct {
    const char *name;
    unsigned bit;
  } parts[] = {{"table", P_TABLE}, {"limits", P_LIMITS}, {"stream", P_STREAM}, {"syscheck", P_SYSCHECK}, {"rss", P_RSS},
               {"fanout", P_FANOUT}, {"bridge", P_BRIDGE}, {"python", P_PYTHON}};
  for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++)
    if (strlen(parts[i].name) == len && strncmp(parts[i].name, tok, len) == 0) {
      cfg.parts |= parts[i].bit;
      return true;
    }
  return false;
}

static bool parse_uint(const char *s, unsigned long min, unsigned long max, unsigned long *out) {
  char *end;
  errno = 0;
  unsigned long v = strtoul(s, &end, 10);
  if (errno || end == s || *end || v < min || v > max) return false;
  *out = v;
  return true;
}

static void print_header(void) {
  struct utsname u;
  char cpu[128] = "unknown CPU";
  cpu_model(cpu, sizeof cpu);
  printf("memport-bench %s on ", memport_version_string());
  if (uname(&u) == 0)
    printf("%s %s %s", u.sysname, u.release, u.machine);
  printf(", %d CPUs (%s)\n", online_cpus(), cpu);
  if (cpus[0] >= 0 && cfg.placement == PLACE_AUTO)
    printf("Placement (sched_setaffinity): blocking paths (pipe, unix, port, channel block, futex, stream block) run\n"
           "both processes on CPU %d, where a hand-off is one context switch; spinning paths (channel adaptive/spin, spin\n"
           "ping-pong, raw ring, stream adaptive/spin) run them on CPUs %d and %d. --placement split|same to change.\n",
           cpus[0], cpus[0], cpus[1]);
  else if (cpus[0] >= 0)
    printf("Placement (sched_setaffinity, --placement): every path runs %s\n",
           cfg.placement == PLACE_SAME ? "both processes on one CPU" : "sender/producer and receiver/consumer on two CPUs");
  else
    printf("Processes not pinned (%s)\n", !bench_can_pin ? "no CPU affinity on this platform"
                                         : cfg.pin     ? "fewer than two CPUs allowed"
                                                       : "--no-pin");
  printf("One-way latency = receiver's CLOCK_MONOTONIC after receive and header/mark check minus the\n"
         "sender's just before the send call (shared clock), one message in flight; see -h for details.\n");
  fflush(stdout);
}

int main(int argc, char **argv) {
  static const struct option longopts[] = {
      {"quick", no_argument, NULL, 'q'},       {"sizes", required_argument, NULL, 's'},
      {"messages", required_argument, NULL, 'n'}, {"big-messages", required_argument, NULL, 'N'},
      {"modes", required_argument, NULL, 'm'}, {"only", required_argument, NULL, 'o'},
      {"syscheck", no_argument, NULL, 'S'},     {"stream-mib", required_argument, NULL, 'B'},
      {"stream-ring", required_argument, NULL, 'R'}, {"csv", required_argument, NULL, 'c'},
      {"plot", required_argument, NULL, 'p'},   {"no-pin", no_argument, NULL, 'P'},
      {"verbose", no_argument, NULL, 'v'},     {"placement", required_argument, NULL, 'L'},
      {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
  };
  memset(&cfg, 0, sizeof cfg);
  cfg.pin = true;
  long messages = -1, big = -1, stream_mib = -1, stream_ring_kib = -1;
  int opt;
  while ((opt = getopt_long(argc, argv, "hv", longopts, NULL)) != -1) {
    unsigned long v;
    switch (opt) {
    case 'q': cfg.quick = true; break;
    case 's':
      cfg.nsizes = 0;
      if (!parse_list(optarg, size_item) || cfg.nsizes == 0) {
        fprintf(stderr, "memport-bench: --sizes: a comma-separated list of sizes from %d bytes to 1 GiB (at most %d)\n",
                MIN_BYTES, MAX_SIZES);
        return 2;
      }
      break;
    case 'n':
    case 'N':
      if (!parse_uint(optarg, 1, 10000000, &v)) {
        fprintf(stderr, "memport-bench: --%s: a number from 1 to 10000000\n", opt == 'n' ? "messages" : "big-messages");
        return 2;
      }
      if (opt == 'n')
        messages = (long)v;
      else
        big = (long)v;
      break;
    case 'm':
      cfg.nmodes = 0;
      if (!parse_list(optarg, mode_item) || cfg.nmodes == 0) {
        fprintf(stderr, "memport-bench: --modes: a list of block, adaptive, spin\n");
        return 2;
      }
      break;
    case 'o':
      if (!parse_list(optarg, part_item) || cfg.parts == 0) {
        fprintf(stderr, "memport-bench: --only: a list of table, limits, stream, syscheck, rss, fanout, bridge, python\n");
        return 2;
      }
      break;
    case 'S': cfg.parts |= P_SYSCHECK; break;
    case 'B':
    case 'R':
      if (!parse_uint(optarg, 1, 1 << 20, &v)) {
        fprintf(stderr, "memport-bench: --%s: a number from 1 to 1048576\n", opt == 'B' ? "stream-mib" : "stream-ring");
        return 2;
      }
      if (opt == 'B')
        stream_mib = (long)v;
      else
        stream_ring_kib = (long)v;
      break;
    case 'c': cfg.csv = optarg; break;
    case 'p': cfg.plot = optarg; break;
    case 'P': cfg.pin = false; break;
    case 'v': cfg.verbose = true; break;
    case 'L':
      if (strcmp(optarg, "auto") == 0)
        cfg.placement = PLACE_AUTO;
      else if (strcmp(optarg, "same") == 0)
        cfg.placement = PLACE_SAME;
      else if (strcmp(optarg, "split") == 0)
        cfg.placement = PLACE_SPLIT;
      else {
        fprintf(stderr, "memport-bench: --placement: auto, same or split\n");
        return 2;
      }
      break;
    case 'h': usage(stdout); return 0;
    default: usage(stderr); return 2;
    }
  }
  if (optind < argc) {
    fprintf(stderr, "memport-bench: unexpected argument '%s' (see -h)\n", argv[optind]);
    return 2;
  }
  if (cfg.nsizes == 0) {
    memcpy(cfg.sizes, default_sizes, sizeof default_sizes);
    cfg.nsizes = sizeof default_sizes / sizeof default_sizes[0];
  }
  /* ascending, without repeats: the table and the plot read them in order */
  for (size_t i = 1; i < cfg.nsizes; i++)
    for (size_t j = i; j > 0 && cfg.sizes[j - 1] > cfg.sizes[j]; j--) {
      size_t t = cfg.sizes[j];
      cfg.sizes[j] = cfg.sizes[j - 1];
      cfg.sizes[j - 1] = t;
    }
  size_t uniq = 0;
  for (size_t i = 0; i < cfg.nsizes; i++)
    if (uniq == 0 || cfg.sizes[uniq - 1] != cfg.sizes[i]) cfg.sizes[uniq++] = cfg.sizes[i];
  cfg.nsizes = uniq;
  if (cfg.nmodes == 0) {
    cfg.modes[cfg.nmodes++] = MEMPORT_WAIT_BLOCK;
    cfg.modes[cfg.nmodes++] = MEMPORT_WAIT_ADAPTIVE;
  }
  if (cfg.parts == 0) {
    cfg.parts = P_TABLE | P_LIMITS | P_STREAM | P_SYSCHECK | P_RSS | P_FANOUT | P_BRIDGE;
    if (python_unavailable() == NULL) cfg.parts |= P_PYTHON; /* a full run includes it where the binding is built */
  }
  cfg.messages = cfg.quick ? 200 : 2000;
  cfg.big_messages = cfg.quick ? 5 : 100;
  cfg.warmup = cfg.quick ? 20 : 100;
  cfg.big_warmup = cfg.quick ? 2 : 8; /* copying paths; zero-copy warms up with the full count */
  cfg.base_messages = cfg.quick ? 2000 : 5000;
  cfg.memcpy_bytes = (cfg.quick ? 32 : 128) * MIB;
  cfg.memcpy_reps = cfg.quick ? 3 : 6;
  cfg.stream_bytes = (uint64_t)(cfg.quick ? 64 : 1024) * MIB;
  cfg.stream_ring = MIB;
  cfg.sys_messages = cfg.quick ? 2000 : 10000;
  cfg.rss_ring = 256 * KIB;
  if (messages > 0) cfg.messages = (unsigned)messages;
  if (big > 0) cfg.big_messages = (unsigned)big;
  else if (messages > 0 && cfg.messages < cfg.big_messages) cfg.big_messages = cfg.messages;
  if (stream_mib > 0) cfg.stream_bytes = (uint64_t)stream_mib * MIB;
  if (stream_ring_kib > 0) cfg.stream_ring = (size_t)stream_ring_kib * KIB;

  signal(SIGPIPE, SIG_IGN);
  bench_start = now_ns();
  save_affinity();
  choose_cpus();
  build_methods();
  print_header();

  /* the baselines run next to what the targets compare them with: futex and spin just before
   * the channel, the 64 KiB memcpy and the raw ring just before the stream */
  if (cfg.parts & P_TABLE)
    for (size_t i = 0; i < nmethods; i++)
      if (methods[i].kind < LK_RING) run_latency(&methods[i]);
  if (cfg.parts & P_LIMITS) {
    run_pingpong(true, false);
    if (cpus[0] >= 0 && cfg.placement != PLACE_SPLIT) run_pingpong(true, true);
    run_pingpong(false, false);
  }
  if (cfg.parts & P_TABLE)
    for (size_t i = 0; i < nmethods; i++)
      if (methods[i].kind >= LK_RING) run_latency(&methods[i]);
  if ((cfg.parts & P_TABLE) && (cfg.parts & P_LIMITS)) {
    run_pair(&pair_block, MEMPORT_WAIT_BLOCK);
    run_pair(&pair_adaptive, MEMPORT_WAIT_ADAPTIVE);
  }
  if (cfg.parts & P_FANOUT) run_fanout();
  if (cfg.parts & P_BRIDGE) run_bridge();
  if (cfg.parts & P_LIMITS) run_memcpy();
  if (cfg.parts & P_STREAM) {
    run_memcpy_blocks();
    run_rawring();
    run_stream(MEMPORT_WAIT_BLOCK);
    run_stream(MEMPORT_WAIT_ADAPTIVE);
    run_stream(MEMPORT_WAIT_SPIN);
  }
  if (cfg.parts & P_SYSCHECK) run_syscheck();
  if (cfg.parts & P_RSS) run_rss();

  if (cfg.parts & P_TABLE) print_table();
  if (cfg.parts & P_FANOUT) print_fanout();
  if (cfg.parts & P_BRIDGE) print_bridge();
  if (cfg.parts & (P_LIMITS | P_STREAM)) print_limits();
  if (cfg.parts & ~(unsigned)P_PYTHON) print_targets();
  int rc = 0;
  if (cfg.csv && write_csv(cfg.csv) < 0) rc = 1;
  if (cfg.plot && write_plot(cfg.plot) < 0) rc = 1;
  /* Last, in its own process: its table and targets follow ours, its rows are appended to the CSV. */
  if ((cfg.parts & P_PYTHON) && run_python(cfg.csv && rc == 0 ? cfg.csv : NULL) > 0) bench_failures++;
  if (bench_failures) {
    printf("\n%u measurement(s) FAILED (see the progress output on stderr)\n", bench_failures);
    rc = 1;
  }
  progress("finished\n");
  free(results);
  return rc;
}
