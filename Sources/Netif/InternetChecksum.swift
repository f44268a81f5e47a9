/// The Internet checksum of RFC 1071 (the one IPv4, TCP and UDP carry): the ones'
/// complement of the ones' complement sum of the data as big-endian 16-bit words, an odd
/// last byte padded with zero.
///
/// Data can be added in pieces of any length; a piece that starts at an odd position
/// of the whole is summed as if aligned and byte-swapped in, which the ones' complement
/// sum allows.
public struct InternetChecksum: Sendable, Hashable {
    private var sum: UInt64 = 0
    /// Whether an odd number of bytes has been added so far.
    private var odd = false

    /// A checksum of nothing yet.
    public init() {}

    /// Adds `bytes`, continuing where the previous piece ended.
    public mutating func add(_ bytes: UnsafeRawBufferPointer) {
        var partial: UInt64 = 0
        var index = 0
        // 32-bit big-endian words: their ones' complement sum folds to the 16-bit one.
        while bytes.count - index >= 4 {
            partial &+= UInt64(UInt32(bigEndian: bytes.loadUnaligned(fromByteOffset: index, as: UInt32.self)))
            index += 4
        }
        while bytes.count - index >= 2 {
            partial &+= UInt64(bytes[index]) << 8 | UInt64(bytes[index + 1])
            index += 2
        }
        if index < bytes.count { partial &+= UInt64(bytes[index]) << 8 }
        let folded = Self.fold(partial)
        sum &+= UInt64(odd ? folded.byteSwapped : folded)
        if bytes.count % 2 == 1 { odd.toggle() }
    }

    /// Adds the bytes of `bytes`.
    public mutating func add(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { add($0) }
    }

    /// Adds one big-endian 16-bit word, as at an even position (pseudo-header fields).
    public mutating func add(word: UInt16) {
        sum &+= UInt64(odd ? word.byteSwapped : word)
    }

    /// The ones' complement sum so far, folded to 16 bits (what a partial checksum field
    /// holds before it is finished).
    public var sum16: UInt16 { Self.fold(sum) }

    /// The checksum: the complement of ``sum16``. Data that includes its own correct
    /// checksum gives 0.
    public var checksum: UInt16 { ~sum16 }

    /// The checksum of `bytes`.
    public static func checksum(of bytes: UnsafeRawBufferPointer) -> UInt16 {
        var sum = InternetChecksum()
        sum.add(bytes)
        return sum.checksum
    }

    /// The checksum of `bytes`.
    public static func checksum(of bytes: [UInt8]) -> UInt16 {
        bytes.withUnsafeBytes { checksum(of: $0) }
    }

    static func fold(_ value: UInt64) -> UInt16 {
        var value = value
        while value >> 16 != 0 { value = (value & 0xFFFF) &+ (value >> 16) }
        return UInt16(value)
    }
}
