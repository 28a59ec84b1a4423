/* SPDX-License-Identifier: MIT */
/* chan_stats.c: memport_chan_stats: the endpoint's private counters and a snapshot of its rings and pools. */
#include "chan.h"

#include <string.h>

int memport_chan_stats(memport_chan_t *chan, memport_chan_stats_t *stats) {
  if (chan == NULL || stats == NULL || stats->struct_size < sizeof *stats)
    return MEMPORT_EINVAL;
  memport_chan_stats_t s;
  memset(&s, 0, sizeof s);
  const struct memport__chan_counters *c = &chan->stats;
  s.sent_ring_msgs = c->tx_msgs[0];
  s.sent_ring_bytes = c->tx_bytes[0];
  s.sent_pool_msgs = c->tx_msgs[1];
  s.sent_pool_bytes = c->tx_bytes[1];
  s.sent_oneoff_msgs = c->tx_msgs[2];
  s.sent_oneoff_bytes = c->tx_bytes[2];
  s.recv_ring_msgs = c->rx_msgs[0];
  s.recv_ring_bytes = c->rx_bytes[0];
  s.recv_pool_msgs = c->rx_msgs[1];
  s.recv_pool_bytes = c->rx_bytes[1];
  s.recv_oneoff_msgs = c->rx_msgs[2];
  s.recv_oneoff_bytes = c->rx_bytes[2];
  s.oneoff_fallbacks = c->oneoff_fallbacks;
  s.oneoff_refused = c->oneoff_refused;
  s.wakeups_sent = c->wakes_sent;
  s.wakeups_received = c->wakes_received;
  s.sent_handle_msgs = c->tx_handle_msgs;
  s.sent_handles = c->tx_handles;
  s.recv_handle_msgs = c->rx_handle_msgs;
  s.recv_handles = c->rx_handles;
  s.tx_ring_used = memport__ring_tx_fill(chan->tx_ring);
  s.tx_ring_capacity = memport__ring_capacity(chan->tx_ring);
  s.rx_ring_used = memport__ring_rx_fill(chan->rx_ring);
  s.rx_ring_capacity = memport__ring_capacity(chan->rx_ring);
  s.tx_pool_buffers = chan->tx_pool.count;
  for (uint32_t i = 0; i < chan->tx_pool.count; i++) {
    s.tx_pool_allocated += chan->tx_pool.state[i] == MEMPORT__POOL_ALLOCATED;
    s.tx_pool_lent += chan->tx_pool.state[i] == MEMPORT__POOL_LENT;
  }
  s.rx_pool_buffers = chan->rx_pool.count;
  for (uint32_t i = 0; i < chan->rx_pool.count; i++)
    s.rx_pool_held += chan->rx_pool.held[i] != 0;
  s.struct_size = sizeof s;
  memcpy(stats, &s, sizeof s); /* a larger (newer) struct: the fields we know, struct_size says which */
  return 0;
}
