// Single-access loads, stores, atomics and fences on memory another party can change.
// Swift has no volatile; these compile to one machine access each, so a value the peer
// writes is fetched exactly once (the XSA-155 double-fetch class) and never torn.
#ifndef XENSPLIT_CSHAREDMEMORY_H
#define XENSPLIT_CSHAREDMEMORY_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

static inline uint8_t xsm_load8(const void *p) {
    return __atomic_load_n((const uint8_t *)p, __ATOMIC_RELAXED);
}
static inline uint16_t xsm_load16(const void *p) {
    return __atomic_load_n((const uint16_t *)p, __ATOMIC_RELAXED);
}
static inline uint32_t xsm_load32(const void *p) {
    return __atomic_load_n((const uint32_t *)p, __ATOMIC_RELAXED);
}
static inline uint64_t xsm_load64(const void *p) {
    return __atomic_load_n((const uint64_t *)p, __ATOMIC_RELAXED);
}
static inline void xsm_store8(void *p, uint8_t v) { __atomic_store_n((uint8_t *)p, v, __ATOMIC_RELAXED); }
static inline void xsm_store16(void *p, uint16_t v) { __atomic_store_n((uint16_t *)p, v, __ATOMIC_RELAXED); }
static inline void xsm_store32(void *p, uint32_t v) { __atomic_store_n((uint32_t *)p, v, __ATOMIC_RELAXED); }
static inline void xsm_store64(void *p, uint64_t v) { __atomic_store_n((uint64_t *)p, v, __ATOMIC_RELAXED); }

// Misaligned fields (the x86_32 ABI packs uint64_t at 4-byte alignment) are copied
// byte by byte through a volatile pointer: still one read of each byte.
static inline void xsm_copy_in(void *dst, const void *src, size_t n) {
    const volatile uint8_t *s = (const volatile uint8_t *)src;
    uint8_t *d = (uint8_t *)dst;
    for (size_t i = 0; i < n; i++) d[i] = s[i];
}
static inline void xsm_copy_out(void *dst, const void *src, size_t n) {
    volatile uint8_t *d = (volatile uint8_t *)dst;
    const uint8_t *s = (const uint8_t *)src;
    for (size_t i = 0; i < n; i++) d[i] = s[i];
}
// Bulk copies of whole entries or pages: memcpy reads each byte once into private memory.
static inline void xsm_memcpy(void *dst, const void *src, size_t n) { memcpy(dst, src, n); }
static inline void xsm_memset(void *dst, int c, size_t n) { memset(dst, c, n); }

// Ordering codes: 0 relaxed, 1 acquire, 2 release, 3 acq_rel, 4 seq_cst.
static inline uint32_t xsm_atomic_load32(const void *p, int o) {
    switch (o) {
    case 1: return __atomic_load_n((const uint32_t *)p, __ATOMIC_ACQUIRE);
    case 4: return __atomic_load_n((const uint32_t *)p, __ATOMIC_SEQ_CST);
    default: return __atomic_load_n((const uint32_t *)p, __ATOMIC_RELAXED);
    }
}
static inline void xsm_atomic_store32(void *p, uint32_t v, int o) {
    switch (o) {
    case 2: __atomic_store_n((uint32_t *)p, v, __ATOMIC_RELEASE); break;
    case 4: __atomic_store_n((uint32_t *)p, v, __ATOMIC_SEQ_CST); break;
    default: __atomic_store_n((uint32_t *)p, v, __ATOMIC_RELAXED); break;
    }
}
static inline void xsm_fence(int o) {
    switch (o) {
    case 1: __atomic_thread_fence(__ATOMIC_ACQUIRE); break;
    case 2: __atomic_thread_fence(__ATOMIC_RELEASE); break;
    case 3: __atomic_thread_fence(__ATOMIC_ACQ_REL); break;
    case 4: __atomic_thread_fence(__ATOMIC_SEQ_CST); break;
    default: break;
    }
}
// Compare-exchange, sequentially consistent as Xen's cmpxchg on grant entries.
// Returns 1 on success; *expected receives the value seen.
static inline int xsm_cmpxchg16(void *p, uint16_t *expected, uint16_t desired) {
    return __atomic_compare_exchange_n((uint16_t *)p, expected, desired, 0,
                                       __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
}
static inline int xsm_cmpxchg32(void *p, uint32_t *expected, uint32_t desired) {
    return __atomic_compare_exchange_n((uint32_t *)p, expected, desired, 0,
                                       __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
}
static inline uint32_t xsm_fetch_add32(void *p, uint32_t v) {
    return __atomic_fetch_add((uint32_t *)p, v, __ATOMIC_SEQ_CST);
}

// A close-on-exec memfd (see CSharedMemory.c).
int xsm_memfd_create(const char *name);

#endif
