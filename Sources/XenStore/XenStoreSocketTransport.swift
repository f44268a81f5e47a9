import Glibc
import Synchronization

/// xenstored's Unix socket.
public final class XenStoreSocketTransport: XenStoreTransport {
    private let fd: Int32
    private let sendLock = Mutex<Bool>(false)

    /// The socket libxenstore uses: `$XENSTORED_PATH` if set, else
    /// `$XENSTORED_RUNDIR/socket`, else `/var/run/xenstored/socket`.
    public static func defaultPath(environment: [String: String]? = nil) -> String {
        let env = environment ?? Self.processEnvironment()
        if let path = env["XENSTORED_PATH"], !path.isEmpty { return path }
        return (env["XENSTORED_RUNDIR"] ?? "/var/run/xenstored") + "/socket"
    }

    /// Connects to `path`, or to ``defaultPath(environment:)``.
    public init(path: String? = nil) throws(XenStoreError) {
        fd = try Syscall.connect(path: path ?? Self.defaultPath())
    }

    deinit { Glibc.close(fd) }

    public func send(_ bytes: [UInt8]) throws(XenStoreError) {
        try sendLock.withLock { (closed: inout Bool) throws(XenStoreError) in
            guard !closed else { throw .connectionClosed }
            var offset = 0
            while offset < bytes.count {
                let n = try Syscall.retrying("send(xenstored)") {
                    bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + offset, $0.count - offset, Int32(MSG_NOSIGNAL)) }
                }
                offset += n
            }
        }
    }

    public func receive(into buffer: UnsafeMutableRawBufferPointer) throws(XenStoreError) -> Int {
        try Syscall.retrying("recv(xenstored)") { recv(fd, buffer.baseAddress, buffer.count, 0) }
    }

    /// Shuts the socket down; the descriptor itself is closed when the transport goes, so
    /// a reader blocked in recv never sees it reused.
    public func close() {
        sendLock.withLock { $0 = true }
        shutdown(fd, Int32(SHUT_RDWR))
    }

    private static func processEnvironment() -> [String: String] {
        var result: [String: String] = [:]
        var p = environ
        while let entry = p.pointee {
            let text = String(cString: entry)
            if let eq = text.firstIndex(of: "=") {
                result[String(text[..<eq])] = String(text[text.index(after: eq)...])
            }
            p += 1
        }
        return result
    }
}
