import Glibc
import Logging
import XenPlatform

/// An NBD server for one export, over a Unix socket or TCP.
///
/// Threads: one thread blocks in `accept`, and each client gets its own thread that runs
/// the handshake and then reads its requests and hands them to the export, plus a
/// thread that writes its replies as the export answers them, in any order. A client may
/// keep up to `maximumRequestsPerClient` requests in flight. Clients proceed in parallel
/// and a slow or hostile client stalls only itself. `stop()` shuts the listener and every
/// client down (requests still with the export are dropped), which wakes each blocked
/// thread, and joins them all.
///
/// Export names: the export answers to `name` and to the empty (default) name.
///
/// Each client costs two threads (one, waiting, when the export serves it on its own loop:
/// ``NBDLoopExport``) and holds at most `maximumBufferedBytesPerClient` of
/// payload (or one request of up to the maximum block size), so at most `maximumClients`
/// are served at once; a connection beyond that is closed on accept.
public final class NBDServer<Export: NBDExport>: Sendable {
    private struct Client {
        let socket: NBDSocket
        let connection: NBDConnection<Export>
        var thread: pthread_t?
        var finished = false
    }

    private struct State {
        var listener: NBDListener?
        var acceptThread: pthread_t?
        var clients: [Int: Client] = [:]
        var nextClient = 0
        var started = false
        var stopping = false
    }

    /// The disk served.
    public let export: Export
    /// The export's name, as listed by `NBD_OPT_LIST`.
    public let name: String
    /// Clients served at once; more are disconnected as they arrive.
    public let maximumClients: Int
    /// Requests one client may have read and not yet answered; beyond that the server
    /// reads no more of its requests until one is answered.
    public let maximumRequestsPerClient: Int
    /// Payload bytes (writes read, reads to send) one client's requests in flight may hold.
    public let maximumBufferedBytesPerClient: Int
    private let logger: Logger
    private let state = NBDLock(State())

    public init(export: Export, name: String = "", maximumClients: Int = 64, maximumRequestsPerClient: Int = 64,
                maximumBufferedBytesPerClient: Int = 32 << 20, logger: Logger = Logger(label: "xensplit.nbd")) {
        self.export = export
        self.name = name
        self.maximumClients = maximumClients
        self.maximumRequestsPerClient = max(1, maximumRequestsPerClient)
        self.maximumBufferedBytesPerClient = max(0, maximumBufferedBytesPerClient)
        self.logger = logger
    }

    deinit { stop() }

    /// Binds `address` and starts accepting clients; returns the bound address (with the
    /// kernel's port when port 0 was asked for). The server's threads keep it alive until
    /// `stop()`.
    @discardableResult
    public func start(listeningOn address: NBDAddress) throws(NBDError) -> NBDAddress {
        let claimed = state.withLock { state -> Bool in
            guard !state.started else { return false }
            state.started = true
            return true
        }
        guard claimed else { throw .serverState("already started") }
        let listener = try NBDListener(address: address)
        let thread: pthread_t
        do throws(NBDError) {
            thread = try spawnThread { [self] in
                nameThisThread("nbd-accept")
                acceptLoop(listener)
            }
        } catch {
            listener.close()
            throw error
        }
        let stoppedMeanwhile = state.withLock { state -> Bool in
            guard !state.stopping else { return true }
            state.listener = listener
            state.acceptThread = thread
            return false
        }
        if stoppedMeanwhile {
            listener.shutdown()
            pthread_join(thread, nil)
            listener.close()
            throw .serverState("stopped while starting")
        }
        logger.info("serving NBD on \(listener.boundAddress)")
        return listener.boundAddress
    }

    /// The number of clients currently connected.
    public var clientCount: Int {
        state.withLock { $0.clients.values.filter { !$0.finished }.count }
    }

    /// Stops accepting, disconnects every client and waits for their threads.
    public func stop() {
        // Taken out under the lock, so a concurrent second stop() joins nothing twice.
        let (listener, acceptThread) = state.withLock { state in
            state.stopping = true
            defer {
                state.listener = nil
                state.acceptThread = nil
            }
            return (state.listener, state.acceptThread)
        }
        listener?.shutdown()
        if let acceptThread { pthread_join(acceptThread, nil) }
        listener?.close()
        let threads = state.withLock { state -> [pthread_t] in
            for client in state.clients.values where !client.finished { client.connection.abort() }
            defer { state.clients.removeAll() }
            return state.clients.values.compactMap(\.thread)
        }
        for thread in threads { pthread_join(thread, nil) }
    }

    /// Serves one client already connected on `descriptor` on the calling thread, as an
    /// accepted client is served (handshake, then transmission), until it leaves; then
    /// closes the descriptor. The way in for the fuzz target (FuzzTargets' NBDFuzz): a
    /// hostile client's bytes through the real connection code, with no listener.
    public func serve(connected descriptor: Int32) {
        let socket = NBDSocket(descriptor: descriptor)
        NBDConnection(socket: socket, export: export, exportName: name, maximumRequests: maximumRequestsPerClient,
                      maximumBytes: maximumBufferedBytesPerClient, logger: logger).run()
        socket.close()
    }

    private func acceptLoop(_ listener: NBDListener) {
        while true {
            let socket: NBDSocket
            do throws(NBDError) {
                socket = try listener.accept()
            } catch {
                if state.withLock({ $0.stopping }) { return }
                // Out of descriptors or memory: wait for clients to leave rather than spin.
                logger.error("accept failed: \(error)")
                usleep(10_000)
                continue
            }
            let admission = state.withLock { state -> (id: Int?, stopping: Bool) in
                reapFinished(&state)
                guard !state.stopping else { return (nil, true) }
                // A finished client's socket is closed before it is marked, so it no longer counts.
                let active = state.clients.values.reduce(0) { $0 + ($1.finished ? 0 : 1) }
                guard active < maximumClients else { return (nil, false) }
                let id = state.nextClient
                state.nextClient += 1
                return (id, false)
            }
            guard let id = admission.id else {
                socket.close()
                if admission.stopping { return }
                logger.warning("refusing a client: \(maximumClients) already connected")
                continue
            }
            var clientLogger = logger
            clientLogger[metadataKey: "nbd-client"] = "\(id)"
            let connection = NBDConnection(socket: socket, export: export, exportName: name,
                                           maximumRequests: maximumRequestsPerClient,
                                           maximumBytes: maximumBufferedBytesPerClient, logger: clientLogger)
            let admitted = state.withLock { state -> Bool in
                guard !state.stopping else { return false }
                state.clients[id] = Client(socket: socket, connection: connection)
                return true
            }
            guard admitted else {
                socket.close()
                return
            }
            do throws(NBDError) {
                let thread = try spawnThread { [self] in
                    nameThisThread("nbd-client")
                    connection.run()
                    state.withLock { state in
                        // Closed under the lock so stop() never shuts down a reused descriptor.
                        socket.close()
                        state.clients[id]?.finished = true
                    }
                }
                state.withLock { $0.clients[id]?.thread = thread }
            } catch {
                logger.error("cannot start a client thread: \(error)")
                state.withLock { state in
                    socket.close()
                    state.clients[id] = nil
                }
            }
        }
    }

    /// Joins the threads of clients that have left, so they do not pile up.
    private func reapFinished(_ state: inout State) {
        for (id, client) in state.clients where client.finished {
            guard let thread = client.thread else { continue }
            pthread_join(thread, nil)
            state.clients[id] = nil
        }
    }
}

/// Starts a joinable thread running `body`.
func spawnThread(_ body: @escaping @Sendable () -> Void) throws(NBDError) -> pthread_t {
    final class Box {
        let body: @Sendable () -> Void
        init(_ body: @escaping @Sendable () -> Void) { self.body = body }
    }
    let context = Unmanaged.passRetained(Box(body)).toOpaque()
    var thread = pthread_t()
    let result = pthread_create(&thread, nil, { context in
        guard let context else { return nil }
        Unmanaged<Box>.fromOpaque(context).takeRetainedValue().body()
        return nil
    }, context)
    guard result == 0 else {
        Unmanaged<Box>.fromOpaque(context).release()
        throw .system(call: "pthread_create", errno: result)
    }
    return thread
}
