import CXenLocal
import Glibc
import Synchronization
import XenPlatform

/// A connection to the local hypervisor: one request at a time, answered in order.
final class HypervisorClient: Sendable {
    let fd: Int32
    private let state = Mutex<UInt32>(0)

    init(path: String) throws(PlatformError) {
        let fd = xl_connect_unix(path)
        guard fd >= 0 else {
            throw .hypervisor("cannot connect to \(path): \(String(cString: strerror(-fd))); is `xensplit hypervisor` running with this --state-dir?")
        }
        self.fd = fd
    }

    deinit { Glibc.close(fd) }

    struct Reply {
        var status: Int32
        var payload: [UInt8]
        var fds: [Int32]
    }

    /// Sends one request and waits for its reply. Descriptors in the reply belong to the
    /// caller.
    func call(_ kind: HypervisorMessage.Kind, _ payload: [UInt8] = []) throws(PlatformError) -> Reply {
        try state.withLock { (tag: inout UInt32) throws(PlatformError) -> Reply in
            tag &+= 1
            let bytes = HypervisorMessage(kind: kind, tag: tag, payload: payload).encoded()
            var sent = 0
            while sent < bytes.count {
                let n = bytes.withUnsafeBytes { xl_send_with_fds(fd, $0.baseAddress! + sent, bytes.count - sent, nil, 0) }
                guard n > 0 else { throw .hypervisor("send \(kind): \(String(cString: strerror(Int32(-n))))") }
                sent += n
            }
            var fds: [Int32] = []
            let header = try receive(HypervisorMessage.headerSize, fds: &fds)
            let h: (kind: HypervisorMessage.Kind, tag: UInt32, status: Int32, length: Int)
            do { h = try HypervisorMessage.decodeHeader(header) } catch {
                for f in fds { Glibc.close(f) }
                throw .hypervisor("malformed reply: \(error)")
            }
            let body = try receive(h.length, fds: &fds)
            guard h.kind == kind, h.tag == tag else {
                for f in fds { Glibc.close(f) }
                throw .hypervisor("reply \(h.kind)/\(h.tag) does not answer \(kind)/\(tag)")
            }
            return Reply(status: h.status, payload: body, fds: fds)
        }
    }

    private func receive(_ count: Int, fds: inout [Int32]) throws(PlatformError) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        var got = 0
        while got < count {
            var received = [Int32](repeating: -1, count: 16)
            var nfds: Int32 = 0
            let n = out.withUnsafeMutableBytes { b in
                received.withUnsafeMutableBufferPointer { xl_recv_with_fds(fd, b.baseAddress! + got, count - got, $0.baseAddress, 16, &nfds) }
            }
            fds += received[0..<Int(nfds)]
            guard n > 0 else {
                throw .hypervisor(n == 0 ? "the hypervisor closed the connection" : "receive: \(String(cString: strerror(Int32(-n))))")
            }
            got += n
        }
        return out
    }
}

extension HypervisorClient.Reply {
    /// Throws the platform error a non-zero status stands for.
    func check(_ what: String) throws(PlatformError) {
        guard status != 0 else { return }
        if status < 0, let grant = GrantStatus(rawValue: Int16(clamping: status)) {
            var r = PayloadReader(payload)
            let ref = (try? r.u32("ref")) ?? 0
            throw .grant(grant, ref: ref, domain: 0, reason: String(decoding: r.rest(), as: UTF8.self))
        }
        let message = String(decoding: payload, as: UTF8.self)
        throw .hypervisor("\(what): \(String(cString: strerror(status))) (errno \(status))\(message.isEmpty ? "" : ": " + message)")
    }
}
