/* fastpath_net.h: the C interface of netlib (libfastpath_net.so / libfastpath_net.a).
 * Hand-kept: netlib/ffi/tests/header.rs checks it against the library's symbols and compiles C with it. */
#ifndef FASTPATH_NET_H
#define FASTPATH_NET_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Usage:
 *
 *   fp_port *p;
 *   if (fp_open("vu:/run/fastpath/sock/br0.sock", 8192, 1024, &p) < 0)
 *       fprintf(stderr, "%s\n", fp_last_error());
 *   fp_wait_link(p, 10000);
 *   fp_pkt pkts[32];
 *   int n = fp_rx_burst(p, pkts, 32);          // handles of received packets
 *   ... fp_pkt_data(p, pkts[i], &data, &len) ...
 *   int sent = fp_tx_burst(p, pkts, n);        // the first `sent` now belong to the port
 *   for (int i = sent; i < n; i++) fp_pkt_free(p, pkts[i]);
 *   fp_close(p);
 *
 * Every function that returns int returns a negative FP_ERR_* code on error and
 * sets a message that fp_last_error() returns (per thread). NULL pointers and
 * bad handles are errors, not crashes. A port is used by one thread at a time.
 * Packets are owned by exactly one of the application and the port: received and
 * allocated ones by the application until it sends or frees them.
 */

/* Error codes (all negative). */
#define FP_OK 0
#define FP_ERR_NULL (-1)     /* a required pointer argument is NULL */
#define FP_ERR_ARG (-2)      /* an argument is out of range or malformed */
#define FP_ERR_OPEN (-3)     /* the port or its pool could not be opened */
#define FP_ERR_NOBUF (-4)    /* no free packet buffer */
#define FP_ERR_HANDLE (-5)   /* the packet handle is not one the application holds */
#define FP_ERR_LINK (-6)     /* the link did not come up in time */
#define FP_ERR_CONFIG (-7)   /* no usable discovered configuration (or nothing it says) */
#define FP_ERR_INTERNAL (-8) /* a bug in the library */

/* An open port with its own packet pool (opaque). */
typedef struct FpPort fp_port;

/* A packet handle: valid while the application holds the packet. */
typedef uint32_t fp_pkt;

/* Port counters. */
struct fp_counters {
    uint64_t rx_packets; /* packets received */
    uint64_t rx_bytes;   /* bytes received */
    uint64_t tx_packets; /* packets sent */
    uint64_t tx_bytes;   /* bytes sent */
    uint64_t rx_errors;  /* receive faults (bad descriptors from the peer) */
    uint64_t tx_dropped; /* packets refused on transmit */
    uint64_t resets;     /* port resets (peer reconnects, faults) */
};

/* A virtio-net header (its first ten bytes, host order): what a packet sent on a port
 * opened with fp_open_offloads asks of the switch. All zero: nothing. */
struct fp_net_hdr {
    uint8_t flags;        /* FP_NET_HDR_F_NEEDS_CSUM: the L4 checksum is left to finish */
    uint8_t gso_type;     /* FP_NET_HDR_GSO_NONE, _TCPV4 or _TCPV6 */
    uint16_t hdr_len;     /* bytes of headers before the TCP payload */
    uint16_t gso_size;    /* payload bytes per segment (the MSS) */
    uint16_t csum_start;  /* where the checksummed bytes start (the L4 header) */
    uint16_t csum_offset; /* where the checksum field is, from csum_start */
};
#define FP_NET_HDR_F_NEEDS_CSUM 1
#define FP_NET_HDR_GSO_NONE 0
#define FP_NET_HDR_GSO_TCPV4 1
#define FP_NET_HDR_GSO_TCPV6 4
/* fp_tx_offloads bits (the virtio-net feature bits). */
#define FP_TX_CSUM (1 << 0)
#define FP_TX_TSO4 (1 << 11)
#define FP_TX_TSO6 (1 << 12)

/* The library version, e.g. "0.1.0" (static). */
const char *fp_version(void);

/* The message of the last failed call on this thread ("" if none). Valid until the
 * next failing call on this thread. */
const char *fp_last_error(void);

/* Opens the port `spec`: "vu:PATH" (connect to a vhost-user backend, e.g. fastpathd),
 * "vu-server:PATH" (listen for one), "vhost:PATH" or "vhost-client:PATH" (be the
 * backend). `pool_size` buffers of 2 KiB (in /dev/hugepages, else memfd), rings of
 * `queue_size` entries (a power of two, 8..4096). A "vu:" open returns after the
 * handshake; the others return at once and come up later (see fp_wait_link). */
int fp_open(const char *spec, uint32_t pool_size, uint32_t queue_size, fp_port **out);

/* Opens "vu:PATH" or "vu-packed:PATH" as fp_open does, taking the transmit offloads
 * the backend offers (checksum, TSO; fastpathd's ports offer them unless turned off),
 * with buffers of `data_room` bytes (64..65408: a 64 KB GSO frame fits). Every packet
 * sent then carries the header set with fp_pkt_set_net_hdr (all zero, asking nothing,
 * unless set since the buffer was last sent: the port zeroes a sent packet's header when
 * it comes back). fp_tx_offloads says what the backend took. */
int fp_open_offloads(const char *spec, uint32_t pool_size, uint32_t queue_size, uint32_t data_room, fp_port **out);

/* Opens "vu:PATH", "vu-server:PATH" or "vu-packed:PATH" with `pairs` queue pairs (1..16;
 * the backend must take as many: fastpathd's ports take 8). out[0..pairs-1] get a port
 * handle per pair, each with its own pool of `pool_size` buffers: use each from a thread
 * of its own (they share nothing on the fast path) and close each with fp_close. Every
 * handle must keep being called (bursts or fp_link_up) for the port to come back after
 * its backend went away. fp_pair_of says which pair a flow goes out on. */
int fp_open_pairs(const char *spec, uint32_t pairs, uint32_t pool_size, uint32_t queue_size, fp_port **out);

/* The queue pair (0-based) that the frame `data` (`len` bytes) goes out on to keep its
 * flow in order: its flow hash over the port's pairs (the hash fastpathd picks a
 * receive pair with). 0 on a port of one pair. */
int fp_pair_of(fp_port *port, const uint8_t *data, uint32_t len);

/* The transmit offloads the backend took (FP_TX_CSUM | FP_TX_TSO4 | FP_TX_TSO6), 0 for
 * none or a port not opened with fp_open_offloads. */
int fp_tx_offloads(fp_port *port);

/* Sets the header the packet is sent with (set its length first): checked now against
 * the packet, so a header the switch would refuse is refused here (FP_ERR_ARG, the
 * message naming the field). E.g. a 64 KB TCP/IPv4 frame cut into 1448-byte segments:
 * { FP_NET_HDR_F_NEEDS_CSUM, FP_NET_HDR_GSO_TCPV4, 54, 1448, 34, 16 }. */
int fp_pkt_set_net_hdr(fp_port *port, fp_pkt pkt, const struct fp_net_hdr *hdr);

/* Opens the port the fastpath hook gave this container on `bridge` (NULL: its first
 * port), as netlib::Config::discover() finds it ($FASTPATH_CONFIG or
 * /run/fastpath/config.json); the pool goes in the container's hugetlbfs. */
int fp_open_discovered(const char *bridge, uint32_t pool_size, uint32_t queue_size, fp_port **out);

/* Closes the port and frees all its memory, packets the application holds included.
 * NULL is ignored. */
void fp_close(fp_port *port);

/* Drives the control path once; 1 if the link is up, 0 if not.
 *
 * The link goes down when the peer goes away (fastpathd killed, restarted or upgraded)
 * and comes back by itself: a "vu:" port tries the peer again at once, then after 2 ms,
 * doubling up to 128 ms, and redoes the handshake when it answers. Meanwhile nothing is
 * an error: fp_rx_burst returns 0, fp_tx_burst takes nothing (the packets stay the
 * application's), the pool, the handles the application holds and the counters are
 * kept (`resets` counts the reconnects). Call this now and then to log the change. */
int fp_link_up(fp_port *port);

/* Waits up to `timeout_ms` for the link; FP_OK or FP_ERR_LINK. */
int fp_wait_link(fp_port *port, uint32_t timeout_ms);

/* Receives up to `max` packets into pkts[0..n); returns n (0 when none). */
int fp_rx_burst(fp_port *port, fp_pkt *pkts, uint32_t max);

/* Sends pkts[0..n); returns how many were taken from the front (those now belong to
 * the port); the others stay the application's, to retry or free. A handle the
 * application does not hold fails the call (FP_ERR_HANDLE) if nothing was sent yet. */
int fp_tx_burst(fp_port *port, const fp_pkt *pkts, uint32_t n);

/* Takes a free buffer as an empty packet (length 0). FP_ERR_NOBUF if none is free. */
int fp_pkt_alloc(fp_port *port, fp_pkt *pkt);

/* Takes up to `n` free buffers into pkts; returns how many. */
int fp_pkt_alloc_bulk(fp_port *port, fp_pkt *pkts, uint32_t n);

/* Returns a packet to the pool. */
int fp_pkt_free(fp_port *port, fp_pkt pkt);

/* The packet's first data byte and its length (either out pointer may be NULL). The
 * pointer stays valid until the packet is sent or freed or the port closed. */
int fp_pkt_data(fp_port *port, fp_pkt pkt, uint8_t **data, uint32_t *len);

/* Sets the packet's length (at most fp_pkt_room); then write it through fp_pkt_data. */
int fp_pkt_set_len(fp_port *port, fp_pkt pkt, uint32_t len);

/* The most bytes the packet can hold. */
int fp_pkt_room(fp_port *port, fp_pkt pkt);

/* Copies the port's counters. */
int fp_counters(fp_port *port, struct fp_counters *out);

/* Copies the MAC the fastpath hook gave the port into out[0..6]: send with it as the
 * source MAC (a switch with port security drops frames that claim another). Known for
 * ports of the container's config (fp_open_discovered, or fp_open of the same socket);
 * otherwise FP_ERR_CONFIG and `out` is left as it was. */
int fp_port_mac(fp_port *port, uint8_t out[6]);

/* Packets the application holds now (allocated or received, not sent or freed). */
int fp_held(fp_port *port);

#ifdef __cplusplus
}
#endif

#endif /* FASTPATH_NET_H */
