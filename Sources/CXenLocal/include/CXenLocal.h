// System calls Swift cannot reach directly: CMSG macros for passing descriptors over Unix
// sockets, eventfd and epoll. One wrapper per call; errors come back as -errno.
#ifndef XENSPLIT_CXENLOCAL_H
#define XENSPLIT_CXENLOCAL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/epoll.h>

/// sendmsg of `len` bytes with up to 16 descriptors attached. Returns bytes sent or -errno.
ssize_t xl_send_with_fds(int sock, const void *buf, size_t len, const int *fds, int nfds);
/// recvmsg into `buf`, collecting up to `max_fds` descriptors (close-on-exec). Returns
/// bytes received (0 at EOF) or -errno; *nfds receives the descriptor count.
ssize_t xl_recv_with_fds(int sock, void *buf, size_t len, int *fds, int max_fds, int *nfds);

/// A close-on-exec eventfd; non-blocking if `nonblocking`. Returns fd or -errno.
int xl_eventfd(int nonblocking);
/// Adds 1 to an eventfd's counter. Returns 0 or -errno.
int xl_eventfd_signal(int fd);
/// Reads and clears an eventfd's counter. Returns the count, 0 if it was zero
/// (non-blocking fd), or -errno.
int64_t xl_eventfd_drain(int fd);

/// epoll_create1(EPOLL_CLOEXEC). Returns fd or -errno.
int xl_epoll_create(void);
/// Adds `fd` for input, tagging it with `tag`. Returns 0 or -errno.
int xl_epoll_add(int epfd, int fd, uint32_t tag);
/// Removes `fd`. Returns 0 or -errno.
int xl_epoll_del(int epfd, int fd);
/// Takes up to `max` (at most 64) ready tags without waiting: how many, or -errno.
int xl_epoll_wait_tags(int epfd, uint32_t *tags, int max);

/// epoll_ctl with `op` (EPOLL_CTL_ADD, _MOD or _DEL) for `events`, level-triggered, with
/// `token` as the event's data. Returns 0 or -errno.
int xl_epoll_control(int epfd, int op, int fd, uint32_t events, uint64_t token);
/// Waits up to `timeout_ms` (-1: no limit) for at most `max` (at most 64) ready
/// descriptors: their tokens and events. Returns how many, or -errno (-EINTR included).
int xl_epoll_wait_events(int epfd, uint64_t *tokens, uint32_t *events, int max, int timeout_ms);

/// The peer's pid from SO_PEERCRED, or -errno.
int xl_peer_pid(int sock);

/// A listening Unix stream socket at `path` (replacing a stale one), mode 0600. fd or -errno.
int xl_listen_unix(const char *path, int backlog);
/// A connected Unix stream socket. fd or -errno.
int xl_connect_unix(const char *path);
/// accept4 with CLOEXEC and NONBLOCK. fd or -errno.
int xl_accept(int listener);
/// Sets O_NONBLOCK. 0 or -errno.
int xl_set_nonblocking(int fd);

/// posix_spawn of `path` with `argv` and `envp` (NULL-terminated) in a process group of
/// its own, signal mask and dispositions reset, stdin and stdout on /dev/null, stderr on
/// `stderr_fd`, every other descriptor closed. Returns 0 with *pid set, or -errno.
int xl_spawn(const char *path, char *const argv[], char *const envp[], int stderr_fd, pid_t *pid);
/// pipe2 with O_CLOEXEC: fds[0] reads, fds[1] writes. 0 or -errno.
int xl_pipe_cloexec(int fds[2]);
/// pidfd_open(pid, 0): a close-on-exec descriptor readable once the process exits. fd or -errno.
int xl_pidfd_open(pid_t pid);

/// setns(fd, CLONE_NEWNET): moves the calling thread (and what it spawns) into a network namespace.
int xl_setns_net(int fd);

#endif
