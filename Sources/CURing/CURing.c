// The C library calls whose declarations need _GNU_SOURCE; the rest of CURing is
// `static inline` in the header.
#define _GNU_SOURCE
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include "CURing.h"

const int curing_o_direct = O_DIRECT;

int curing_eventfd(unsigned int initial_value) {
    return eventfd(initial_value, EFD_CLOEXEC | EFD_NONBLOCK);
}

int curing_fallocate(int fd, int mode, int64_t offset, int64_t length) {
    return fallocate(fd, mode, (off_t)offset, (off_t)length);
}

int curing_supports_nowait(int fd) {
    // RWF_NOWAIT is refused with EOPNOTSUPP up front by files without non-blocking I/O;
    // any other outcome (data, EAGAIN, EINVAL for an O_DIRECT alignment) means support.
    char byte;
    struct iovec vector = {.iov_base = &byte, .iov_len = 1};
    ssize_t n = preadv2(fd, &vector, 1, 0, RWF_NOWAIT);
    return !(n < 0 && errno == EOPNOTSUPP);
}

int curing_dio_alignment(int fd, uint32_t *memory, uint32_t *offset) {
    struct statx info = {0};
    if (statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &info) != 0) return -1;
    // Without the bit the kernel (before 6.1) or the file system (tmpfs takes O_DIRECT and
    // stays buffered) reports no direct I/O.
    int reported = (info.stx_mask & STATX_DIOALIGN) != 0;
    *memory = reported ? info.stx_dio_mem_align : 0;
    *offset = reported ? info.stx_dio_offset_align : 0;
    return 0;
}
