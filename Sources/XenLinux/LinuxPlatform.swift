import Glibc
import XenPlatform
import XenStore

/// The platform of a process on real Xen, in dom0 or a domU: grants through libxengnttab
/// (gntdev to map and copy, gntalloc to share), event channels through libxenevtchn, and
/// xenstore through xenstored's socket (dom0) or the kernel's xenbus device (domU).
public final class LinuxPlatform: Platform, @unchecked Sendable {
    // SAFETY (@unchecked): every stored property is immutable and itself Sendable.
    public let domainID: DomainID
    public let grantTable: any GrantTable
    public let grantMapper: any GrantMapper
    /// Where ``connectXenStore()`` connects.
    public let xenStoreEndpoint: XenStoreEndpoint

    /// The directory of Xen's Linux devices.
    public static let deviceDirectory = "/dev/xen"

    /// Whether this kernel runs on Xen with its devices: /dev/xen/privcmd or
    /// /dev/xen/gntdev exists.
    public static var isAvailable: Bool { isAvailable(deviceDirectory: deviceDirectory) }

    /// Whether `deviceDirectory` holds privcmd or gntdev.
    public static func isAvailable(deviceDirectory: String) -> Bool {
        LinuxCall.exists(deviceDirectory + "/privcmd") || LinuxCall.exists(deviceDirectory + "/gntdev")
    }

    /// A platform acting as `domainID` (dom0 is 0). Opens gntdev and gntalloc; if one of
    /// them cannot be opened (a domU without gntdev, a dom0 without gntalloc), the side
    /// that needs it reports that open's error, naming the device and errno, on every
    /// call, so a backend needs no gntalloc and a frontend no gntdev. Fails only when
    /// neither opens.
    public init(domainID: DomainID, xenStoreEndpoint: XenStoreEndpoint = .choose()) throws(PlatformError) {
        guard domainID < DomainID.domidFirstReserved else {
            throw .invalidArgument("domain id \(domainID) is reserved (>= DOMID_FIRST_RESERVED \(DomainID.domidFirstReserved))")
        }
        self.domainID = domainID
        self.xenStoreEndpoint = xenStoreEndpoint
        let table: Result<LinuxGrantTable, PlatformError> = Result { () throws(PlatformError) in try LinuxGrantTable() }
        let mapper: Result<LinuxGrantMapper, PlatformError> = Result { () throws(PlatformError) in try LinuxGrantMapper() }
        switch (table, mapper) {
        case let (.failure(tableError), .failure(mapperError)):
            throw .unsupported("no grant device opens: \(tableError); \(mapperError)")
        default:
            break
        }
        switch table {
        case let .success(t): grantTable = t
        case let .failure(e): grantTable = UnopenedGrants(e)
        }
        switch mapper {
        case let .success(m): grantMapper = m
        case let .failure(e): grantMapper = UnopenedGrants(e)
        }
    }

    /// A platform acting as the domain xenstore says we are. Through the xenbus device the
    /// kernel's connection is our domain's, so our `domid` key (relative to our home,
    /// /local/domain/N) names us. xenstored's socket is reachable only inside the domain
    /// that runs xenstored, dom0, whose socket clients have no home to be relative to, so
    /// there the platform is dom0 and xenstore must confirm /local/domain/0/domid.
    public static func detect(xenStoreEndpoint: XenStoreEndpoint = .choose()) async throws(PlatformError) -> LinuxPlatform {
        let key: String
        switch xenStoreEndpoint {
        case .socket: key = "/local/domain/0/domid"
        case .device: key = "domid"
        }
        let client = try connectXenStore(at: xenStoreEndpoint)
        defer { client.close() }
        let value: [UInt8]
        do { value = try await client.read(key) } catch {
            throw .hypervisor("xenstore read of \(key) via \(xenStoreEndpoint): \(error)")
        }
        return try LinuxPlatform(domainID: parseDomainID(value), xenStoreEndpoint: xenStoreEndpoint)
    }

    /// The domain id in a xenstore `domid` value: a decimal below DOMID_FIRST_RESERVED,
    /// digits only (xenstore values carry no terminator).
    public static func parseDomainID(_ value: [UInt8]) throws(PlatformError) -> DomainID {
        guard !value.isEmpty, value.count <= 5, value.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else {
            throw .hypervisor("xenstore domid '\(String(decoding: value.prefix(32), as: UTF8.self))' is not a decimal of 1...5 digits")
        }
        let number = value.reduce(0) { $0 * 10 + Int($1 - 0x30) }
        guard number < Int(DomainID.domidFirstReserved) else {
            throw .hypervisor("xenstore domid \(number) is not below DOMID_FIRST_RESERVED \(DomainID.domidFirstReserved)")
        }
        return DomainID(number)
    }

    /// Closes the gntdev and gntalloc handles. Mappings and shared pages still alive keep
    /// working until they are unmapped, ended or dropped; new grant calls fail with EBADF.
    public func close() {
        (grantTable as? LinuxGrantTable)?.close()
        (grantMapper as? LinuxGrantMapper)?.close()
    }

    public func openEventChannel() throws(PlatformError) -> any EventChannel {
        try LinuxEventChannel()
    }

    public func connectXenStore() throws(PlatformError) -> XenStoreClient {
        try Self.connectXenStore(at: xenStoreEndpoint)
    }

    /// A xenstore client over `endpoint`; the error names the endpoint and errno.
    public static func connectXenStore(at endpoint: XenStoreEndpoint) throws(PlatformError) -> XenStoreClient {
        do {
            switch endpoint {
            case let .socket(path): return try XenStoreClient(socketPath: path)
            case let .device(path): return try XenStoreClient(transport: XenbusDeviceTransport(path: path))
            }
        } catch {
            if case let .systemCall(call, errno) = error { throw .system("xenstore via \(endpoint): \(call)", errno: errno) }
            throw .hypervisor("xenstore via \(endpoint): \(error)")
        }
    }
}

extension DomainID {
    /// xen.h: DOMID_FIRST_RESERVED; ids from here up name special domains, not guests.
    public static let domidFirstReserved: DomainID = 0x7FF0
}

/// How to reach xenstore on real Xen.
public enum XenStoreEndpoint: Equatable, Sendable, CustomStringConvertible {
    /// xenstored's Unix socket (dom0, where xenstored runs).
    case socket(String)
    /// The kernel's xenbus device (a domU, or a dom0 without a local xenstored).
    case device(String)

    /// `$XENSTORED_PATH` when set, else xenstored's default socket when it exists, else
    /// /dev/xen/xenbus.
    public static func choose(environment: [String: String]? = nil,
                              exists: ((String) -> Bool)? = nil) -> XenStoreEndpoint {
        let exists = exists ?? LinuxCall.exists
        let explicit = environment.map { $0["XENSTORED_PATH"] } ?? getenv("XENSTORED_PATH").map { String(cString: $0) }
        if let path = explicit, !path.isEmpty { return .socket(path) }
        let socket = XenStoreSocketTransport.defaultPath(environment: environment)
        return exists(socket) ? .socket(socket) : .device(XenbusDeviceTransport.defaultPath)
    }

    public var description: String {
        switch self {
        case let .socket(path): return "socket \(path)"
        case let .device(path): return "device \(path)"
        }
    }
}
