/// How an operation names its file: a plain descriptor, or an index into the files the
/// engine registered (io_uring then skips the per-operation file lookup).
public enum FileReference: Equatable, Sendable {
    /// An open file descriptor.
    case descriptor(Int32)
    /// An index into the table given to `registerFiles`.
    case registered(UInt32)
}
