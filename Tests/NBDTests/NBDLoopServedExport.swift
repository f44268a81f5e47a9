import BlockFrontend
import Glibc
import Synchronization
@testable import NBD

/// `inner` with a loop thread of its own that serves attached clients the way a
/// frontend's I/O thread serves ``NBDBlockFrontendExport``'s, so the server's tests run
/// the loop transmission (``NBDLoopClient``) as well as the threaded one. Completions
/// of the memory export run at once, on the loop thread.
final class NBDLoopServedExport<Inner: NBDExport>: NBDLoopExport, @unchecked Sendable {
    // @unchecked: `thread` is written before the loop starts and read by stop() only.
    struct State {
        var clients: [NBDLoopClient] = []
        var version = 0
        var stopped = false
    }

    let inner: Inner
    private let state = Mutex(State())
    /// The version the loop serves; Int.max once it has ended.
    private let served = Atomic<Int>(0)
    private let wakeUp: [Int32]
    private var thread: pthread_t?

    init(_ inner: Inner) throws {
        self.inner = inner
        var fds: [Int32] = [-1, -1]
        guard pipe(&fds) == 0 else { throw NBDError.system(call: "pipe", errno: errno) }
        for fd in fds { _ = fcntl(fd, F_SETFL, O_NONBLOCK) }
        wakeUp = fds
        thread = try spawnThread { [self] in loop() }
    }

    var size: UInt64 { inner.size }
    var blockSizes: NBDBlockSizes { inner.blockSizes }
    var isReadOnly: Bool { inner.isReadOnly }
    var features: NBDExportFeatures { inner.features }
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(NBDError) {
        try inner.read(into: buffer, at: offset)
    }
    func write(_ buffer: UnsafeRawBufferPointer, at offset: UInt64, fua: Bool) throws(NBDError) {
        try inner.write(buffer, at: offset, fua: fua)
    }
    func flush() throws(NBDError) { try inner.flush() }
    func trim(at offset: UInt64, length: UInt64, fua: Bool) throws(NBDError) {
        try inner.trim(at: offset, length: length, fua: fua)
    }
    func writeZeroes(at offset: UInt64, length: UInt64, mayPunchHole: Bool, fua: Bool) throws(NBDError) {
        try inner.writeZeroes(at: offset, length: length, mayPunchHole: mayPunchHole, fua: fua)
    }
    func submit(_ command: NBDExportCommand, completion: @escaping NBDExportCompletion) {
        inner.submit(command, completion: completion)
    }

    var attachedClients: Int { state.withLock { $0.clients.count } }

    func attach(_ client: NBDLoopClient) -> Bool {
        let attached = state.withLock { s -> Bool in
            guard !s.stopped else { return false }
            s.clients.append(client)
            s.version += 1
            return true
        }
        wake()
        return attached
    }

    func detach(_ client: NBDLoopClient) {
        let version = state.withLock { s -> Int in
            s.clients.removeAll { $0 === client }
            s.version += 1
            return s.version
        }
        wake()
        while served.load(ordering: .sequentiallyConsistent) < version { usleep(200) }
    }

    /// Ends the loop; clients still attached are told their loop is gone.
    func stop() {
        let clients = state.withLock { s -> [NBDLoopClient] in
            s.stopped = true
            defer { s.clients = [] }
            return s.clients
        }
        wake()
        if let thread { pthread_join(thread, nil) }
        thread = nil
        for client in clients { client.frontendClosed() }
        close(wakeUp[0])
        close(wakeUp[1])
    }

    private func wake() {
        var byte: UInt8 = 1
        _ = Glibc.write(wakeUp[1], &byte, 1)
    }

    private func loop() {
        var clients: [NBDLoopClient] = []
        var version = -1
        var revents: [Int16] = []
        defer { served.store(Int.max, ordering: .sequentiallyConsistent) }
        while true {
            let (current, latest, stopped) = state.withLock { ($0.clients, $0.version, $0.stopped) }
            if stopped { return }
            if latest != version {
                clients = current
                version = latest
                revents = [Int16](repeating: 0, count: clients.count)
                served.store(version, ordering: .sequentiallyConsistent)
            }
            var busy = false
            var finished: [NBDLoopClient] = []
            for index in clients.indices {
                switch clients[index].serve(revents: revents[index]) {
                case .idle: break
                case .busy: busy = true
                case .done: finished.append(clients[index])
                }
                revents[index] = 0
            }
            if !finished.isEmpty {
                state.withLock { s in
                    s.clients.removeAll { client in finished.contains { $0 === client } }
                    s.version += 1
                }
                continue
            }
            if busy { continue }
            var fds = [pollfd(fd: wakeUp[0], events: Int16(POLLIN), revents: 0)]
            for client in clients {
                fds.append(pollfd(fd: client.loopDescriptor, events: client.loopEvents(), revents: 0))
            }
            _ = poll(&fds, nfds_t(fds.count), -1)
            if fds[0].revents != 0 {
                var drain = [UInt8](repeating: 0, count: 64)
                while Glibc.read(wakeUp[0], &drain, drain.count) > 0 {}
            }
            for index in clients.indices { revents[index] = fds[index + 1].revents }
        }
    }
}

/// Runs `body` against a server for `export`, served on its connections' threads or,
/// `looped`, on a loop thread as a frontend's export is.
func withServer<Export: NBDExport>(_ export: Export, looped: Bool, name: String = "",
                                   _ body: (NBDAddress, TemporaryDirectory) throws -> Void) throws {
    guard looped else {
        return try withServer(export, name: name) { _, address, directory in try body(address, directory) }
    }
    let served = try NBDLoopServedExport(export)
    defer { served.stop() }
    try withServer(served, name: name) { _, address, directory in try body(address, directory) }
}
