/* fp_echo: a reflector in C on libfastpath_net: sends every frame it receives back out of
 * the same port to its sender, from the port's MAC (fp_port_mac; for a port the hook did not
 * give, the MAC addresses swapped), until COUNT frames or SIGINT/SIGTERM. */
#define _POSIX_C_SOURCE 200809L
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fastpath_net.h"

enum { BURST = 32 };

static volatile sig_atomic_t stop;

static void on_signal(int sig) {
    (void)sig;
    stop = 1;
}

static int die(const char *what, int code) {
    fprintf(stderr, "fp_echo: %s: %s (%d)\n", what, fp_last_error(), code);
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: fp_echo PORTSPEC [COUNT]   e.g. fp_echo vhost:/tmp/e.sock\n"
                        "       PORTSPEC 'discover': the port the fastpath hook gave this container\n");
        return 2;
    }
    char *end;
    uint64_t count = argc > 2 ? strtoull(argv[2], &end, 10) : 0;
    if (argc > 2 && *end) {
        fprintf(stderr, "fp_echo: COUNT '%s' is not a number\n", argv[2]);
        return 2;
    }
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    fp_port *port;
    /* "discover": the port from the hook's /run/fastpath/config.json (or $FASTPATH_CONFIG). */
    int rc = strcmp(argv[1], "discover") == 0 ? fp_open_discovered(NULL, 4096, 1024, &port)
                                              : fp_open(argv[1], 4096, 1024, &port);
    if (rc < 0)
        return die("fp_open", rc);
    while (!stop && fp_link_up(port) != 1) {
        struct timespec s = {0, 1000000};
        nanosleep(&s, NULL);
    }
    /* Reply as the port: the switch may drop frames with another source MAC. */
    uint8_t own[6];
    rc = fp_port_mac(port, own);
    if (rc < 0 && rc != FP_ERR_CONFIG)
        return die("fp_port_mac", rc);
    int have_own = rc == FP_OK;
    fp_pkt pkts[BURST];
    uint64_t echoed = 0, dropped = 0;
    int link = 1;
    unsigned idle = 0;
    while (!stop && (count == 0 || echoed < count)) {
        int n = fp_rx_burst(port, pkts, BURST);
        if (n < 0)
            return die("fp_rx_burst", n);
        if (n == 0) {
            /* Now and then while idle: has the switch gone away (or come back)? */
            if (++idle % 1024 == 0 || !link) {
                int up = fp_link_up(port);
                if (up != link)
                    fprintf(stderr, "fp_echo: link %s after %llu frames\n", up ? "up" : "down",
                            (unsigned long long)echoed);
                link = up;
            }
            struct timespec s = {0, 20000};
            nanosleep(&s, NULL);
            continue;
        }
        idle = 0;
        for (int i = 0; i < n; i++) {
            uint8_t *d, mac[6];
            uint32_t len;
            if ((rc = fp_pkt_data(port, pkts[i], &d, &len)) < 0)
                return die("fp_pkt_data", rc);
            if (len >= 12) {
                memcpy(mac, d, 6);
                memmove(d, d + 6, 6);
                memcpy(d + 6, have_own ? own : mac, 6);
            }
        }
        int sent = fp_tx_burst(port, pkts, (uint32_t)n);
        if (sent < 0)
            return die("fp_tx_burst", sent);
        echoed += (uint64_t)sent;
        for (int i = sent; i < n; i++) {
            fp_pkt_free(port, pkts[i]);
            dropped++;
        }
    }
    printf("{\"role\":\"fp_echo\",\"echoed\":%llu,\"dropped\":%llu,\"held\":%d}\n", (unsigned long long)echoed,
           (unsigned long long)dropped, fp_held(port));
    fp_close(port);
    return 0;
}
