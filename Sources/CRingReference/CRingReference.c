// Reference implementations that use Xen's io/ring.h macros exactly as C drivers do.
// Nothing here re-implements the macros; the system headers are included as they are.
#define _GNU_SOURCE
#define __XEN_TOOLS__ 1
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

// The headers leave the barriers to the user at this interface version.
#define xen_mb()  __atomic_thread_fence(__ATOMIC_SEQ_CST)
#define xen_rmb() __atomic_thread_fence(__ATOMIC_ACQUIRE)
#define xen_wmb() __atomic_thread_fence(__ATOMIC_RELEASE)

#include <xen/io/ring.h>
#include <xen/io/blkif.h>
// The header's own Toeplitz function, as the reference our Swift hash is checked against.
#define XEN_NETIF_DEFINE_TOEPLITZ 1
#include <xen/io/netif.h>

#include "CRingReference.h"

struct cref_small_req { uint8_t b[8]; };
struct cref_small_rsp { uint8_t b[4]; };
struct cref_wide_req { uint8_t b[200]; };
struct cref_wide_rsp { uint8_t b[24]; };
DEFINE_RING_TYPES(cref_small, struct cref_small_req, struct cref_small_rsp);
DEFINE_RING_TYPES(cref_wide, struct cref_wide_req, struct cref_wide_rsp);

struct cref_ring {
    int kind;
    void *mem;
    size_t bytes;
    union {
        blkif_front_ring_t blkif;
        netif_tx_front_ring_t tx;
        netif_rx_front_ring_t rx;
        cref_small_front_ring_t small;
        cref_wide_front_ring_t wide;
    } front;
    union {
        blkif_back_ring_t blkif;
        netif_tx_back_ring_t tx;
        netif_rx_back_ring_t rx;
        cref_small_back_ring_t small;
        cref_wide_back_ring_t wide;
    } back;
};

// Runs BODY with `fr` and `br` bound to the typed front and back rings of r's kind, so
// each operation below is written once and expands to the macros for every ring type.
#define WITH_RINGS(r, BODY) do {                                               \
    switch ((r)->kind) {                                                       \
    case CREF_BLKIF:    { __typeof__((r)->front.blkif) *fr = &(r)->front.blkif; \
                          __typeof__((r)->back.blkif) *br = &(r)->back.blkif;   \
                          (void)fr; (void)br; BODY; } break;                   \
    case CREF_NETIF_TX: { __typeof__((r)->front.tx) *fr = &(r)->front.tx;       \
                          __typeof__((r)->back.tx) *br = &(r)->back.tx;         \
                          (void)fr; (void)br; BODY; } break;                   \
    case CREF_NETIF_RX: { __typeof__((r)->front.rx) *fr = &(r)->front.rx;       \
                          __typeof__((r)->back.rx) *br = &(r)->back.rx;         \
                          (void)fr; (void)br; BODY; } break;                   \
    case CREF_SMALL:    { __typeof__((r)->front.small) *fr = &(r)->front.small; \
                          __typeof__((r)->back.small) *br = &(r)->back.small;   \
                          (void)fr; (void)br; BODY; } break;                   \
    default:            { __typeof__((r)->front.wide) *fr = &(r)->front.wide;   \
                          __typeof__((r)->back.wide) *br = &(r)->back.wide;     \
                          (void)fr; (void)br; BODY; } break;                   \
    }                                                                          \
} while (0)

size_t cref_request_size(int kind) {
    switch (kind) {
    case CREF_BLKIF: return sizeof(struct blkif_request);
    case CREF_NETIF_TX: return sizeof(struct netif_tx_request);
    case CREF_NETIF_RX: return sizeof(struct netif_rx_request);
    case CREF_SMALL: return sizeof(struct cref_small_req);
    default: return sizeof(struct cref_wide_req);
    }
}

size_t cref_response_size(int kind) {
    switch (kind) {
    case CREF_BLKIF: return sizeof(struct blkif_response);
    case CREF_NETIF_TX: return sizeof(struct netif_tx_response);
    case CREF_NETIF_RX: return sizeof(struct netif_rx_response);
    case CREF_SMALL: return sizeof(struct cref_small_rsp);
    default: return sizeof(struct cref_wide_rsp);
    }
}

size_t cref_entry_size(int kind) {
    switch (kind) {
    case CREF_BLKIF: return sizeof(union blkif_sring_entry);
    case CREF_NETIF_TX: return sizeof(union netif_tx_sring_entry);
    case CREF_NETIF_RX: return sizeof(union netif_rx_sring_entry);
    case CREF_SMALL: return sizeof(union cref_small_sring_entry);
    default: return sizeof(union cref_wide_sring_entry);
    }
}

cref_ring *cref_ring_new(int kind, void *mem, size_t bytes) {
    cref_ring *r = calloc(1, sizeof(*r));
    if (!r) return NULL;
    r->kind = kind;
    r->mem = mem;
    r->bytes = bytes;
    return r;
}

void cref_ring_free(cref_ring *r) { free(r); }

void cref_front_init(cref_ring *r) {
    WITH_RINGS(r, {
        __typeof__(fr->sring) s = (__typeof__(fr->sring))r->mem;
        SHARED_RING_INIT(s);
        FRONT_RING_INIT(fr, s, r->bytes);
    });
}

void cref_back_init(cref_ring *r) {
    WITH_RINGS(r, {
        __typeof__(br->sring) s = (__typeof__(br->sring))r->mem;
        BACK_RING_INIT(br, s, r->bytes);
    });
}

void cref_attach_at(cref_ring *r, uint32_t idx) {
    WITH_RINGS(r, {
        __typeof__(fr->sring) s = (__typeof__(fr->sring))r->mem;
        s->req_prod = s->rsp_prod = idx;
        s->req_event = s->rsp_event = idx + 1;
        FRONT_RING_ATTACH(fr, s, idx, r->bytes);
        BACK_RING_ATTACH(br, (__typeof__(br->sring))r->mem, idx, r->bytes);
    });
}

unsigned cref_size(cref_ring *r) { unsigned v = 0; WITH_RINGS(r, v = RING_SIZE(fr)); return v; }
unsigned cref_free_requests(cref_ring *r) { unsigned v = 0; WITH_RINGS(r, v = RING_FREE_REQUESTS(fr)); return v; }
int cref_full(cref_ring *r) { int v = 0; WITH_RINGS(r, v = RING_FULL(fr)); return v; }
uint32_t cref_req_prod_pvt(cref_ring *r) { uint32_t v = 0; WITH_RINGS(r, v = fr->req_prod_pvt); return v; }
uint32_t cref_rsp_cons(cref_ring *r) { uint32_t v = 0; WITH_RINGS(r, v = fr->rsp_cons); return v; }
uint32_t cref_rsp_prod_pvt(cref_ring *r) { uint32_t v = 0; WITH_RINGS(r, v = br->rsp_prod_pvt); return v; }
uint32_t cref_req_cons(cref_ring *r) { uint32_t v = 0; WITH_RINGS(r, v = br->req_cons); return v; }

void cref_produce_request(cref_ring *r, const void *src) {
    WITH_RINGS(r, {
        memcpy(RING_GET_REQUEST(fr, fr->req_prod_pvt), src, cref_request_size(r->kind));
        fr->req_prod_pvt++;
    });
}

void cref_push_requests(cref_ring *r) { WITH_RINGS(r, RING_PUSH_REQUESTS(fr)); }

int cref_push_requests_and_check_notify(cref_ring *r) {
    int notify = 0;
    WITH_RINGS(r, RING_PUSH_REQUESTS_AND_CHECK_NOTIFY(fr, notify));
    return notify;
}

unsigned cref_unconsumed_responses(cref_ring *r) {
    unsigned v = 0;
    WITH_RINGS(r, v = RING_HAS_UNCONSUMED_RESPONSES(fr));
    return v;
}

void cref_consume_response(cref_ring *r, void *dst) {
    WITH_RINGS(r, {
        __typeof__(*RING_GET_RESPONSE(fr, 0)) rsp;
        RING_COPY_RESPONSE(fr, fr->rsp_cons, &rsp);
        memcpy(dst, &rsp, cref_response_size(r->kind));
        fr->rsp_cons++;
    });
}

int cref_final_check_for_responses(cref_ring *r) {
    int more = 0;
    WITH_RINGS(r, RING_FINAL_CHECK_FOR_RESPONSES(fr, more));
    return more != 0;
}

unsigned cref_unconsumed_requests(cref_ring *r) {
    unsigned v = 0;
    WITH_RINGS(r, v = RING_HAS_UNCONSUMED_REQUESTS(br));
    return v;
}

int cref_request_cons_overflow(cref_ring *r, uint32_t idx) {
    int v = 0;
    WITH_RINGS(r, v = RING_REQUEST_CONS_OVERFLOW(br, idx));
    return v;
}

int cref_request_prod_overflow(cref_ring *r, uint32_t prod) {
    int v = 0;
    WITH_RINGS(r, v = RING_REQUEST_PROD_OVERFLOW(br, prod));
    return v;
}

void cref_consume_request(cref_ring *r, void *dst) {
    WITH_RINGS(r, {
        __typeof__(*RING_GET_REQUEST(br, 0)) req;
        RING_COPY_REQUEST(br, br->req_cons, &req);
        memcpy(dst, &req, cref_request_size(r->kind));
        br->req_cons++;
    });
}

void cref_produce_response(cref_ring *r, const void *src) {
    WITH_RINGS(r, {
        memcpy(RING_GET_RESPONSE(br, br->rsp_prod_pvt), src, cref_response_size(r->kind));
        br->rsp_prod_pvt++;
    });
}

void cref_push_responses(cref_ring *r) { WITH_RINGS(r, RING_PUSH_RESPONSES(br)); }

int cref_push_responses_and_check_notify(cref_ring *r) {
    int notify = 0;
    WITH_RINGS(r, RING_PUSH_RESPONSES_AND_CHECK_NOTIFY(br, notify));
    return notify;
}

int cref_final_check_for_requests(cref_ring *r) {
    int more = 0;
    WITH_RINGS(r, RING_FINAL_CHECK_FOR_REQUESTS(br, more));
    return more != 0;
}

// ---- Two-thread exchange over a blkif ring, as a C driver pair would write it ----

void cref_blkif_init(void *mem, size_t bytes) {
    blkif_front_ring_t fr;
    blkif_sring_t *s = (blkif_sring_t *)mem;
    SHARED_RING_INIT(s);
    FRONT_RING_INIT(&fr, s, bytes);
}

static void kick(int fd) {
    if (fd >= 0) {
        while (eventfd_write(fd, 1) != 0 && errno == EINTR) {}
    }
}

static void sleep_on(int fd) {
    eventfd_t v;
    while (eventfd_read(fd, &v) != 0 && errno == EINTR) {}
}

// The request every benchmark frontend sends (see CRingReference.h): all eleven segments
// filled, so the slot is written whole and a backend has the whole slot to read.
static void bench_request(blkif_request_t *req) {
    memset(req, 0, sizeof(*req));
    req->operation = BLKIF_OP_READ;
    req->nr_segments = BLKIF_MAX_SEGMENTS_PER_REQUEST;
    req->handle = 0;
    for (unsigned i = 0; i < BLKIF_MAX_SEGMENTS_PER_REQUEST; i++) {
        req->seg[i].gref = CREF_BENCH_FIRST_GREF + i;
        req->seg[i].first_sect = 0;
        req->seg[i].last_sect = 7;
    }
}

long cref_blkif_front_run(void *mem, size_t bytes, uint64_t count, unsigned depth,
                          int notify_fd, int wait_fd) {
    blkif_front_ring_t fr;
    FRONT_RING_ATTACH(&fr, (blkif_sring_t *)mem, 0, bytes);
    uint8_t *outstanding = calloc((size_t)(count / 8 + 1), 1);
    if (!outstanding) return -3;
    blkif_request_t req;
    bench_request(&req);
    uint64_t issued = 0, completed = 0;
    long result = 0;
    while (completed < count) {
        int produced = 0;
        while (issued < count && issued - completed < depth && !RING_FULL(&fr)) {
            req.id = issued;
            req.sector_number = issued;
            memcpy(RING_GET_REQUEST(&fr, fr.req_prod_pvt), &req, sizeof(req));
            outstanding[issued / 8] |= (uint8_t)(1u << (issued % 8));
            fr.req_prod_pvt++;
            issued++;
            produced = 1;
        }
        if (produced) {
            int notify;
            RING_PUSH_REQUESTS_AND_CHECK_NOTIFY(&fr, notify);
            if (notify) kick(notify_fd);
        }
        RING_IDX rp = fr.sring->rsp_prod;
        xen_rmb();
        if (RING_RESPONSE_PROD_OVERFLOW(&fr, rp)) { result = -2; goto out; }
        int consumed = 0;
        while (fr.rsp_cons != rp) {
            blkif_response_t rsp;
            RING_COPY_RESPONSE(&fr, fr.rsp_cons, &rsp);
            fr.rsp_cons++;
            uint64_t id = rsp.id;
            if (id >= count || !(outstanding[id / 8] & (1u << (id % 8)))) { result = -1; goto out; }
            if (rsp.status != BLKIF_RSP_OKAY || rsp.operation != BLKIF_OP_READ) { result = -4; goto out; }
            outstanding[id / 8] &= (uint8_t)~(1u << (id % 8));
            completed++;
            consumed = 1;
        }
        if (!consumed && !produced && wait_fd >= 0) {
            int more;
            RING_FINAL_CHECK_FOR_RESPONSES(&fr, more);
            if (!more) sleep_on(wait_fd);
        }
    }
    result = (long)completed;
out:
    free(outstanding);
    return result;
}

// Validates the copied request as a backend must before using it (every field read once,
// from the copy): a direct operation, a segment count it allows, and each segment's
// sectors inside its page. Adds what it used to the tally's digest.
static int bench_decode(const blkif_request_t *req, cref_blkif_tally *tally) {
    unsigned least;
    switch (req->operation) {
    case BLKIF_OP_READ:
    case BLKIF_OP_WRITE:
        least = 1;
        break;
    case BLKIF_OP_WRITE_BARRIER:
    case BLKIF_OP_FLUSH_DISKCACHE:
        least = 0;
        break;
    default:
        return 0;
    }
    unsigned n = req->nr_segments;
    if (n < least || n > BLKIF_MAX_SEGMENTS_PER_REQUEST) return 0;
    uint64_t digest = req->sector_number;
    for (unsigned i = 0; i < n; i++) {
        uint8_t first = req->seg[i].first_sect, last = req->seg[i].last_sect;
        if (first > last || last > 7) return 0;
        digest += (uint64_t)req->seg[i].gref + first + last;
    }
    tally->digest += digest;
    return 1;
}

long cref_blkif_back_serve(void *mem, size_t bytes, uint64_t count, int notify_fd, int wait_fd,
                           cref_blkif_tally *tally) {
    blkif_back_ring_t br;
    BACK_RING_ATTACH(&br, (blkif_sring_t *)mem, 0, bytes);
    memset(tally, 0, sizeof(*tally));
    while (tally->answered < count) {
        RING_IDX rp = br.sring->req_prod;
        xen_rmb();
        if (RING_REQUEST_PROD_OVERFLOW(&br, rp)) return -2;
        int answered = 0;
        while (br.req_cons != rp && !RING_REQUEST_CONS_OVERFLOW(&br, br.req_cons)) {
            blkif_request_t req;
            RING_COPY_REQUEST(&br, br.req_cons, &req);
            br.req_cons++;
            blkif_response_t rsp;
            memset(&rsp, 0, sizeof(rsp));
            rsp.id = req.id;
            rsp.operation = req.operation;
            if (bench_decode(&req, tally)) {
                rsp.status = BLKIF_RSP_OKAY;
            } else {
                rsp.status = BLKIF_RSP_ERROR;
                tally->refused++;
            }
            memcpy(RING_GET_RESPONSE(&br, br.rsp_prod_pvt), &rsp, sizeof(rsp));
            br.rsp_prod_pvt++;
            tally->answered++;
            answered = 1;
        }
        if (answered) {
            int notify;
            RING_PUSH_RESPONSES_AND_CHECK_NOTIFY(&br, notify);
            if (notify) kick(notify_fd);
        } else if (wait_fd >= 0) {
            int more;
            RING_FINAL_CHECK_FOR_REQUESTS(&br, more);
            if (!more) sleep_on(wait_fd);
        }
    }
    return (long)tally->answered;
}

long cref_blkif_back_run(void *mem, size_t bytes, uint64_t count, int notify_fd, int wait_fd) {
    cref_blkif_tally tally;
    return cref_blkif_back_serve(mem, bytes, count, notify_fd, wait_fd, &tally);
}

pid_t cref_blkif_front_fork(void *mem, size_t bytes, uint64_t count, unsigned depth,
                            int notify_fd, int wait_fd, int ready_fd) {
    pid_t pid = fork();
    if (pid != 0) return pid;
    // The child: only C from here on (no Swift runtime, no threads), then _exit.
    char ready = 'R';
    while (write(ready_fd, &ready, 1) < 0 && errno == EINTR) {}
    long done = cref_blkif_front_run(mem, bytes, count, depth, notify_fd, wait_fd);
    _exit(done == (long)count ? 0 : 1);
}

int cref_pin_to_cpu(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

int cref_eventfd(void) { return eventfd(0, EFD_CLOEXEC); }

#include <stddef.h>
#include <xen/io/xs_wire.h>
#include <xen/io/console.h>

// Layout facts straight from the compiler, for checking Protocols/ring-layout.tsv.
#define FIELD(S, F) if (strcmp(structure, #S) == 0 && strcmp(field, #F) == 0) { \
        *offset = (long)offsetof(struct S, F); *size = (long)sizeof(((struct S *)0)->F); return 0; }
int cref_layout(const char *structure, const char *field, long *offset, long *size) {
    FIELD(blkif_sring, req_prod) FIELD(blkif_sring, req_event) FIELD(blkif_sring, rsp_prod)
    FIELD(blkif_sring, rsp_event) FIELD(blkif_sring, pvt) FIELD(blkif_sring, __pad)
    FIELD(xenstore_domain_interface, req) FIELD(xenstore_domain_interface, rsp)
    FIELD(xenstore_domain_interface, req_cons) FIELD(xenstore_domain_interface, req_prod)
    FIELD(xenstore_domain_interface, rsp_cons) FIELD(xenstore_domain_interface, rsp_prod)
    FIELD(xenstore_domain_interface, server_features) FIELD(xenstore_domain_interface, connection)
    FIELD(xenstore_domain_interface, error)
    FIELD(xencons_interface, in) FIELD(xencons_interface, out) FIELD(xencons_interface, in_cons)
    FIELD(xencons_interface, in_prod) FIELD(xencons_interface, out_cons) FIELD(xencons_interface, out_prod)
    if (strcmp(field, "(size)") == 0) {
        *offset = 0;
        if (strcmp(structure, "xenstore_domain_interface") == 0) { *size = sizeof(struct xenstore_domain_interface); return 0; }
        if (strcmp(structure, "xencons_interface") == 0) { *size = sizeof(struct xencons_interface); return 0; }
    }
    if (strcmp(structure, "blkif_sring") == 0 && strcmp(field, "ring") == 0) {
        *offset = (long)offsetof(struct blkif_sring, ring); *size = 0; return 0;
    }
    return -1;
}

long cref_constant(const char *name) {
    if (strcmp(name, "xenstore_ring_size") == 0) return XENSTORE_RING_SIZE;
    if (strcmp(name, "xenstore_payload_max") == 0) return XENSTORE_PAYLOAD_MAX;
    if (strcmp(name, "xenstore_server_feature_reconnection") == 0) return XENSTORE_SERVER_FEATURE_RECONNECTION;
    if (strcmp(name, "xenstore_server_feature_error") == 0) return XENSTORE_SERVER_FEATURE_ERROR;
    if (strcmp(name, "xenstore_connected") == 0) return XENSTORE_CONNECTED;
    if (strcmp(name, "xenstore_reconnect") == 0) return XENSTORE_RECONNECT;
    if (strcmp(name, "xenstore_error_none") == 0) return XENSTORE_ERROR_NONE;
    if (strcmp(name, "xenstore_error_comm") == 0) return XENSTORE_ERROR_COMM;
    if (strcmp(name, "xenstore_error_ringidx") == 0) return XENSTORE_ERROR_RINGIDX;
    if (strcmp(name, "xenstore_error_proto") == 0) return XENSTORE_ERROR_PROTO;
    if (strcmp(name, "ring_header_bytes") == 0) return (long)offsetof(struct blkif_sring, ring);
    if (strcmp(name, "ring_initial_event") == 0) {
        struct blkif_sring s;
        SHARED_RING_INIT(&s);
        return (long)s.req_event;
    }
    return -1000000;
}

uint32_t cref_netif_toeplitz(const uint8_t *key, unsigned int keylen, const uint8_t *buf, unsigned int buflen) {
    return xen_netif_toeplitz_hash(key, keylen, buf, buflen);
}
