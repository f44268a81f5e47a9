/// `fallocate(2)` modes (values from `linux/falloc.h`).
public struct FallocateMode: OptionSet, Sendable {
    public let rawValue: Int32
    @inlinable public init(rawValue: Int32) { self.rawValue = rawValue }

    /// FALLOC_FL_KEEP_SIZE: never extend the file.
    public static let keepSize = FallocateMode(rawValue: 0x01)
    /// FALLOC_FL_PUNCH_HOLE: deallocate the range; it then reads back as zeroes.
    public static let punchHole = FallocateMode(rawValue: 0x02)
    /// FALLOC_FL_ZERO_RANGE: make the range read as zeroes, keeping it allocated.
    public static let zeroRange = FallocateMode(rawValue: 0x10)

    /// What a block discard does: punch a hole, keep the size.
    public static let discard: FallocateMode = [.punchHole, .keepSize]
    /// What a block write-zeroes does: zero the range, keep the size.
    public static let writeZeroes: FallocateMode = [.zeroRange, .keepSize]
}
