
/// An export held in process memory, for tests and demos.
///
/// A lock serialises the copies so concurrent clients never race on the bytes; it also
/// counts flushes and FUA writes so tests can see the flags arrive.
public final class NBDMemoryExport: NBDExport, @unchecked Sendable {
    // @unchecked: `storage` is only read or written inside `lock`.
    private let storage: UnsafeMutableRawBufferPointer
    private let lock = NBDLock(Counters())

    /// How often the client asked for durability.
    public struct Counters: Equatable, Sendable {
        /// `NBD_CMD_FLUSH` calls.
        public var flushes = 0
        /// Writes, trims and zeroings carrying `NBD_CMD_FLAG_FUA`.
        public var fuaWrites = 0
        /// Zeroings that allowed a hole.
        public var holePunches = 0
    }

    public let size: UInt64
    public let blockSizes: NBDBlockSizes
    public let isReadOnly: Bool
    public let features: NBDExportFeatures = [.flush, .fua, .trim, .writeZeroes, .multiConnection]

    /// A zero-filled export of `size` bytes, optionally initialised with `contents`.
    public init(size: Int, blockSizes: NBDBlockSizes = .default, readOnly: Bool = false, contents: [UInt8] = []) {
        precondition(size >= 0 && contents.count <= size, "contents larger than the export")
        storage = .allocate(byteCount: max(size, 1), alignment: 4096)
        storage.initializeMemory(as: UInt8.self, repeating: 0)
        storage.copyBytes(from: contents)
        self.size = UInt64(size)
        self.blockSizes = blockSizes
        self.isReadOnly = readOnly
    }

    deinit { storage.deallocate() }

    /// The counters so far.
    public var counters: Counters { lock.withLock { $0 } }

    /// A copy of `count` bytes at `offset`.
    public func bytes(at offset: Int, count: Int) -> [UInt8] {
        lock.withLock { _ in Array(storage[offset..<(offset + count)]) }
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(NBDError) {
        let start = try range(offset, buffer.count)
        lock.withLock { _ in buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: storage[start..<(start + buffer.count)])) }
    }

    public func write(_ buffer: UnsafeRawBufferPointer, at offset: UInt64, fua: Bool) throws(NBDError) {
        let start = try range(offset, buffer.count)
        lock.withLock { counters in
            UnsafeMutableRawBufferPointer(rebasing: storage[start..<(start + buffer.count)]).copyMemory(from: buffer)
            if fua { counters.fuaWrites += 1 }
        }
    }

    public func flush() throws(NBDError) {
        lock.withLock { $0.flushes += 1 }
    }

    public func trim(at offset: UInt64, length: UInt64, fua: Bool) throws(NBDError) {
        try writeZeroes(at: offset, length: length, mayPunchHole: true, fua: fua)
    }

    public func writeZeroes(at offset: UInt64, length: UInt64, mayPunchHole: Bool, fua: Bool) throws(NBDError) {
        let start = try range(offset, Int(clamping: length))
        lock.withLock { counters in
            UnsafeMutableRawBufferPointer(rebasing: storage[start..<(start + Int(length))])
                .initializeMemory(as: UInt8.self, repeating: 0)
            if fua { counters.fuaWrites += 1 }
            if mayPunchHole { counters.holePunches += 1 }
        }
    }

    /// Rechecks the range, so a caller other than the server cannot overrun the storage.
    private func range(_ offset: UInt64, _ count: Int) throws(NBDError) -> Int {
        let (end, overflow) = offset.addingReportingOverflow(UInt64(count))
        guard !overflow, end <= size else { throw .fieldOutOfRange(field: "export range end", value: end, limit: size) }
        return Int(offset)
    }
}
