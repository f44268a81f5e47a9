/// Payload and read buffers whose replies were sent, kept for the next request of their
/// exact size. A fresh buffer is a malloc on one thread and a free on another, whose
/// malloc arenas then contend; from 128 KiB up it is an mmap and a page fault per page
/// at first touch. Not synchronised: its owner keeps it under its own lock.
struct NBDSpareBuffers {
    /// Buffers at least this large (a page: every read and write a client like fio or the
    /// kernel sends) are kept.
    static var minimum: Int { 4 << 10 }

    /// Most buffers kept.
    let maximumCount: Int
    /// Most bytes kept: what the connection may hold in flight anyway, at most 16 MiB.
    let maximumBytes: Int
    /// Oldest first.
    private var buffers: [[UInt8]] = []
    private var bytes = 0

    init(maximumCount: Int, connectionBytes: Int) {
        self.maximumCount = maximumCount
        maximumBytes = min(connectionBytes, 16 << 20)
    }

    /// A kept buffer of exactly `count` bytes, the oldest such, if there is one.
    mutating func take(count: Int) -> [UInt8]? {
        guard count >= Self.minimum, let index = buffers.firstIndex(where: { $0.count == count }) else { return nil }
        bytes -= count
        return buffers.remove(at: index)
    }

    /// Keeps `buffer`, moved out of its owner (so the only reference to it is this one
    /// when it is handed out; a shared array would be copied on its first write), if it
    /// is large enough; the oldest go beyond the limits.
    mutating func keep(_ buffer: inout [UInt8]) {
        guard buffer.count >= Self.minimum, buffer.count <= maximumBytes else { return }
        var taken: [UInt8] = []
        swap(&taken, &buffer)
        bytes += taken.count
        buffers.append(taken)
        while bytes > maximumBytes || buffers.count > maximumCount {
            bytes -= buffers.removeFirst().count
        }
    }

    mutating func removeAll() {
        buffers = []
        bytes = 0
    }
}
