/// What a frontend set up over its control ring for receive-side hashing (`io/netif.h`,
/// "Control messages"): the algorithm, the hash types, the key and the mapping table
/// from hash to queue. A pure state machine: ``answer(_:read:)`` applies one request and
/// returns the response `io/netif.h` gives for it; the granted pages a request names
/// are read through a closure (the backend grant-copies them, tests pass bytes).
///
/// Content errors are answered with a status, never thrown: a control request cannot
/// break the protocol, only ask for something this backend does not do.
public struct NetifHashConfiguration: Sendable, Hashable {
    /// The largest key taken (larger: BUFFER_OVERFLOW), as Linux's netback.
    public static let maxKeySize = NetifToeplitz.maxKeySize
    /// The largest mapping table (GET_HASH_MAPPING_SIZE's answer), as Linux's netback.
    public static let maxMappingSize: UInt32 = 128
    /// The hash types this backend calculates (GET_HASH_FLAGS's answer).
    public static let supportedTypes: NetifHashTypes = [.ipv4, .ipv4TCP, .ipv6, .ipv6TCP]
    /// Bytes of one granted page: what a key or a sub-table may occupy.
    public static let pageSize = 4096

    /// The queue pairs of the vif: mapping entries must name one of them.
    public let queueCount: Int
    /// XEN_NETIF_CTRL_TYPE_SET_HASH_ALGORITHM (NONE until set).
    public private(set) var algorithm: NetifHashAlgorithm = .none
    /// XEN_NETIF_CTRL_TYPE_SET_HASH_FLAGS (none until set).
    public private(set) var types: NetifHashTypes = []
    /// XEN_NETIF_CTRL_TYPE_SET_HASH_KEY: octets past its end are zero (empty until set).
    public private(set) var key: [UInt8] = []
    /// XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING_SIZE and _MAPPING: queue per hash modulo the
    /// size; empty: the hash modulo the queue count picks the queue.
    public private(set) var mapping: [UInt32] = []

    /// The initial state for a vif of `queueCount` queue pairs: no hashing.
    public init(queueCount: Int) {
        self.queueCount = max(queueCount, 1)
    }

    /// Whether packets are hashed: the Toeplitz algorithm with at least one type set.
    public var isHashing: Bool { algorithm == .toeplitz && !types.isEmpty }

    /// Applies `request` and returns its response. `read(ref, length)` returns the first
    /// `length` bytes of the page granted as `ref`, or nil if it cannot be read (then the
    /// request is answered INVALID_PARAMETER and nothing changes); it is called at most
    /// once per request, only after the sizes are checked (`length` ≤ one page).
    public mutating func answer(_ request: NetifCtrlRequest,
                                read: (_ ref: UInt32, _ length: Int) -> [UInt8]?) -> NetifCtrlResponse {
        let (status, data) = apply(request, read: read)
        return NetifCtrlResponse(answering: request, status, data: status == .success ? data : 0)
    }

    // The reserved words (data[1], data[2] of the simpler types) are ignored, as Linux's
    // netback does: io/netif.h lists no status for them.
    mutating func apply(_ request: NetifCtrlRequest,
                        read: (UInt32, Int) -> [UInt8]?) -> (NetifCtrlStatus, UInt32) {
        guard let kind = request.kind else { return (.notSupported, 0) }
        let (first, second, third) = request.data
        switch kind {
        case .invalid:
            return (.notSupported, 0)
        case .setHashAlgorithm:
            guard first <= UInt8.max, let chosen = NetifHashAlgorithm(rawValue: UInt8(first)) else {
                return (.invalidParameter, 0)
            }
            algorithm = chosen
            return (.success, 0)
        case .getHashFlags:
            // "A valid hash algorithm must be selected before this operation can succeed."
            guard algorithm != .none else { return (.notSupported, 0) }
            return (.success, Self.supportedTypes.rawValue)
        case .setHashFlags:
            guard algorithm != .none else { return (.notSupported, 0) }
            guard first & ~Self.supportedTypes.rawValue == 0 else { return (.invalidParameter, 0) }
            types = NetifHashTypes(rawValue: first)
            return (.success, 0)
        case .setHashKey:
            let size = Int(second)
            guard size <= Self.maxKeySize else { return (.bufferOverflow, 0) }
            guard size > 0 else {
                key = []
                return (.success, 0)
            }
            guard let bytes = read(first, size), bytes.count == size else { return (.invalidParameter, 0) }
            key = bytes
            return (.success, 0)
        case .getHashMappingSize:
            return (.success, Self.maxMappingSize)
        case .setHashMappingSize:
            guard first <= Self.maxMappingSize else { return (.invalidParameter, 0) }
            mapping = Array(repeating: 0, count: Int(first))
            return (.success, 0)
        case .setHashMapping:
            let count = Int(second), offset = Int(third)
            guard count <= Int(Self.maxMappingSize) else { return (.bufferOverflow, 0) }
            // UInt32 words widened to Int: the sum cannot wrap.
            guard offset + count <= mapping.count else { return (.invalidParameter, 0) }
            guard count > 0 else { return (.success, 0) }
            guard let bytes = read(first, count * 4), bytes.count == count * 4 else { return (.invalidParameter, 0) }
            var entries: [UInt32] = []
            entries.reserveCapacity(count)
            for index in 0..<count {
                // Little-endian, as every x86 and Arm guest writes its uint32_t.
                let base = index * 4
                let entry = UInt32(bytes[base]) | UInt32(bytes[base + 1]) << 8 | UInt32(bytes[base + 2]) << 16
                    | UInt32(bytes[base + 3]) << 24
                // "each mapping must specify a queue between 0 and multi-queue-num-queues"
                guard entry < queueCount else { return (.invalidParameter, 0) }
                entries.append(entry)
            }
            mapping.replaceSubrange(offset..<(offset + count), with: entries)
            return (.success, 0)
        case .getGrefMappingSize:
            // Static grants are not kept: zero entries, "zero if it is not supported".
            guard first < queueCount else { return (.invalidParameter, 0) }
            return (.success, 0)
        case .addGrefMapping, .delGrefMapping:
            return (.notSupported, 0)
        }
    }

    /// The queue a packet with hash `value` goes to: the mapping table's entry at the hash
    /// modulo its size, or the hash modulo the queue count without a table.
    public func queue(forHash value: UInt32) -> Int {
        mapping.isEmpty ? Int(value % UInt32(queueCount)) : Int(mapping[Int(value % UInt32(mapping.count))])
    }
}
