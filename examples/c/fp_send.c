/* fp_send: a packet sender in C on libfastpath_net: COUNT 64-byte test frames (the format of
 * examples/src/frame.rs: ethertype 0x88b5, "FPG1", sequence, checksum) at RATE frames/s, sent
 * from the port's MAC (fp_port_mac; 02:00:00:00:00:01 for a port the hook did not give). */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fastpath_net.h"

enum { FRAME = 64, SEQ_OFF = 18, CSUM_OFF = 26, FILL_OFF = 30, BURST = 32 };

static uint32_t byte_sum(const uint8_t *b, size_t n) {
    uint32_t s = 0;
    for (size_t i = 0; i < n; i++)
        s += b[i];
    return s;
}

/* Writes test frame `seq` from `src` into f (FRAME bytes). */
static void make_frame(uint8_t *f, const uint8_t src[6], uint64_t seq) {
    static const uint8_t dst[6] = {2, 0, 0, 0, 0, 2};
    memcpy(f, dst, 6);
    memcpy(f + 6, src, 6);
    f[12] = 0x88;
    f[13] = 0xb5;
    memcpy(f + 14, "FPG1", 4);
    for (int i = 0; i < 8; i++)
        f[SEQ_OFF + i] = (uint8_t)(seq >> (8 * i));
    for (size_t i = 0; i < FRAME - FILL_OFF; i++)
        f[FILL_OFF + i] = (uint8_t)(i * 7 + 3);
    uint32_t c = byte_sum(f + 14, CSUM_OFF - 14) + byte_sum(f + FILL_OFF, FRAME - FILL_OFF);
    for (int i = 0; i < 4; i++)
        f[CSUM_OFF + i] = (uint8_t)(c >> (8 * i));
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int die(const char *what, int code) {
    fprintf(stderr, "fp_send: %s: %s (%d)\n", what, fp_last_error(), code);
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: fp_send PORTSPEC COUNT [RATE]   e.g. fp_send vu:/tmp/a.sock 10000 50000\n"
                        "       PORTSPEC 'discover': the port the fastpath hook gave this container\n");
        return 2;
    }
    char *end;
    uint64_t count = strtoull(argv[2], &end, 10);
    if (*end || count == 0) {
        fprintf(stderr, "fp_send: COUNT '%s' is not a positive number\n", argv[2]);
        return 2;
    }
    double rate = argc > 3 ? strtod(argv[3], &end) : 0.0;
    if (argc > 3 && (*end || rate < 0)) {
        fprintf(stderr, "fp_send: RATE '%s' is not a number of frames per second\n", argv[3]);
        return 2;
    }
    fp_port *port;
    /* "discover": the port from the hook's /run/fastpath/config.json (or $FASTPATH_CONFIG). */
    int rc = strcmp(argv[1], "discover") == 0 ? fp_open_discovered(NULL, 4096, 1024, &port)
                                              : fp_open(argv[1], 4096, 1024, &port);
    if (rc < 0)
        return die("fp_open", rc);
    if ((rc = fp_wait_link(port, 10000)) < 0)
        return die("fp_wait_link", rc);
    /* Send as the port: the switch may drop frames with another source MAC. */
    uint8_t src[6] = {2, 0, 0, 0, 0, 1};
    if ((rc = fp_port_mac(port, src)) < 0 && rc != FP_ERR_CONFIG)
        return die("fp_port_mac", rc);

    fp_pkt pkts[BURST];
    int have = 0, link = 1;
    uint64_t seq = 0, sent = 0;
    double t0 = now();
    while (sent < count) {
        uint64_t allowed = rate > 0 ? (uint64_t)((now() - t0) * rate) : count;
        if (allowed > count)
            allowed = count;
        /* Fill the burst up to what the schedule allows. */
        while (have < BURST && seq < allowed) {
            fp_pkt p;
            if (fp_pkt_alloc(port, &p) < 0)
                break;
            uint8_t *d;
            if ((rc = fp_pkt_set_len(port, p, FRAME)) < 0 || (rc = fp_pkt_data(port, p, &d, NULL)) < 0)
                return die("filling a packet", rc);
            make_frame(d, src, seq++);
            pkts[have++] = p;
        }
        if (have == 0) {
            struct timespec s = {0, 50000};
            nanosleep(&s, NULL);
            continue;
        }
        int n = fp_tx_burst(port, pkts, (uint32_t)have);
        if (n < 0)
            return die("fp_tx_burst", n);
        sent += (uint64_t)n;
        memmove(pkts, pkts + n, (size_t)(have - n) * sizeof pkts[0]);
        have -= n;
        /* Nothing taken: a full ring, or the switch went away (it comes back by itself). */
        if (n == 0 || !link) {
            int up = fp_link_up(port);
            if (up != link)
                fprintf(stderr, "fp_send: link %s after %llu frames\n", up ? "up" : "down", (unsigned long long)sent);
            link = up;
        }
        if (n == 0) {
            struct timespec s = {0, 20000};
            nanosleep(&s, NULL);
        }
    }
    /* The last frames may still sit in the ring: give the peer time to take them
     * before closing the connection drops them. */
    struct timespec linger = {0, 300000000};
    nanosleep(&linger, NULL);
    struct fp_counters c;
    fp_counters(port, &c);
    printf("{\"role\":\"fp_send\",\"sent\":%llu,\"secs\":%.6f,\"tx_packets\":%llu,\"held\":%d}\n",
           (unsigned long long)sent, now() - t0, (unsigned long long)c.tx_packets, fp_held(port));
    fp_close(port);
    return 0;
}
