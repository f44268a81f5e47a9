#ifndef XENSPLIT_CURING_H
#define XENSPLIT_CURING_H
// Thin wrappers over liburing 2.3. liburing's preparation and ring-access helpers are
// `static inline`; these wrappers give Swift one stable, importable function per operation.
// Each `curing_prep_*` takes a free submission entry, fills it and tags it with the caller's
// user data; it returns 0, or -EBUSY when the submission queue has no free entry.
#include <errno.h>
#include <stdint.h>
#include <sys/uio.h>
#include <sys/timerfd.h>
#include <unistd.h>
#include <liburing.h>

/// IOSQE_FIXED_FILE (a macro, which Swift cannot import).
static const uint8_t CURING_IOSQE_FIXED_FILE = IOSQE_FIXED_FILE;
/// IOSQE_ASYNC: go straight to io_uring's worker threads, without an inline attempt.
static const uint8_t CURING_IOSQE_ASYNC = IOSQE_ASYNC;

/// eventfd(2) with EFD_CLOEXEC | EFD_NONBLOCK (the header needs _GNU_SOURCE, so the
/// call is compiled in CURing.c). Returns the fd or -1 with errno set.
int curing_eventfd(unsigned int initial_value);

/// fallocate(2), likewise compiled in CURing.c. Returns 0 or -1 with errno set.
int curing_fallocate(int fd, int mode, int64_t offset, int64_t length);

/// Whether reads of `fd` can be tried without blocking (RWF_NOWAIT), which is what lets
/// io_uring complete them inline; 0 for files that refuse it (tmpfs, for one).
int curing_supports_nowait(int fd);

/// The direct I/O alignment of open file `fd` in bytes (statx STATX_DIOALIGN): of memory
/// buffers and of file offsets and lengths; both 0 when direct I/O is not done there.
/// Returns 0, or -1 with errno set.
int curing_dio_alignment(int fd, uint32_t *memory, uint32_t *offset);

/// O_DIRECT (its declaration, too, needs _GNU_SOURCE).
extern const int curing_o_direct;

/// One completion copied out of the completion queue.
struct curing_completion {
    uint64_t user_data;
    int32_t result;
    uint32_t flags;
};

/// The next free submission entry, or NULL when the queue is full.
static inline struct io_uring_sqe *curing_sqe(struct io_uring *ring) {
    return io_uring_get_sqe(ring);
}

/// Attaches the caller's user data and the entry flags (prep clears both).
static inline void curing_tag(struct io_uring_sqe *sqe, uint64_t user_data, uint8_t sqe_flags) {
    io_uring_sqe_set_data64(sqe, user_data);
    io_uring_sqe_set_flags(sqe, sqe_flags);
}

static inline int curing_prep_nop(struct io_uring *ring, uint64_t user_data) {
    struct io_uring_sqe *sqe = curing_sqe(ring);
    if (sqe == NULL) return -EBUSY;
    io_uring_prep_nop(sqe);
    curing_tag(sqe, user_data, 0);
    return 0;
}

/// Plain, vectored and fixed-buffer reads and writes: `opcode` is one of IORING_OP_READ,
/// _WRITE, _READV, _WRITEV, _READ_FIXED, _WRITE_FIXED. For the vectored forms `address`
/// points at `length` iovecs; otherwise at `length` bytes.
static inline int curing_prep_rw(struct io_uring *ring, uint8_t opcode, int fd, uint8_t sqe_flags,
                                 const void *address, uint32_t length, uint64_t offset,
                                 uint16_t buffer_index, uint64_t user_data) {
    struct io_uring_sqe *sqe = curing_sqe(ring);
    if (sqe == NULL) return -EBUSY;
    io_uring_prep_rw(opcode, sqe, fd, address, length, offset);
    sqe->buf_index = buffer_index;
    curing_tag(sqe, user_data, sqe_flags);
    return 0;
}

/// fsync, or fdatasync when `datasync` is nonzero.
static inline int curing_prep_fsync(struct io_uring *ring, int fd, uint8_t sqe_flags, int datasync,
                                    uint64_t user_data) {
    struct io_uring_sqe *sqe = curing_sqe(ring);
    if (sqe == NULL) return -EBUSY;
    io_uring_prep_fsync(sqe, fd, datasync ? IORING_FSYNC_DATASYNC : 0);
    curing_tag(sqe, user_data, sqe_flags);
    return 0;
}

static inline int curing_prep_fallocate(struct io_uring *ring, int fd, uint8_t sqe_flags, int mode,
                                        uint64_t offset, uint64_t length, uint64_t user_data) {
    struct io_uring_sqe *sqe = curing_sqe(ring);
    if (sqe == NULL) return -EBUSY;
    io_uring_prep_fallocate(sqe, fd, mode, (off_t)offset, (off_t)length);
    curing_tag(sqe, user_data, sqe_flags);
    return 0;
}

/// A one-shot poll for `events` (POLLIN, ...); the completion's result is the ready mask.
static inline int curing_prep_poll_add(struct io_uring *ring, int fd, uint8_t sqe_flags,
                                       uint32_t events, uint64_t user_data) {
    struct io_uring_sqe *sqe = curing_sqe(ring);
    if (sqe == NULL) return -EBUSY;
    io_uring_prep_poll_add(sqe, fd, events);
    curing_tag(sqe, user_data, sqe_flags);
    return 0;
}

static inline int curing_prep_poll_remove(struct io_uring *ring, uint64_t target,
                                          uint64_t user_data) {
    struct io_uring_sqe *sqe = curing_sqe(ring);
    if (sqe == NULL) return -EBUSY;
    io_uring_prep_poll_remove(sqe, target);
    curing_tag(sqe, user_data, 0);
    return 0;
}

/// A timeout that completes after `*ts` or after `count` other completions. The kernel reads
/// `*ts` while the entry is submitted, so it must stay valid until the next submit returns.
static inline int curing_prep_timeout(struct io_uring *ring, struct __kernel_timespec *ts,
                                      uint32_t count, uint64_t user_data) {
    struct io_uring_sqe *sqe = curing_sqe(ring);
    if (sqe == NULL) return -EBUSY;
    io_uring_prep_timeout(sqe, ts, count, 0);
    curing_tag(sqe, user_data, 0);
    return 0;
}

static inline int curing_prep_cancel(struct io_uring *ring, uint64_t target, uint64_t user_data) {
    struct io_uring_sqe *sqe = curing_sqe(ring);
    if (sqe == NULL) return -EBUSY;
    io_uring_prep_cancel64(sqe, target, 0);
    curing_tag(sqe, user_data, 0);
    return 0;
}

/// The index of the submission entry most recently taken (for per-entry side storage).
static inline unsigned curing_last_sqe_index(const struct io_uring *ring) {
    return (ring->sq.sqe_tail - 1) & ring->sq.ring_mask;
}

static inline unsigned curing_sq_space_left(const struct io_uring *ring) {
    return io_uring_sq_space_left(ring);
}

static inline unsigned curing_sq_ready(const struct io_uring *ring) {
    return io_uring_sq_ready(ring);
}

static inline unsigned curing_sq_entries(const struct io_uring *ring) {
    return ring->sq.ring_entries;
}

static inline unsigned curing_cq_entries(const struct io_uring *ring) {
    return ring->cq.ring_entries;
}

static inline unsigned curing_ring_flags(const struct io_uring *ring) {
    return ring->flags;
}

/// Copies up to `max` completions into `out` and releases their slots to the kernel.
/// Never enters the kernel.
static inline unsigned curing_reap(struct io_uring *ring, struct curing_completion *out,
                                   unsigned max) {
    unsigned ready = io_uring_cq_ready(ring);  // acquire load of the kernel's tail
    unsigned count = ready < max ? ready : max;
    unsigned head = *ring->cq.khead;
    for (unsigned i = 0; i < count; i++) {
        const struct io_uring_cqe *cqe = &ring->cq.cqes[(head + i) & ring->cq.ring_mask];
        out[i].user_data = cqe->user_data;
        out[i].result = cqe->res;
        out[i].flags = cqe->flags;
    }
    if (count > 0) io_uring_cq_advance(ring, count);  // release store of the new head
    return count;
}

static inline unsigned curing_cq_ready(const struct io_uring *ring) {
    return io_uring_cq_ready(ring);
}

/// Whether the kernel supports `opcode` according to a probe (0 if no probe).
static inline int curing_probe_supports(const struct io_uring_probe *probe, int opcode) {
    return probe != NULL && io_uring_opcode_supported(probe, opcode);
}

/// A non-blocking, close-on-exec CLOCK_MONOTONIC timerfd, or -errno.
static inline int curing_timerfd_create(void) {
    int fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

/// Arms `fd` to fire once after `seconds` + `nanoseconds` (both 0 disarms); 0 or -errno.
static inline int curing_timerfd_arm(int fd, long long seconds, long nanoseconds) {
    struct itimerspec spec = {{0, 0}, {(time_t)seconds, nanoseconds}};
    return timerfd_settime(fd, 0, &spec, NULL) < 0 ? -errno : 0;
}

#endif
