import Logging
import XenPlatform
import XenStore

/// One device under a backend directory: `backend/<type>/<frontendID>/<devid>`.
public struct XenbusBackendDeviceID: Hashable, Sendable, CustomStringConvertible {
    /// The frontend's domain, as the directory names it.
    public let frontendID: DomainID
    /// The device id.
    public let devid: String
    /// The backend node's full path (what ``XenbusBackendDevice`` is started on).
    public let backendPath: String

    /// An id with these fields.
    public init(frontendID: DomainID, devid: String, backendPath: String) {
        self.frontendID = frontendID
        self.devid = devid
        self.backendPath = backendPath
    }

    /// The id of the device at `paths`.
    public init(_ paths: XenbusDevicePaths) {
        self.init(frontendID: paths.frontendID, devid: paths.devid, backendPath: paths.backend)
    }

    public var description: String { backendPath }
}

/// A change under a backend directory.
public enum XenbusBackendEvent: Hashable, Sendable {
    /// A device node appeared (or was there when the watch started).
    case added(XenbusBackendDeviceID)
    /// A device node is gone.
    case removed(XenbusBackendDeviceID)
}

/// Watches `/local/domain/<self>/backend/<type>` and reports devices appearing and
/// disappearing, as Linux's backend bus does with its watch on `backend`
/// (`xenbus_dev_changed`). The devices there when the watch starts come first, as
/// `added` events, whatever their state: unlike Linux's `xenbus_probe_node`, which skips
/// devices not Initialising, a restarted backend process must take over devices that
/// are already Connected. Entries whose names are not a domain id and a device id are logged
/// and skipped. The sequence ends when ``cancel()`` is called or the connection closes.
public final class XenbusBackendWatcher: AsyncSequence, Sendable {
    public typealias Element = XenbusBackendEvent

    /// The directory watched.
    public let directory: String
    let watch: XenStoreWatch
    let events: AsyncStream<XenbusBackendEvent>

    private init(directory: String, watch: XenStoreWatch, events: AsyncStream<XenbusBackendEvent>) {
        self.directory = directory
        self.watch = watch
        self.events = events
    }

    /// Starts watching the `type` devices served by domain `backendID` over `store`.
    public static func start(store: XenStoreClient, backendID: DomainID, type: String,
                             logger: Logger = Logger(label: "xensplit.xenbus")) async throws(XenbusError) -> XenbusBackendWatcher {
        try XenbusDevicePaths.checkComponent(type, what: "device type")
        let directory = XenbusDevicePaths.backendDirectory(backendID: backendID, type: type)
        let watch: XenStoreWatch
        do {
            watch = try await store.watch(directory)
        } catch {
            throw .store(path: directory, error)
        }
        let (events, continuation) = AsyncStream<XenbusBackendEvent>.makeStream(bufferingPolicy: .unbounded)
        let scanner = Scanner(store: store, directory: directory, logger: logger, output: continuation)
        Task {
            var known: Set<XenbusBackendDeviceID> = []
            for await event in watch {
                await scanner.changed(event.path, known: &known)
            }
            continuation.finish()
        }
        return XenbusBackendWatcher(directory: directory, watch: watch, events: events)
    }

    public func makeAsyncIterator() -> AsyncStream<XenbusBackendEvent>.Iterator {
        events.makeAsyncIterator()
    }

    /// Stops watching; the sequence ends.
    public func cancel() async {
        try? await watch.cancel()
    }

    /// Turns watch events into device events by looking at what exists now.
    struct Scanner: Sendable {
        let store: XenStoreClient
        let directory: String
        let logger: Logger
        let output: AsyncStream<XenbusBackendEvent>.Continuation

        func changed(_ path: String, known: inout Set<XenbusBackendDeviceID>) async {
            guard XenStorePath.isSelfOrDescendant(path, of: directory) else { return }
            let rest = path.dropFirst(directory.utf8.count).split(separator: "/").map(String.init)
            let present: Set<XenbusBackendDeviceID>
            let scope: (XenbusBackendDeviceID) -> Bool
            do {
                switch rest.count {
                case 0:
                    present = try await scanAll()
                    scope = { _ in true }
                case 1:
                    guard let frontend = id(rest[0]) else { return }
                    present = try await scan(frontend: frontend, name: rest[0])
                    scope = { $0.frontendID == frontend }
                default:
                    guard let device = deviceID(rest[0], rest[1]) else { return }
                    present = try await exists(device.backendPath) ? [device] : []
                    scope = { $0 == device }
                }
            } catch {
                logger.warning("xenbus: scanning \(path): \(error)")
                return
            }
            for gone in known.filter(scope).subtracting(present).sorted(by: { $0.backendPath < $1.backendPath }) {
                known.remove(gone)
                logger.info("xenbus: backend device \(gone) removed")
                output.yield(.removed(gone))
            }
            for new in present.subtracting(known).sorted(by: { $0.backendPath < $1.backendPath }) {
                known.insert(new)
                logger.info("xenbus: backend device \(new) appeared")
                output.yield(.added(new))
            }
        }

        private func scanAll() async throws(XenStoreError) -> Set<XenbusBackendDeviceID> {
            var result: Set<XenbusBackendDeviceID> = []
            for name in try await children(directory) {
                guard let frontend = id(name) else { continue }
                result.formUnion(try await scan(frontend: frontend, name: name))
            }
            return result
        }

        private func scan(frontend: DomainID, name: String) async throws(XenStoreError) -> Set<XenbusBackendDeviceID> {
            var result: Set<XenbusBackendDeviceID> = []
            for devid in try await children(directory + "/" + name) {
                if let device = deviceID(name, devid) { result.insert(device) }
            }
            return result
        }

        private func children(_ path: String) async throws(XenStoreError) -> [String] {
            do {
                return try await store.directory(path)
            } catch .daemon(.enoent) {
                return []
            }
        }

        private func exists(_ path: String) async throws(XenStoreError) -> Bool {
            do {
                _ = try await store.read(path)
                return true
            } catch .daemon(.enoent) {
                return false
            }
        }

        private func id(_ name: String) -> DomainID? {
            do {
                return try XenbusDevicePaths.domid(name, path: directory + "/" + name)
            } catch {
                logger.warning("xenbus: ignoring \(directory)/\(name): \(error)")
                return nil
            }
        }

        private func deviceID(_ frontendName: String, _ devid: String) -> XenbusBackendDeviceID? {
            guard let frontend = id(frontendName) else { return nil }
            do {
                try XenbusDevicePaths.checkComponent(devid, what: "device id")
            } catch {
                logger.warning("xenbus: ignoring \(directory)/\(frontendName)/\(devid): \(error)")
                return nil
            }
            return XenbusBackendDeviceID(frontendID: frontend, devid: devid,
                                         backendPath: directory + "/" + frontendName + "/" + devid)
        }
    }
}
