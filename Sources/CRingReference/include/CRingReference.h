// The C reference: Xen's own io/ring.h macros from the system headers (libxen-dev),
// behind an opaque handle so interop tests and benchmarks can drive them from Swift.
#ifndef XENSPLIT_CRINGREFERENCE_H
#define XENSPLIT_CRINGREFERENCE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/// Entry shapes: rings declared with DEFINE_RING_TYPES from the system headers, plus two
/// of our own sizes so the "any entry size" rule is checked against the macros too.
enum cref_kind {
    CREF_BLKIF = 0,     // io/blkif.h blkif ring
    CREF_NETIF_TX = 1,  // io/netif.h netif_tx ring
    CREF_NETIF_RX = 2,  // io/netif.h netif_rx ring
    CREF_SMALL = 3,     // 8-byte requests, 4-byte responses
    CREF_WIDE = 4,      // 200-byte requests, 24-byte responses
    CREF_KIND_COUNT = 5
};

typedef struct cref_ring cref_ring;

size_t cref_request_size(int kind);
size_t cref_response_size(int kind);
size_t cref_entry_size(int kind);

/// A handle over `bytes` of shared memory at `mem`; touches nothing.
cref_ring *cref_ring_new(int kind, void *mem, size_t bytes);
void cref_ring_free(cref_ring *r);

/// SHARED_RING_INIT + FRONT_RING_INIT, and BACK_RING_INIT.
void cref_front_init(cref_ring *r);
void cref_back_init(cref_ring *r);
/// Sets the shared producers to `idx` and events to `idx + 1`, then FRONT/BACK_RING_ATTACH
/// at `idx` (used to start a sequence just below the 2^32 wrap).
void cref_attach_at(cref_ring *r, uint32_t idx);

unsigned cref_size(cref_ring *r);
unsigned cref_free_requests(cref_ring *r);
int cref_full(cref_ring *r);
uint32_t cref_req_prod_pvt(cref_ring *r);
uint32_t cref_rsp_cons(cref_ring *r);
uint32_t cref_rsp_prod_pvt(cref_ring *r);
uint32_t cref_req_cons(cref_ring *r);

// Frontend
void cref_produce_request(cref_ring *r, const void *src);
void cref_push_requests(cref_ring *r);
int cref_push_requests_and_check_notify(cref_ring *r);
unsigned cref_unconsumed_responses(cref_ring *r);
void cref_consume_response(cref_ring *r, void *dst);
int cref_final_check_for_responses(cref_ring *r);

// Backend
unsigned cref_unconsumed_requests(cref_ring *r);
int cref_request_cons_overflow(cref_ring *r, uint32_t idx);
int cref_request_prod_overflow(cref_ring *r, uint32_t prod);
void cref_consume_request(cref_ring *r, void *dst);
void cref_produce_response(cref_ring *r, const void *src);
void cref_push_responses(cref_ring *r);
int cref_push_responses_and_check_notify(cref_ring *r);
int cref_final_check_for_requests(cref_ring *r);

/// Initialises a blkif ring over `bytes` at `mem` (frontend side, before both loops run).
void cref_blkif_init(void *mem, size_t bytes);

/// The benchmark request: BLKIF_OP_READ, handle 0, all 11 segments (segment i: gref
/// CREF_BENCH_FIRST_GREF + i, sectors 0..7), id and sector_number both the request's
/// number 0, 1, 2...; padding zero. Written whole into its slot (112 bytes on x86_64).
#define CREF_BENCH_FIRST_GREF 1000u

/// A blkif frontend written with the macros: issues `count` benchmark requests (ids
/// 0..count-1) with at most `depth` outstanding, takes each response out with
/// RING_COPY_RESPONSE and checks its id against the outstanding set, its status (OKAY)
/// and operation (READ). `notify_fd` < 0 busy-polls; otherwise the backend is kicked
/// through the eventfd `notify_fd` and this side sleeps on the eventfd `wait_fd`.
/// Returns responses seen, or -1 for an unknown or duplicate id, -2 for a response
/// overrun, -3 if out of memory, -4 for a response other than OKAY to a READ.
long cref_blkif_front_run(void *mem, size_t bytes, uint64_t count, unsigned depth,
                          int notify_fd, int wait_fd);

/// What a backend run did, to check that two backends did the same work.
typedef struct cref_blkif_tally {
    /// Requests answered.
    uint64_t answered;
    /// Of those, answered BLKIF_RSP_ERROR because they were invalid.
    uint64_t refused;
    /// Over the valid requests: sector_number plus each used segment's gref, first_sect
    /// and last_sect (wrapping).
    uint64_t digest;
} cref_blkif_tally;

/// A blkif backend written with the macros: answers `count` requests in arrival order.
/// Each is taken out whole with RING_COPY_REQUEST and validated from the copy (a direct
/// operation, a segment count it allows, every segment's sectors within its page); the
/// response (id and operation echoed, OKAY or ERROR, padding zero) is written whole.
/// Fills `tally`; returns requests answered, or -2 for a producer overrun.
long cref_blkif_back_serve(void *mem, size_t bytes, uint64_t count, int notify_fd, int wait_fd,
                           cref_blkif_tally *tally);

/// ``cref_blkif_back_serve`` without the tally.
long cref_blkif_back_run(void *mem, size_t bytes, uint64_t count, int notify_fd, int wait_fd);

/// Forks a process that writes one byte to `ready_fd` and then runs
/// ``cref_blkif_front_run`` over `mem` (which must be a MAP_SHARED mapping) with the
/// inherited eventfds, exiting 0 if every response came back and 1 otherwise. The child
/// runs only this C code. Returns the child's pid (or -1, errno set), as fork(2) does.
pid_t cref_blkif_front_fork(void *mem, size_t bytes, uint64_t count, unsigned depth,
                            int notify_fd, int wait_fd, int ready_fd);

/// A new blocking, close-on-exec eventfd, or -1.
int cref_eventfd(void);

/// offsetof/sizeof of `structure.field` from the system headers ("blkif_sring" stands for
/// any sring; field "(size)" is the struct size). Returns 0, or -1 if unknown.
int cref_layout(const char *structure, const char *field, long *offset, long *size);
/// A constant from the system headers by its Protocols/ name, or -1000000 if unknown.
long cref_constant(const char *name);

/// io/netif.h's own xen_netif_toeplitz_hash over `buf` with `key`.
uint32_t cref_netif_toeplitz(const uint8_t *key, unsigned int keylen, const uint8_t *buf, unsigned int buflen);

/// Pins the calling thread to one CPU; returns 0 or an errno.
int cref_pin_to_cpu(int cpu);

#endif
