import Glibc
import Synchronization
import XenStore

/// The client's end of a socketpair whose other end the embedded xenstored serves with
/// the identity the hypervisor chose: no socket file, and nothing the client sends can
/// change who it is.
final class SocketPairTransport: XenStoreTransport {
    private let fd: Int32
    private let sendLock = Mutex<Bool>(false)

    /// Takes ownership of `fd`, a connected blocking stream socket.
    init(fileDescriptor fd: Int32) {
        self.fd = fd
    }

    deinit { Glibc.close(fd) }

    func send(_ bytes: [UInt8]) throws(XenStoreError) {
        try sendLock.withLock { (closed: inout Bool) throws(XenStoreError) in
            guard !closed else { throw .connectionClosed }
            var offset = 0
            while offset < bytes.count {
                let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + offset, $0.count - offset, Int32(MSG_NOSIGNAL)) }
                if n < 0 {
                    if errno == EINTR { continue }
                    throw .systemCall("send(xenstored socketpair)", errno: errno)
                }
                offset += n
            }
        }
    }

    func receive(into buffer: UnsafeMutableRawBufferPointer) throws(XenStoreError) -> Int {
        while true {
            let n = recv(fd, buffer.baseAddress, buffer.count, 0)
            if n >= 0 { return n }
            if errno != EINTR { throw .systemCall("recv(xenstored socketpair)", errno: errno) }
        }
    }

    /// Shuts the socket down; the descriptor is closed with the transport, so a reader
    /// blocked in recv never sees it reused.
    func close() {
        sendLock.withLock { $0 = true }
        shutdown(fd, Int32(SHUT_RDWR))
    }
}
