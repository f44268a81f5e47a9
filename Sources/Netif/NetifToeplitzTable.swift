/// The Toeplitz hash of ``NetifToeplitz`` for inputs of at most ``maxInput`` bytes, with
/// the key unpacked once into a table: for each input position and byte value, the XOR
/// of the key windows its set bits select. A packet's hash is then one lookup per input
/// byte (12 for IPv4+TCP, 36 for IPv6+TCP) instead of a loop over its bits; the table
/// (36 KiB) is rebuilt only when the frontend sets a new key.
public struct NetifToeplitzTable: Sendable {
    /// The longest hash input (IPv6 addresses and TCP ports).
    public static let maxInput = 36

    @usableFromInline let table: [UInt32]

    /// The table for `key` (octets past its end are zero, as in ``NetifToeplitz``).
    public init(key: some Collection<UInt8>) {
        let seed = NetifToeplitz(key: key)
        var table = [UInt32](repeating: 0, count: Self.maxInput * 256)
        for position in 0..<Self.maxInput {
            // The window each bit of a byte at this position selects, from the bit-serial hash.
            let windows = (0..<8).map { bit -> UInt32 in
                var one = seed
                one.position = position
                withUnsafeBytes(of: UInt8(0x80) >> bit) { one.update($0) }
                return one.value
            }
            for byte in 1..<256 {
                // Each value is a smaller value plus its lowest set bit (bit 7 - trailing zeros
                // counted from the most significant end).
                let low = byte & -byte
                let bit = 7 - low.trailingZeroBitCount
                table[position * 256 + byte] = table[position * 256 + (byte ^ low)] ^ windows[bit]
            }
        }
        self.table = table
    }

    /// The hash of `bytes` fed from input position `start` on, XORed into `hash`; bytes past
    /// ``maxInput`` are not hashed (no hash input is that long).
    @inlinable
    public func update(_ hash: inout UInt32, _ bytes: UnsafeRawBufferPointer, at start: Int) {
        table.withUnsafeBufferPointer { table in
            var position = start
            for byte in bytes where position < Self.maxInput {
                hash ^= table[position &* 256 &+ Int(byte)]
                position &+= 1
            }
        }
    }

    /// The hash of `input` with this table's key.
    public func hash(_ input: [UInt8]) -> UInt32 {
        var value: UInt32 = 0
        input.withUnsafeBytes { update(&value, $0, at: 0) }
        return value
    }
}
