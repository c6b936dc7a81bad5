/* link_check: a C program on libfastpath_net across its switch's restart (tests/link.rs).
 * Opens SPEC, sends N frames, then keeps sending while the test stops and restarts the
 * backend: prints "sent N", "down", "up MS", "sent N" and a JSON line of what it saw, then
 * closes the port when its stdin closes. */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fastpath_net.h"

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

static void nap(void) {
    struct timespec s = {0, 200000};
    nanosleep(&s, NULL);
}

static int die(const char *what, int code) {
    fprintf(stderr, "link_check: %s: %s (%d)\n", what, fp_last_error(), code);
    return 1;
}

/* Sends n 60-byte frames, retrying what the port does not take; FP_OK or an error. */
static int send_frames(fp_port *p, uint32_t n) {
    fp_pkt pkts[32];
    while (n > 0) {
        uint32_t k = n < 32 ? n : 32;
        int rc = fp_pkt_alloc_bulk(p, pkts, k);
        if (rc < 0)
            return rc;
        for (int i = 0; i < rc; i++) {
            uint8_t *d;
            if (fp_pkt_set_len(p, pkts[i], 60) < 0 || fp_pkt_data(p, pkts[i], &d, NULL) < 0)
                return -1;
            memset(d, 0xab, 60);
        }
        int off = 0;
        while (off < rc) {
            int t = fp_tx_burst(p, pkts + off, (uint32_t)(rc - off));
            if (t < 0)
                return t;
            off += t;
            if (t == 0)
                nap();
        }
        n -= (uint32_t)rc;
    }
    return FP_OK;
}

int main(int argc, char **argv) {
    if (argc != 3)
        return 2;
    uint32_t n = (uint32_t)strtoul(argv[2], NULL, 10);
    fp_port *p;
    int rc = fp_open(argv[1], 512, 256, &p);
    if (rc < 0)
        return die("fp_open", rc);
    if ((rc = fp_wait_link(p, 5000)) < 0)
        return die("fp_wait_link", rc);
    if ((rc = send_frames(p, n)) < 0)
        return die("sending", rc);
    printf("sent %u\n", n);
    fflush(stdout);
    /* The test stops the backend now: the link goes down, with no error from any call. */
    fp_pkt mine;
    if ((rc = fp_pkt_alloc(p, &mine)) < 0)
        return die("fp_pkt_alloc", rc);
    int held = fp_held(p), tx_while_down = 0, errors = 0;
    double t0 = now_ms();
    while (fp_link_up(p) == 1 && now_ms() - t0 < 5000)
        nap();
    printf("down\n");
    fflush(stdout);
    /* Down until the test starts a new backend: sending takes nothing and is no error. */
    double down = now_ms();
    int up;
    while ((up = fp_link_up(p)) == 0 && now_ms() - down < 10000) {
        int t = fp_tx_burst(p, &mine, 1);
        if (t < 0)
            errors++;
        tx_while_down += t > 0;
        fp_pkt got[8];
        if (fp_rx_burst(p, got, 8) < 0)
            errors++;
        nap();
    }
    if (up != 1)
        return die("the link did not come back", FP_ERR_LINK);
    printf("up %.1f\n", now_ms() - down);
    fflush(stdout);
    uint8_t *d;
    if ((rc = fp_pkt_data(p, mine, &d, NULL)) < 0)
        return die("a packet held across the restart", rc);
    int held_after = fp_held(p);
    fp_pkt_free(p, mine);
    if ((rc = send_frames(p, n)) < 0)
        return die("sending after the restart", rc);
    printf("sent %u\n", n);
    struct fp_counters c;
    fp_counters(p, &c);
    printf("{\"held\":%d,\"held_after\":%d,\"tx_while_down\":%d,\"errors\":%d,\"resets\":%llu,\"tx_packets\":%llu}\n",
           held, held_after, tx_while_down, errors, (unsigned long long)c.resets, (unsigned long long)c.tx_packets);
    fflush(stdout);
    /* Frames may still sit in the ring: close once the test has seen them all (stdin closes). */
    char buf[16];
    while (fgets(buf, sizeof buf, stdin))
        ;
    fp_close(p);
    return 0;
}
