/// The Toeplitz hash (`io/netif.h: XEN_NETIF_CTRL_HASH_ALGORITHM_TOEPLITZ`): for each bit
/// of the input, most significant first, a set bit XORs the 32 key bits that start at
/// the same bit position into the result. Key bits past the key's end are zero, so a
/// short (or empty) key hashes as if zero-padded.
///
/// Fed in pieces (``update(_:)``): a packet's hash input is two ranges of its headers
/// (addresses, then ports) and is never copied together.
public struct NetifToeplitz: Sendable {
    /// The largest key this implementation takes: the input (36 bytes at most for
    /// IPv6+TCP) plus the 4 bytes its last bit's window reaches.
    public static let maxKeySize = 40

    @usableFromInline var key: (UInt64, UInt64, UInt64, UInt64, UInt64)
    @usableFromInline var keyCount: Int
    /// Input bytes hashed so far: the key window of the next byte starts at this byte.
    @usableFromInline var position = 0
    @usableFromInline var hash: UInt32 = 0

    /// The hash so far.
    @inlinable public var value: UInt32 { hash }

    /// A hash with `key` (bytes past ``maxKeySize`` are never reached by an input of at
    /// most 36 bytes and are ignored).
    @inlinable
    public init(key: some Collection<UInt8>) {
        self.key = (0, 0, 0, 0, 0)
        keyCount = min(key.count, Self.maxKeySize)
        withUnsafeMutableBytes(of: &self.key) { storage in
            for (index, byte) in key.prefix(Self.maxKeySize).enumerated() { storage[index] = byte }
        }
    }

    @inlinable
    func keyByte(_ index: Int) -> UInt64 {
        guard index < keyCount else { return 0 }
        return withUnsafeBytes(of: key) { UInt64($0[index]) }
    }

    /// Hashes `bytes` after what was fed so far.
    @inlinable
    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        for byte in bytes {
            // The 40 key bits from this byte's first bit on: enough for its 8 windows of 32.
            let window = keyByte(position) << 32 | keyByte(position + 1) << 24 | keyByte(position + 2) << 16
                | keyByte(position + 3) << 8 | keyByte(position + 4)
            for bit in 0..<8 where byte & (0x80 >> bit) != 0 {
                hash ^= UInt32(truncatingIfNeeded: window >> (8 - bit))
            }
            position += 1
        }
    }

    /// Hashes `bytes` after what was fed so far.
    @inlinable
    public mutating func update(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { update($0) }
    }

    /// The hash of `input` with `key`.
    @inlinable
    public static func hash(key: some Collection<UInt8>, input: [UInt8]) -> UInt32 {
        var hash = NetifToeplitz(key: key)
        hash.update(input)
        return hash.value
    }
}
