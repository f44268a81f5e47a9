import XenPlatform

/// The local hypervisor's socket protocol (Protocols/local-hypervisor.md): every message is
/// a 16-byte little-endian header (type, tag, payload length, status) and a payload;
/// replies echo the tag and may carry descriptors (SCM_RIGHTS).
public struct HypervisorMessage: Equatable, Sendable {
    /// Message types. A reply has the request's type.
    public enum Kind: UInt32, Sendable, CaseIterable {
        case hello = 1
        case share = 2
        case endAccess = 3
        case map = 4
        case unmap = 5
        case allocateBuffer = 6
        case freeBuffer = 7
        case copy = 8
        case eventAllocateUnbound = 9
        case eventBindInterdomain = 10
        case eventClose = 11
        case domainCreate = 12
        case domainDestroy = 13
        case domainList = 14
        case domainUsage = 15
    }

    /// Bytes in the header.
    public static let headerSize = 16
    /// Largest payload either side accepts.
    public static let maxPayload = 1 << 20
    /// Protocol version sent in hello.
    public static let version: UInt32 = 1

    public var kind: Kind
    /// Chosen by the requester, echoed in the reply.
    public var tag: UInt32
    /// 0: success. 1...4095: an errno. -1...-13: a GNTST_* grant status.
    public var status: Int32
    public var payload: [UInt8]

    public init(kind: Kind, tag: UInt32, status: Int32 = 0, payload: [UInt8] = []) {
        self.kind = kind
        self.tag = tag
        self.status = status
        self.payload = payload
    }

    /// Header and payload as sent.
    public func encoded() -> [UInt8] {
        var w = PayloadWriter()
        w.u32(kind.rawValue)
        w.u32(tag)
        w.u32(UInt32(payload.count))
        w.u32(UInt32(bitPattern: status))
        return w.bytes + payload
    }

    /// Parses a header: the message kind, tag, status and the payload length to read next.
    public static func decodeHeader(_ bytes: [UInt8]) throws(HypervisorProtocolError) -> (kind: Kind, tag: UInt32, status: Int32, length: Int) {
        try decodeHeader(bytes[...])
    }

    /// Parses a header from the front of `bytes` (a receive buffer, without copying it out).
    public static func decodeHeader(_ bytes: ArraySlice<UInt8>) throws(HypervisorProtocolError) -> (kind: Kind, tag: UInt32, status: Int32, length: Int) {
        var r = PayloadReader(bytes)
        let rawKind = try r.u32("type")
        let tag = try r.u32("tag")
        let length = try r.u32("length")
        let status = Int32(bitPattern: try r.u32("status"))
        guard let kind = Kind(rawValue: rawKind) else { throw .unknownType(rawKind) }
        guard length <= maxPayload else { throw .payloadTooLarge(Int(length), limit: maxPayload) }
        return (kind, tag, status, Int(length))
    }
}

/// Malformed traffic on the hypervisor socket, from either side.
public enum HypervisorProtocolError: Error, Equatable, Sendable, CustomStringConvertible {
    /// A message type this side does not know.
    case unknownType(UInt32)
    /// A payload longer than the limit.
    case payloadTooLarge(Int, limit: Int)
    /// A payload too short for the field being read.
    case truncated(field: String, needed: Int, available: Int)
    /// A field whose value is out of range.
    case badField(String, value: UInt64, limit: UInt64)

    public var description: String {
        switch self {
        case let .unknownType(t): return "unknown message type \(t)"
        case let .payloadTooLarge(n, limit): return "payload of \(n) bytes exceeds \(limit)"
        case let .truncated(field, needed, available): return "payload ends before \(field) (needs \(needed) bytes, \(available) left)"
        case let .badField(field, value, limit): return "\(field) = \(value) exceeds \(limit)"
        }
    }
}

/// Little-endian payload builder.
public struct PayloadWriter: Sendable {
    public private(set) var bytes: [UInt8] = []
    public init() {}
    public mutating func u8(_ v: UInt8) { bytes.append(v) }
    public mutating func u16(_ v: UInt16) { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }
    public mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }
    public mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }
    public mutating func i16(_ v: Int16) { u16(UInt16(bitPattern: v)) }
    public mutating func raw(_ b: [UInt8]) { bytes += b }
}

/// Bounds-checked little-endian payload reader; every shortfall names the field.
public struct PayloadReader: Sendable {
    let bytes: ArraySlice<UInt8>
    /// Bytes read so far.
    public private(set) var position = 0
    public init(_ bytes: [UInt8]) { self.bytes = bytes[...] }
    public init(_ bytes: ArraySlice<UInt8>) { self.bytes = bytes }
    public var remaining: Int { bytes.count - position }

    mutating func take(_ n: Int, _ field: String) throws(HypervisorProtocolError) -> ArraySlice<UInt8> {
        guard n <= remaining else { throw .truncated(field: field, needed: n, available: remaining) }
        defer { position += n }
        let from = bytes.startIndex + position
        return bytes[from..<from + n]
    }
    mutating func integer<T: FixedWidthInteger>(_: T.Type, _ field: String) throws(HypervisorProtocolError) -> T {
        let s = try take(MemoryLayout<T>.size, field)
        var v = T.zero
        for (i, b) in s.enumerated() { v |= T(b) << (8 * i) }
        return v
    }
    public mutating func u8(_ field: String) throws(HypervisorProtocolError) -> UInt8 { try integer(UInt8.self, field) }
    public mutating func u16(_ field: String) throws(HypervisorProtocolError) -> UInt16 { try integer(UInt16.self, field) }
    public mutating func u32(_ field: String) throws(HypervisorProtocolError) -> UInt32 { try integer(UInt32.self, field) }
    public mutating func u64(_ field: String) throws(HypervisorProtocolError) -> UInt64 { try integer(UInt64.self, field) }
    public mutating func i16(_ field: String) throws(HypervisorProtocolError) -> Int16 { Int16(bitPattern: try u16(field)) }
    public mutating func rest() -> [UInt8] {
        defer { position = bytes.count }
        return Array(bytes[(bytes.startIndex + position)...])
    }
    /// A count of `size`-byte items that must fit in what remains.
    public mutating func count(_ field: String, itemSize: Int, limit: Int) throws(HypervisorProtocolError) -> Int {
        let n = Int(try u32(field))
        guard n <= limit else { throw .badField(field, value: UInt64(n), limit: UInt64(limit)) }
        guard n * itemSize <= remaining else { throw .truncated(field: field, needed: n * itemSize, available: remaining) }
        return n
    }
}

/// Wire form of a grant-copy endpoint: 12 bytes (domain u16, kind u16, ref-or-buffer u32, offset u32).
extension GrantCopyEndpoint {
    func encode(into w: inout PayloadWriter) {
        switch self {
        case let .grant(domain, ref, offset):
            w.u16(domain); w.u16(1); w.u32(ref); w.u32(UInt32(offset))
        case let .local(buffer, offset):
            w.u16(0); w.u16(0); w.u32(buffer); w.u32(UInt32(truncatingIfNeeded: offset))
        }
    }

    static func decode(_ r: inout PayloadReader) throws(HypervisorProtocolError) -> GrantCopyEndpoint {
        let domain = try r.u16("copy.domain")
        let kind = try r.u16("copy.kind")
        let id = try r.u32("copy.ref")
        let offset = try r.u32("copy.offset")
        switch kind {
        case 0: return .local(buffer: id, offset: Int(offset))
        case 1:
            guard offset < 4096 else { throw .badField("copy.offset", value: UInt64(offset), limit: 4095) }
            return .grant(domain: domain, ref: id, offset: UInt16(offset))
        default: throw .badField("copy.kind", value: UInt64(kind), limit: 1)
        }
    }
}
