import XenPlatform
import XenStore

/// Where the two halves of one split device live in xenstore, as the toolstack lays them
/// out (libxl, and XenLocal's toolstack after it):
///
/// - backend:  `/local/domain/<backend-domid>/backend/<type>/<frontend-domid>/<devid>`
/// - frontend: `/local/domain/<frontend-domid>/device/<type>/<devid>`
///
/// The backend node holds `frontend` and `frontend-id`, the frontend node `backend` and
/// `backend-id`; each end finds the other through them (``discover(backend:store:)``,
/// ``discover(frontend:store:)``).
public struct XenbusDevicePaths: Sendable, Hashable, CustomStringConvertible {
    /// The device type, the directory name under `backend/` and `device/` ("vbd", "vif").
    public let type: String
    /// The device id within its type and frontend ("51712" for xvda).
    public let devid: String
    /// The domain running the backend.
    public let backendID: DomainID
    /// The domain running the frontend.
    public let frontendID: DomainID
    /// The backend's node.
    public let backend: String
    /// The frontend's node.
    public let frontend: String

    /// The standard layout for a device.
    public init(type: String, devid: String, backendID: DomainID, frontendID: DomainID) throws(XenbusError) {
        try Self.checkComponent(type, what: "device type")
        try Self.checkComponent(devid, what: "device id")
        self.type = type
        self.devid = devid
        self.backendID = backendID
        self.frontendID = frontendID
        backend = Self.backendPath(backendID: backendID, type: type, frontendID: frontendID, devid: devid)
        frontend = "\(XenStorePath.domainPath(frontendID))/device/\(type)/\(devid)"
    }

    init(type: String, devid: String, backendID: DomainID, frontendID: DomainID, backend: String, frontend: String) {
        self.type = type
        self.devid = devid
        self.backendID = backendID
        self.frontendID = frontendID
        self.backend = backend
        self.frontend = frontend
    }

    public var description: String { "\(type)/\(devid) d\(backendID)->d\(frontendID)" }

    /// `/local/domain/<backend>/backend/<type>/<frontend>/<devid>`.
    public static func backendPath(backendID: DomainID, type: String, frontendID: DomainID, devid: String) -> String {
        "\(backendDirectory(backendID: backendID, type: type))/\(frontendID)/\(devid)"
    }

    /// `/local/domain/<backend>/backend/<type>`: what a backend driver watches.
    public static func backendDirectory(backendID: DomainID, type: String) -> String {
        "\(XenStorePath.domainPath(backendID))/backend/\(type)"
    }

    // MARK: Discovery

    /// The backend's view: parses `backend` as a backend node path and reads the
    /// `frontend-id` and `frontend` keys the toolstack wrote in it. `frontend-id` must be
    /// the domain the path names and `frontend` a device node of that domain
    /// (`/local/domain/<frontend-id>/device/...`) that exists. Linux's
    /// `xenbus_read_otherend_details` checks only that the path is non-empty and exists;
    /// the home check is ours, so a mistaken or forged `frontend` cannot make a backend
    /// watch and read another guest's device.
    public static func discover(backend path: String, store: XenStoreClient) async throws(XenbusError) -> XenbusDevicePaths {
        let parts = try components(of: path)
        guard parts.count == 6, parts[2] == "backend" else {
            throw .invalidDevicePath(path: path, reason: "want /local/domain/<id>/backend/<type>/<frontend-id>/<devid>")
        }
        let backendID = try domid(parts[1], path: path)
        let pathFrontend = try domid(parts[4], path: path)
        let node = XenbusNodeReader(store: store, path: path)
        let frontendID: DomainID = try await node.unsigned("frontend-id", max: DomainID.domidSelf - 1)
        guard frontendID == pathFrontend else {
            throw .invalidValue(path: path + "/frontend-id", value: String(frontendID),
                                expected: "\(pathFrontend), the domain its node is filed under")
        }
        let frontend = try await node.string("frontend")
        try checkOtherEnd(frontend, key: path + "/frontend", domain: frontendID, directory: "device")
        try await checkExists(frontend, key: path + "/frontend", store: store)
        return XenbusDevicePaths(type: parts[3], devid: parts[5], backendID: backendID, frontendID: frontendID,
                                 backend: path, frontend: frontend)
    }

    /// The frontend's view: parses `frontend` as a frontend node path and reads its
    /// `backend-id` and `backend` keys. `backend` must be a backend node under the home of
    /// the domain `backend-id` names (`/local/domain/<backend-id>/backend/...`) and exist.
    public static func discover(frontend path: String, store: XenStoreClient) async throws(XenbusError) -> XenbusDevicePaths {
        let parts = try components(of: path)
        guard parts.count == 5, parts[2] == "device" else {
            throw .invalidDevicePath(path: path, reason: "want /local/domain/<id>/device/<type>/<devid>")
        }
        let frontendID = try domid(parts[1], path: path)
        let node = XenbusNodeReader(store: store, path: path)
        let backendID: DomainID = try await node.unsigned("backend-id", max: DomainID.domidSelf - 1)
        let backend = try await node.string("backend")
        try checkOtherEnd(backend, key: path + "/backend", domain: backendID, directory: "backend")
        try await checkExists(backend, key: path + "/backend", store: store)
        return XenbusDevicePaths(type: parts[3], devid: parts[4], backendID: backendID, frontendID: frontendID,
                                 backend: backend, frontend: path)
    }

    /// The components after `/local/`: `domain`, the domain id, then the rest, each checked.
    static func components(of path: String) throws(XenbusError) -> [String] {
        guard path.hasPrefix("/local/domain/") else {
            throw .invalidDevicePath(path: path, reason: "not under /local/domain")
        }
        let parts = path.dropFirst().split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        for part in parts.dropFirst(2) { try checkComponent(part, what: "component of \(path)") }
        return Array(parts.dropFirst())
    }

    static func domid(_ text: String, path: String) throws(XenbusError) -> DomainID {
        guard text.utf8.count <= 5, let value = XenStoreNumber.decimal(Array(text.utf8)[...], max: UInt64(DomainID.domidSelf - 1)) else {
            throw .invalidDevicePath(path: path, reason: "'\(text)' is not a domain id below \(DomainID.domidSelf)")
        }
        return DomainID(value)
    }

    static func checkComponent(_ text: String, what: String) throws(XenbusError) {
        let bytes = Array(text.utf8)
        guard !bytes.isEmpty, bytes.count <= 64, text != ".", text != "..",
              bytes.allSatisfy({ XenStorePath.isValidCharacter($0) && $0 != UInt8(ascii: "/") })
        else {
            throw .invalidDevicePath(path: text, reason: "\(what) must be 1 to 64 xenstore path characters without '/'")
        }
    }

    /// `value` (read from `key`) must be `/local/domain/<domain>/<directory>/...`, with
    /// valid components and nothing like `..` that could lead elsewhere.
    static func checkOtherEnd(_ value: String, key: String, domain: DomainID, directory: String) throws(XenbusError) {
        let home = XenStorePath.domainPath(domain) + "/" + directory + "/"
        guard value.hasPrefix(home), value.utf8.count <= XenStoreLimits.absolutePathMax else {
            throw .otherEndOutsideDomain(path: key, value: XenbusError.printable(Array(value.utf8)), domain: domain)
        }
        for part in value.dropFirst(home.utf8.count).split(separator: "/", omittingEmptySubsequences: false) {
            do {
                try checkComponent(String(part), what: "component")
            } catch {
                throw .otherEndOutsideDomain(path: key, value: XenbusError.printable(Array(value.utf8)), domain: domain)
            }
        }
    }

    static func checkExists(_ node: String, key: String, store: XenStoreClient) async throws(XenbusError) {
        do {
            _ = try await store.read(node)
        } catch .daemon(.enoent) {
            throw .invalidValue(path: key, value: node, expected: "an existing node")
        } catch {
            throw .store(path: node, error)
        }
    }
}
