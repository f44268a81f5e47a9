import Glibc
import Synchronization

/// A byte stream to xenstored. The client sends whole messages and reads whatever
/// arrives on one reader thread.
public protocol XenStoreTransport: AnyObject, Sendable {
    /// Sends every byte, blocking while the stream is full.
    func send(_ bytes: [UInt8]) throws(XenStoreError)
    /// Blocks until bytes arrive and copies up to `buffer.count` of them; 0 means the
    /// stream ended (closed by either side).
    func receive(into buffer: UnsafeMutableRawBufferPointer) throws(XenStoreError) -> Int
    /// Ends the stream; a blocked ``receive(into:)`` returns 0.
    func close()
}

/// xenstored's Unix socket.
public final class XenStoreSocketTransport: XenStoreTransport {
    private let fd: Int32
    private let sendLock = Mutex<Bool>(false)

    /// The socket libxenstore uses: `$XENSTORED_PATH` if set, else
    /// `$XENSTORED_RUN_DIR/socket`, else `/var/run/xenstored/socket`.
    public static func defaultPath(environment: [String: String]? = nil) -> String {
        let env = environment ?? Self.processEnvironment()
        if let path = env["XENSTORED_PATH"], !path.isEmpty { return path }
        return (env["XENSTORED_RUN_DIR"] ?? "/var/run/xenstored") + "/socket"
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

/// A condition a thread can wait on until another advances it.
final class Gate: @unchecked Sendable {
    // SAFETY: the mutex and condition are allocated once, initialised before use and
    // destroyed in deinit; `generation` and `closed` are read and written under the mutex.
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var generation: UInt64 = 0
    private var closed = false

    init() {
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(condition, nil)
    }

    deinit {
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
        condition.deallocate()
    }

    var current: UInt64 {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return generation
    }

    var isClosed: Bool {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return closed
    }

    func advance() {
        pthread_mutex_lock(mutex)
        generation &+= 1
        pthread_cond_broadcast(condition)
        pthread_mutex_unlock(mutex)
    }

    func close() {
        pthread_mutex_lock(mutex)
        closed = true
        pthread_cond_broadcast(condition)
        pthread_mutex_unlock(mutex)
    }

    /// Waits until the generation moves past `seen`; false if the gate closed.
    func wait(past seen: UInt64) -> Bool {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        while generation == seen && !closed { pthread_cond_wait(condition, mutex) }
        return !closed
    }
}
