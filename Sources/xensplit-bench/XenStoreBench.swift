import Dispatch
import Foundation
import XenStore

/// `xensplit-bench xenstore`: our xenstored over its Unix socket, driven by our Swift client
/// and, as the reference, by Xen's own C client library (libxenstore.so.4, loaded with
/// dlopen) against the same server in the same run. Reads/s and writes/s with 1 and 16
/// clients, and watch-event latency (p99) with 1 and 16 watchers.
func runXenStoreBench(arguments: [String]) async throws {
    var runs = 5
    var quick = false
    var i = 0
    while i < arguments.count {
        switch arguments[i] {
        case "--runs":
            guard i + 1 < arguments.count, let n = Int(arguments[i + 1]), n >= 1 else {
                throw XenStoreBenchError.usage("--runs takes a whole number >= 1")
            }
            runs = n
            i += 1
        case "--quick":
            quick = true
        default:
            throw XenStoreBenchError.usage("unknown option '\(arguments[i])'")
        }
        i += 1
    }
    let dir = "/tmp/xensplit-bench-xenstore-\(getpid())"
    try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    let socket = dir + "/socket"
    let server = try XenStoreServer()
    try server.listen(path: socket)
    try server.start()
    defer {
        server.stop()
        try? FileManager.default.removeItem(atPath: dir)
    }
    let c = try LibXenStore(socket: socket)
    let operations = quick ? 2000 : 20000
    let events = quick ? 200 : 2000

    let setup = try XenStoreClient(socketPath: socket)
    defer { setup.close() }
    try await setup.write("/bench/key", "value-0123456789")
    for k in 0 ..< 16 { try await setup.write("/bench/c\(k)", "v") }

    for clients in [1, 16] {
        var reads = BenchComparison(name: "xenstore_read_\(clients)c", unit: "ops/s")
        var writes = BenchComparison(name: "xenstore_write_\(clients)c", unit: "ops/s")
        let swiftClients = try (0 ..< clients).map { _ in try XenStoreClient(socketPath: socket) }
        defer { swiftClients.forEach { $0.close() } }
        let handles = try (0 ..< clients).map { _ in try c.open() }
        defer { handles.forEach { c.close($0) } }
        let perClient = operations / clients
        for _ in 0 ..< runs {
            reads.ours.append(try await swiftRate(swiftClients, perClient) { client, k in
                _ = try await client.read(clients == 1 ? "/bench/key" : "/bench/c\(k)")
            })
            reads.reference.append(try c.rate(handles, perClient) { h, k in
                try c.read(h, clients == 1 ? "/bench/key" : "/bench/c\(k)")
            })
            writes.ours.append(try await swiftRate(swiftClients, perClient) { client, k in
                try await client.write("/bench/c\(k)", "written")
            })
            writes.reference.append(try c.rate(handles, perClient) { h, k in
                try c.write(h, "/bench/c\(k)", "written")
            })
        }
        print(reads.line)
        print(writes.line)
    }

    for watchers in [1, 16] {
        var latency = BenchComparison(name: "xenstore_watch_\(watchers)w_p99_us", unit: "us")
        latency.lowerIsBetter = true
        for run in 0 ..< runs {
            latency.ours.append(try await swiftWatchP99(socket: socket, watchers: watchers, events: events, run: run))
            latency.reference.append(try c.watchP99(watchers: watchers, events: events, run: run))
        }
        print(latency.line)
    }
}

enum XenStoreBenchError: Error, CustomStringConvertible {
    case usage(String)
    case reference(String)

    var description: String {
        switch self {
        case let .usage(m): return "xenstore bench: \(m)"
        case let .reference(m): return "libxenstore reference: \(m)"
        }
    }
}

/// Operations per second for `clients` concurrent Swift clients doing `perClient` each.
private func swiftRate(_ clients: [XenStoreClient], _ perClient: Int,
                       _ op: @escaping @Sendable (XenStoreClient, Int) async throws -> Void) async throws -> Double {
    let start = now()
    try await withThrowingTaskGroup(of: Void.self) { group in
        for (k, client) in clients.enumerated() {
            group.addTask {
                for _ in 0 ..< perClient { try await op(client, k) }
            }
        }
        try await group.waitForAll()
    }
    return Double(perClient * clients.count) / (now() - start)
}

/// p99 of write-to-event latency, in microseconds: one writer, `watchers` clients each
/// watching the path; after each write the writer takes the event from every watcher in
/// turn (the reference does exactly the same with libxenstore).
private func swiftWatchP99(socket: String, watchers: Int, events: Int, run: Int) async throws -> Double {
    let writer = try XenStoreClient(socketPath: socket)
    let clients = try (0 ..< watchers).map { _ in try XenStoreClient(socketPath: socket) }
    defer {
        writer.close()
        clients.forEach { $0.close() }
    }
    let path = "/bench/watch-swift-\(run)"
    try await writer.write(path, "0")
    var iterators: [XenStoreWatch.AsyncIterator] = []
    for client in clients {
        var it = try await client.watch(path).makeAsyncIterator()
        _ = await it.next()
        iterators.append(it)
    }
    var samples: [Double] = []
    samples.reserveCapacity(events * watchers)
    for n in 0 ..< events {
        let t0 = now()
        try await writer.write(path, "\(n)")
        for k in iterators.indices {
            guard await iterators[k].next() != nil else { throw XenStoreError.connectionClosed }
            samples.append((now() - t0) * 1e6)
        }
    }
    return percentile99(samples)
}

func percentile99(_ samples: [Double]) -> Double {
    let sorted = samples.sorted()
    return sorted[min(sorted.count - 1, Int(Double(sorted.count) * 0.99))]
}

/// Xen's C client library, loaded at run time so the build needs no C target.
final class LibXenStore: @unchecked Sendable {
    // SAFETY: the library handle and function pointers are immutable after init; each
    // xs_handle is used by one thread at a time.
    typealias Open = @convention(c) (UInt) -> OpaquePointer?
    typealias Close = @convention(c) (OpaquePointer?) -> Void
    typealias Read = @convention(c) (OpaquePointer?, UInt32, UnsafePointer<CChar>, UnsafeMutablePointer<UInt32>?) -> UnsafeMutableRawPointer?
    typealias Write = @convention(c) (OpaquePointer?, UInt32, UnsafePointer<CChar>, UnsafeRawPointer?, UInt32) -> Bool
    typealias Watch = @convention(c) (OpaquePointer?, UnsafePointer<CChar>, UnsafePointer<CChar>) -> Bool
    typealias ReadWatch = @convention(c) (OpaquePointer?, UnsafeMutablePointer<UInt32>) -> UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?

    let socket: String
    private let xsOpen: Open
    private let xsClose: Close
    private let xsRead: Read
    private let xsWrite: Write
    private let xsWatch: Watch
    private let xsReadWatch: ReadWatch

    init(socket: String) throws {
        self.socket = socket
        guard let lib = dlopen("libxenstore.so.4", RTLD_NOW) else {
            throw XenStoreBenchError.reference("dlopen libxenstore.so.4 failed (install libxenstore4)")
        }
        func symbol<T>(_ name: String, _: T.Type) throws -> T {
            guard let p = dlsym(lib, name) else { throw XenStoreBenchError.reference("no symbol \(name)") }
            return unsafeBitCast(p, to: T.self)
        }
        xsOpen = try symbol("xs_open", Open.self)
        xsClose = try symbol("xs_close", Close.self)
        xsRead = try symbol("xs_read", Read.self)
        xsWrite = try symbol("xs_write", Write.self)
        xsWatch = try symbol("xs_watch", Watch.self)
        xsReadWatch = try symbol("xs_read_watch", ReadWatch.self)
        // libxenstore finds the daemon the same way our client does.
        setenv("XENSTORED_PATH", socket, 1)
    }

    /// A libxenstore handle, used by one thread at a time.
    struct Handle: @unchecked Sendable {
        let raw: OpaquePointer
    }

    func open() throws -> Handle {
        guard let h = xsOpen(2) else { throw XenStoreBenchError.reference("xs_open(XS_OPEN_SOCKETONLY) failed") }
        return Handle(raw: h)
    }

    func close(_ h: Handle) { xsClose(h.raw) }

    func read(_ h: Handle, _ path: String) throws {
        var length: UInt32 = 0
        guard let p = xsRead(h.raw, 0, path, &length) else { throw XenStoreBenchError.reference("xs_read \(path) errno \(errno)") }
        free(p)
    }

    func write(_ h: Handle, _ path: String, _ value: String) throws {
        let ok = value.withCString { xsWrite(h.raw, 0, path, $0, UInt32(strlen($0))) }
        guard ok else { throw XenStoreBenchError.reference("xs_write \(path) errno \(errno)") }
    }

    func watch(_ h: Handle, _ path: String, _ token: String) throws {
        guard xsWatch(h.raw, path, token) else { throw XenStoreBenchError.reference("xs_watch \(path) errno \(errno)") }
    }

    func readWatch(_ h: Handle) throws {
        var n: UInt32 = 0
        guard let v = xsReadWatch(h.raw, &n) else { throw XenStoreBenchError.reference("xs_read_watch errno \(errno)") }
        free(v)
    }

    /// Operations per second for one thread per handle doing `perClient` each.
    func rate(_ handles: [Handle], _ perClient: Int, _ op: @escaping @Sendable (Handle, Int) throws -> Void) throws -> Double {
        let group = DispatchGroup()
        let failure = FailureBox()
        let start = now()
        for (k, h) in handles.enumerated() {
            group.enter()
            let thread = Thread {
                defer { group.leave() }
                do {
                    for _ in 0 ..< perClient { try op(h, k) }
                } catch {
                    failure.record(error)
                }
            }
            thread.start()
        }
        group.wait()
        let elapsed = now() - start
        if let error = failure.error { throw error }
        return Double(perClient * handles.count) / elapsed
    }

    func watchP99(watchers: Int, events: Int, run: Int) throws -> Double {
        let writer = try open()
        defer { close(writer) }
        let handles = try (0 ..< watchers).map { _ in try open() }
        defer { handles.forEach { close($0) } }
        let path = "/bench/watch-c-\(run)"
        try write(writer, path, "0")
        for h in handles {
            try watch(h, path, "t")
            try readWatch(h)
        }
        var samples: [Double] = []
        samples.reserveCapacity(events * watchers)
        for n in 0 ..< events {
            let t0 = now()
            try write(writer, path, "\(n)")
            for h in handles {
                try readWatch(h)
                samples.append((now() - t0) * 1e6)
            }
        }
        return percentile99(samples)
    }
}

private final class FailureBox: @unchecked Sendable {
    // SAFETY: guarded by the lock.
    private let lock = NSLock()
    private var first: Error?
    func record(_ e: Error) {
        lock.lock()
        if first == nil { first = e }
        lock.unlock()
    }
    var error: Error? {
        lock.lock()
        defer { lock.unlock() }
        return first
    }
}
