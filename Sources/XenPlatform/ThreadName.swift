import Glibc

/// Names the calling thread (at most 15 bytes are kept), so `top -H`, `ps -L` and
/// /proc tell a daemon's workers apart. Best effort: a failure only leaves the name.
/// Written through /proc because Swift's Glibc does not import pthread_setname_np.
public func nameThisThread(_ name: String) {
    let fd = open("/proc/thread-self/comm", O_WRONLY | O_CLOEXEC)
    guard fd >= 0 else { return }
    defer { close(fd) }
    let bytes = Array(name.utf8.prefix(15))
    _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
}
