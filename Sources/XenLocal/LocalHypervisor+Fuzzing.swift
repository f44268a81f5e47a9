import CXenLocal
import Glibc
import XenPlatform

extension LocalHypervisor {
    /// Serves `bytes` as a client of `domain` would send them, with no loop thread: a new
    /// connection (one end of a socket pair) takes them `pieceSize` bytes per read through
    /// the same framing, decoder and handlers as a socket's, and then ends as a closed
    /// socket does. Returns every byte the hypervisor wrote back (descriptors it passed are
    /// closed). The way in for the fuzz target (FuzzTargets' HypervisorFuzz); call it only
    /// on a hypervisor whose loop is not running.
    public func serveForFuzzing(domain: DomainID, bytes: [UInt8], pieceSize: Int) -> [UInt8] {
        var pair: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &pair) == 0 else {
            fatalError("socketpair: errno \(errno)")
        }
        _ = xl_set_nonblocking(pair[0])
        _ = xl_set_nonblocking(pair[1])
        let c = HypervisorConnection(fd: pair[0], domain: domain, pid: getpid())
        connections[pair[0]] = c
        var replies: [UInt8] = []
        func drain() {
            var buffer = [UInt8](repeating: 0, count: 65536)
            var fds = [Int32](repeating: -1, count: 16)
            while true {
                var count: Int32 = 0
                let n = buffer.withUnsafeMutableBytes { b in
                    fds.withUnsafeMutableBufferPointer { xl_recv_with_fds(pair[1], b.baseAddress, b.count, $0.baseAddress, 16, &count) }
                }
                for i in 0..<Int(count) { Glibc.close(fds[i]) }
                guard n > 0 else { return }
                replies += buffer[0..<n]
            }
        }
        var offset = 0
        let piece = max(1, pieceSize)
        while offset < bytes.count, !c.closed {
            let end = min(bytes.count, offset + piece)
            bytes[offset..<end].withUnsafeBytes { c.inbox.append($0) }
            offset = end
            processInbox(c)
            // What a slow reader's socket held back goes out once it reads, as POLLOUT does.
            while !c.closed {
                drain()
                let before = c.outbox.count + c.inbox.count
                flush(c)
                if !c.closed { processInbox(c) }
                if c.outbox.count + c.inbox.count == before { break }
            }
        }
        drain()
        disconnect(c, reason: "fuzz input ended")
        drain()
        Glibc.close(pair[1])
        return replies
    }
}
