#define _GNU_SOURCE
#include <sys/mman.h>
#include "CSharedMemory.h"

// Glibc declares memfd_create only under _GNU_SOURCE, which Swift's Glibc module lacks.
int xsm_memfd_create(const char *name) {
    return memfd_create(name, MFD_CLOEXEC);
}
