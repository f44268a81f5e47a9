import Glibc
import XenPlatform
import XenStore

/// A blocking, privileged xenstore connection the hypervisor uses for its own control
/// work (domain homes, introduce, release): one request at a time, so it needs no reader
/// thread and no async context.
struct ToolstackSession: ~Copyable {
    private let fd: Int32
    private var framer = XenStoreMessageFramer()
    private var nextRequestID: UInt32 = 1

    init(server: XenStoreServer) throws(PlatformError) {
        var fds: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) == 0 else {
            throw .system("socketpair", errno: errno)
        }
        server.attach(fileDescriptor: fds[0], identity: .tool)
        fd = fds[1]
    }

    deinit { close(fd) }

    /// Sends `request` and waits for its reply's payload; an XS_ERROR reply throws.
    @discardableResult
    mutating func perform(_ request: XenStoreRequest) throws(PlatformError) -> [UInt8] {
        let id = nextRequestID
        nextRequestID &+= 1
        let bytes = XenStoreMessage(type: request.type, requestID: id, payload: request.payload()).encoded()
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { send(fd, $0.baseAddress! + offset, $0.count - offset, Int32(MSG_NOSIGNAL)) }
            if n < 0 {
                if errno == EINTR { continue }
                throw .system("send to embedded xenstored", errno: errno)
            }
            offset += n
        }
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let next: XenStoreMessage?
            do { next = try framer.next() } catch { throw .hypervisor("embedded xenstored sent a malformed reply: \(error)") }
            if let reply = next {
                // Our privileged connection holds no watches, so every message answers a request.
                guard reply.requestID == id else { continue }
                if reply.type == .error {
                    throw .hypervisor("xenstore \(request.type) answered \(String(decoding: reply.payload.prefix { $0 != 0 }, as: UTF8.self))")
                }
                return reply.payload
            }
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n < 0 {
                if errno == EINTR { continue }
                throw .system("recv from embedded xenstored", errno: errno)
            }
            guard n > 0 else { throw .hypervisor("embedded xenstored closed the toolstack connection") }
            framer.append(Array(buffer[0 ..< n]))
        }
    }

    /// Introduces `domid` and lays out its home as libxl does, in one transaction-free
    /// sequence (nothing else writes these nodes before the domain exists).
    mutating func createHome(_ domid: DomainID, name: String) throws(PlatformError) {
        let home = XenStorePath.domainPath(domid)
        // libxl: the home and its `device`/`control` are dom0's, readable by the domain;
        // the first entry is the owner and everyone else's access.
        let readOnly = [XenStorePermission(domid: 0, access: .none), XenStorePermission(domid: domid, access: .read)]
        let own = [XenStorePermission(domid: domid, access: .none)]
        try perform(.introduce(domid: domid, mfn: 0, port: 0))
        try perform(.mkdir(path: Array(home.utf8)))
        try perform(.setPerms(path: Array(home.utf8), permissions: readOnly))
        try perform(.write(path: Array((home + "/name").utf8), value: Array(name.utf8)))
        try perform(.write(path: Array((home + "/domid").utf8), value: Array("\(domid)".utf8)))
        for sub in ["device", "control"] {
            try perform(.mkdir(path: Array((home + "/" + sub).utf8)))
            try perform(.setPerms(path: Array((home + "/" + sub).utf8), permissions: readOnly))
        }
        for sub in ["data", "drivers", "feature", "attr", "error"] {
            try perform(.mkdir(path: Array((home + "/" + sub).utf8)))
            try perform(.setPerms(path: Array((home + "/" + sub).utf8), permissions: own))
        }
    }
}
