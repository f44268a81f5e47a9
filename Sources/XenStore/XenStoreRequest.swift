/// A client request as a value: what each io/xs_wire.h message type carries, decoded from
/// or encoded to its payload of NUL-terminated strings.
///
/// Decoding follows C xenstored's argument rules: single-argument requests need exactly one
/// string with its NUL at the very end; WRITE needs a path ending in NUL followed by any
/// bytes; WATCH and UNWATCH exactly two strings; DIRECTORY_PART two; SET_PERMS a path
/// and at least one permission. Paths stay raw bytes here: they are resolved against the
/// connection's domain by the server (``XenStorePath/resolve(_:home:)``).
public enum XenStoreRequest: Equatable, Sendable {
    /// XS_DIRECTORY: the children of a node.
    case directory(path: [UInt8])
    /// XS_DIRECTORY_PART: children from a byte offset into the child list.
    case directoryPart(path: [UInt8], offset: UInt32)
    /// XS_READ: a node's value.
    case read(path: [UInt8])
    /// XS_GET_PERMS: a node's permission list.
    case getPerms(path: [UInt8])
    /// XS_WATCH: watch a path (or a special `@` event) with a token.
    case watch(path: [UInt8], token: [UInt8])
    /// XS_UNWATCH: remove the watch with this path and token.
    case unwatch(path: [UInt8], token: [UInt8])
    /// XS_TRANSACTION_START.
    case transactionStart
    /// XS_TRANSACTION_END: "T" commits, "F" aborts.
    case transactionEnd(commit: Bool)
    /// XS_INTRODUCE: a domain, the frame of its xenstore page and its event channel.
    case introduce(domid: UInt16, mfn: UInt64, port: UInt32)
    /// XS_RELEASE: forget a domain.
    case release(domid: UInt16)
    /// XS_GET_DOMAIN_PATH: `/local/domain/<domid>`.
    case getDomainPath(domid: UInt16)
    /// XS_WRITE: set a node's value, creating it and missing parents.
    case write(path: [UInt8], value: [UInt8])
    /// XS_MKDIR: create a node (and missing parents) if absent.
    case mkdir(path: [UInt8])
    /// XS_RM: remove a node and everything below it.
    case rm(path: [UInt8])
    /// XS_SET_PERMS: replace a node's permission list.
    case setPerms(path: [UInt8], permissions: [XenStorePermission])
    /// XS_IS_DOMAIN_INTRODUCED.
    case isDomainIntroduced(domid: UInt16)
    /// XS_RESUME.
    case resume(domid: UInt16)
    /// XS_SET_TARGET.
    case setTarget(domid: UInt16, target: UInt16)
    /// XS_RESET_WATCHES: drop all of the connection's watches and transactions.
    case resetWatches
    /// XS_CONTROL: implementation-specific commands.
    case control(arguments: [[UInt8]])

    /// The message type that carries this request.
    public var type: XSDSockmsgType {
        switch self {
        case .directory: return .directory
        case .directoryPart: return .directoryPart
        case .read: return .read
        case .getPerms: return .getPerms
        case .watch: return .watch
        case .unwatch: return .unwatch
        case .transactionStart: return .transactionStart
        case .transactionEnd: return .transactionEnd
        case .introduce: return .introduce
        case .release: return .release
        case .getDomainPath: return .getDomainPath
        case .write: return .write
        case .mkdir: return .mkdir
        case .rm: return .rm
        case .setPerms: return .setPerms
        case .isDomainIntroduced: return .isDomainIntroduced
        case .resume: return .resume
        case .setTarget: return .setTarget
        case .resetWatches: return .resetWatches
        case .control: return .control
        }
    }

    /// The payload bytes, as libxenstore sends them.
    public func payload() -> [UInt8] {
        switch self {
        case let .directory(path), let .read(path), let .getPerms(path), let .mkdir(path), let .rm(path):
            return path + [0]
        case let .directoryPart(path, offset):
            return path + [0] + Array(String(offset).utf8) + [0]
        case let .watch(path, token), let .unwatch(path, token):
            return path + [0] + token + [0]
        case .transactionStart:
            return [0]
        case let .transactionEnd(commit):
            return [commit ? UInt8(ascii: "T") : UInt8(ascii: "F"), 0]
        case let .introduce(domid, mfn, port):
            return XenStoreStrings.join([String(domid), String(mfn), String(port)])
        case let .release(domid), let .getDomainPath(domid), let .isDomainIntroduced(domid), let .resume(domid):
            return XenStoreStrings.join([String(domid)])
        case let .write(path, value):
            return path + [0] + value
        case let .setPerms(path, permissions):
            return path + [0] + XenStorePermission.encodeList(permissions)
        case let .setTarget(domid, target):
            return XenStoreStrings.join([String(domid), String(target)])
        case .resetWatches:
            return []
        case let .control(arguments):
            return arguments.flatMap { $0 + [0] }
        }
    }

    /// Decodes a request. Throws ``XenStoreError/unknownMessageType(_:)`` for a type a
    /// client may not send (answered ENOSYS) and other cases for malformed payloads
    /// (answered EINVAL); see ``XenStoreError/replyCode``.
    public static func decode(type rawType: UInt32, payload: [UInt8]) throws(XenStoreError) -> XenStoreRequest {
        guard let type = XSDSockmsgType(rawValue: rawType), type != .watchEvent, type != .error else {
            throw .unknownMessageType(rawType)
        }
        let bytes = payload[...]
        switch type {
        case .directory: return .directory(path: try oneArgument(bytes, type))
        case .read: return .read(path: try oneArgument(bytes, type))
        case .getPerms: return .getPerms(path: try oneArgument(bytes, type))
        case .mkdir: return .mkdir(path: try oneArgument(bytes, type))
        case .rm: return .rm(path: try oneArgument(bytes, type))
        case .directoryPart:
            let fields = try strings(bytes, type, exactly: 2)
            guard let offset = XenStoreNumber.decimal(fields[1], max: UInt64(UInt32.max)) else {
                throw .invalidNumber(field: "DIRECTORY_PART offset", value: XenStorePath.printable(fields[1]))
            }
            return .directoryPart(path: Array(fields[0]), offset: UInt32(offset))
        case .watch, .unwatch:
            let fields = try strings(bytes, type, exactly: 2)
            return type == .watch ? .watch(path: Array(fields[0]), token: Array(fields[1]))
                : .unwatch(path: Array(fields[0]), token: Array(fields[1]))
        case .transactionStart:
            return .transactionStart
        case .transactionEnd:
            let arg = try oneArgument(bytes, type)
            switch arg {
            case [UInt8(ascii: "T")]: return .transactionEnd(commit: true)
            case [UInt8(ascii: "F")]: return .transactionEnd(commit: false)
            default: throw .malformedPayload(type: type, reason: "argument must be T or F")
            }
        case .introduce:
            let fields = try XenStoreStrings.split(bytes, type: type)
            guard fields.count >= 3 else { throw .malformedPayload(type: type, reason: "\(fields.count) strings, need 3") }
            let domid = try domainID(fields[0], "INTRODUCE domid")
            guard let mfn = XenStoreNumber.decimal(fields[1], max: UInt64.max) else {
                throw .invalidNumber(field: "INTRODUCE mfn", value: XenStorePath.printable(fields[1]))
            }
            guard let port = XenStoreNumber.decimal(fields[2], max: UInt64(UInt32.max)) else {
                throw .invalidNumber(field: "INTRODUCE port", value: XenStorePath.printable(fields[2]))
            }
            return .introduce(domid: domid, mfn: mfn, port: UInt32(port))
        case .release: return .release(domid: try domainID(try oneArgument(bytes, type)[...], "RELEASE domid"))
        case .getDomainPath:
            return .getDomainPath(domid: try domainID(try oneArgument(bytes, type)[...], "GET_DOMAIN_PATH domid"))
        case .isDomainIntroduced:
            return .isDomainIntroduced(domid: try domainID(try oneArgument(bytes, type)[...], "IS_DOMAIN_INTRODUCED domid"))
        case .resume: return .resume(domid: try domainID(try oneArgument(bytes, type)[...], "RESUME domid"))
        case .setTarget:
            let fields = try strings(bytes, type, exactly: 2)
            return .setTarget(domid: try domainID(fields[0], "SET_TARGET domid"),
                              target: try domainID(fields[1], "SET_TARGET target"))
        case .write:
            guard let nul = bytes.firstIndex(of: 0) else {
                throw .malformedPayload(type: type, reason: "path lacks its NUL")
            }
            return .write(path: Array(bytes[..<nul]), value: Array(bytes[(nul + 1)...]))
        case .setPerms:
            let fields = try XenStoreStrings.split(bytes, type: type)
            guard fields.count >= 2 else { throw .malformedPayload(type: type, reason: "\(fields.count) strings, need a path and a permission") }
            var permissions: [XenStorePermission] = []
            for field in fields.dropFirst() { permissions.append(try XenStorePermission(parsing: field)) }
            return .setPerms(path: Array(fields[0]), permissions: permissions)
        case .resetWatches:
            return .resetWatches
        case .control:
            return .control(arguments: try XenStoreStrings.split(bytes, type: type).map { Array($0) })
        case .watchEvent, .error:
            throw .unknownMessageType(rawType)
        }
    }

    /// One string whose NUL is the last byte of the payload (C xenstored's `onearg`).
    static func oneArgument(_ bytes: ArraySlice<UInt8>, _ type: XSDSockmsgType) throws(XenStoreError) -> [UInt8] {
        guard let nul = bytes.firstIndex(of: 0), nul == bytes.endIndex - 1 else {
            throw .malformedPayload(type: type, reason: "want one NUL-terminated string, got \(bytes.count) bytes")
        }
        return Array(bytes[..<nul])
    }

    static func strings(_ bytes: ArraySlice<UInt8>, _ type: XSDSockmsgType, exactly count: Int) throws(XenStoreError) -> [ArraySlice<UInt8>] {
        let fields = try XenStoreStrings.split(bytes, type: type)
        guard fields.count == count else {
            throw .malformedPayload(type: type, reason: "\(fields.count) strings, need \(count)")
        }
        return fields
    }

    /// A domid: decimal, below DOMID_FIRST_RESERVED (0x7ff0, xen.h).
    static func domainID(_ bytes: ArraySlice<UInt8>, _ field: String) throws(XenStoreError) -> UInt16 {
        guard let value = XenStoreNumber.decimal(bytes, max: 0x7fef) else {
            throw .invalidNumber(field: field, value: XenStorePath.printable(bytes))
        }
        return UInt16(value)
    }
}

extension XenStoreError {
    /// The XS_ERROR a server answers for this decoding error: ENOSYS for an unknown type,
    /// EINVAL for anything malformed, the daemon's own code for ``daemon(_:)``.
    public var replyCode: XSDErrorCode {
        switch self {
        case .unknownMessageType: return .enosys
        case let .daemon(code): return code
        default: return .einval
        }
    }
}
