// Preloaded by scripts/one-cpu-test.sh: the process (and every process it starts) sees
// one CPU, so Swift's cooperative pool has one thread and Dispatch sizes for one CPU.
// A test that blocks a thread of the pool while waiting for work that needs the pool
// then hangs at once instead of once in many runs on a busy two-core machine.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <sys/sysinfo.h>
#include <unistd.h>

long sysconf(int name) {
    static long (*next)(int);
    if (!next) next = (long (*)(int))dlsym(RTLD_NEXT, "sysconf");
    if (name == _SC_NPROCESSORS_ONLN || name == _SC_NPROCESSORS_CONF) return 1;
    return next(name);
}

int get_nprocs(void) { return 1; }
int get_nprocs_conf(void) { return 1; }
