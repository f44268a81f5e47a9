import CURing

/// Whether reads of `descriptor` can be tried without blocking (`RWF_NOWAIT`). io_uring
/// tries each transfer inline first and hands it to its worker threads only when that
/// would block; a file without non-blocking I/O (tmpfs, for one) always ends up there, so
/// its transfers are better queued with ``BlockRequest/alwaysAsync`` and skip the try.
public func supportsNonblockingIO(_ descriptor: Int32) -> Bool {
    curing_supports_nowait(descriptor) != 0
}
