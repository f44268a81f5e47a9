/// The fixed header of every xenstore message (io/xs_wire.h: struct xsd_sockmsg): four
/// little-endian 32-bit words, `type`, `req_id`, `tx_id`, `len`.
public struct XSDSockmsgHeader: Equatable, Sendable {
    /// Bytes in the header.
    public static let size = 16

    /// `type`, raw: the peer may send any value.
    public var type: UInt32
    /// `req_id`, echoed by the daemon in its reply.
    public var requestID: UInt32
    /// `tx_id`, 0 outside a transaction.
    public var transactionID: UInt32
    /// `len`, the payload bytes that follow.
    public var length: UInt32

    /// A header with the given fields.
    public init(type: UInt32, requestID: UInt32, transactionID: UInt32, length: UInt32) {
        self.type = type
        self.requestID = requestID
        self.transactionID = transactionID
        self.length = length
    }

    /// Decodes 16 bytes and checks `len` against XENSTORE_PAYLOAD_MAX.
    public init(decoding bytes: ArraySlice<UInt8>) throws(XenStoreError) {
        guard bytes.count >= Self.size else {
            throw .truncatedHeader(count: bytes.count)
        }
        let base = bytes.startIndex
        func word(_ i: Int) -> UInt32 {
            let o = base + 4 * i
            return UInt32(bytes[o]) | UInt32(bytes[o + 1]) << 8 | UInt32(bytes[o + 2]) << 16 | UInt32(bytes[o + 3]) << 24
        }
        type = word(0)
        requestID = word(1)
        transactionID = word(2)
        length = word(3)
        guard length <= UInt32(XenStoreLimits.payloadMax) else {
            throw .payloadTooLong(length: length, limit: XenStoreLimits.payloadMax)
        }
    }

    /// Appends the 16 header bytes to `out`.
    public func encode(into out: inout [UInt8]) {
        for word in [type, requestID, transactionID, length] {
            out.append(UInt8(truncatingIfNeeded: word))
            out.append(UInt8(truncatingIfNeeded: word >> 8))
            out.append(UInt8(truncatingIfNeeded: word >> 16))
            out.append(UInt8(truncatingIfNeeded: word >> 24))
        }
    }
}

/// One framed xenstore message: header fields and payload, as values.
public struct XenStoreMessage: Equatable, Sendable {
    /// The raw type word; ``type`` is nil when it is not a known type.
    public var rawType: UInt32
    /// `req_id`.
    public var requestID: UInt32
    /// `tx_id`.
    public var transactionID: UInt32
    /// The payload, at most XENSTORE_PAYLOAD_MAX bytes.
    public var payload: [UInt8]

    /// The message type, if `rawType` names one.
    public var type: XSDSockmsgType? { XSDSockmsgType(rawValue: rawType) }

    /// A message of a known type.
    public init(type: XSDSockmsgType, requestID: UInt32 = 0, transactionID: UInt32 = 0, payload: [UInt8]) {
        self.init(rawType: type.rawValue, requestID: requestID, transactionID: transactionID, payload: payload)
    }

    /// A message with any type word (tests send invalid ones on purpose).
    public init(rawType: UInt32, requestID: UInt32, transactionID: UInt32, payload: [UInt8]) {
        self.rawType = rawType
        self.requestID = requestID
        self.transactionID = transactionID
        self.payload = payload
    }

    /// Header and payload as bytes. The payload length is not checked here, so tests can
    /// build oversized messages; ``XenStoreMessageFramer`` refuses them on the way in.
    public func encoded() -> [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(XSDSockmsgHeader.size + payload.count)
        XSDSockmsgHeader(type: rawType, requestID: requestID, transactionID: transactionID,
                         length: UInt32(truncatingIfNeeded: payload.count)).encode(into: &out)
        out += payload
        return out
    }
}

/// Cuts a byte stream into messages. Bytes arrive in any pieces; a message is returned
/// once its header and whole payload are in.
public struct XenStoreMessageFramer: Sendable {
    private var buffer: [UInt8] = []
    private var start = 0

    /// An empty framer.
    public init() {}

    /// Bytes received but not yet returned as a message.
    public var bufferedCount: Int { buffer.count - start }

    /// Adds received bytes.
    public mutating func append(_ bytes: UnsafeRawBufferPointer) {
        compact()
        buffer.append(contentsOf: bytes)
    }

    /// Adds received bytes.
    public mutating func append(_ bytes: [UInt8]) {
        compact()
        buffer += bytes
    }

    /// The next complete message, or nil if more bytes are needed. Throws
    /// ``XenStoreError/payloadTooLong(length:limit:)`` for a header that announces more
    /// than XENSTORE_PAYLOAD_MAX; the stream is then unusable.
    public mutating func next() throws(XenStoreError) -> XenStoreMessage? {
        guard buffer.count - start >= XSDSockmsgHeader.size else { return nil }
        let header = try XSDSockmsgHeader(decoding: buffer[start ..< start + XSDSockmsgHeader.size])
        let total = XSDSockmsgHeader.size + Int(header.length)
        guard buffer.count - start >= total else { return nil }
        let payload = Array(buffer[start + XSDSockmsgHeader.size ..< start + total])
        start += total
        return XenStoreMessage(rawType: header.type, requestID: header.requestID,
                               transactionID: header.transactionID, payload: payload)
    }

    private mutating func compact() {
        if start == buffer.count {
            buffer.removeAll(keepingCapacity: true)
            start = 0
        } else if start > 4096 {
            buffer.removeFirst(start)
            start = 0
        }
    }
}
