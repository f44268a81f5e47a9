import CSharedMemory

/// A non-owning view of memory that another party (a peer domain, another process) can
/// read and write while we use it.
///
/// Every access is an explicit little-endian load or store at a byte offset; no Swift
/// value is ever bound over the memory. Each load is one machine access, so a field the
/// peer controls is fetched once into a local value and cannot change under validation.
///
/// Offsets are bounds-checked: the plain accessors trap on an offset outside the view,
/// which is a bug in the caller (offsets are computed by our code from validated values);
/// the `checked` forms throw ``SharedMemoryError/outOfBounds(offset:count:size:)`` for
/// offsets derived from peer input. The owner of the memory (a ``MemoryRegion`` or a
/// platform mapping) must outlive every view of it.
public struct SharedView: @unchecked Sendable {
    // SAFETY: `base` points at `count` bytes mapped for as long as the owner lives.
    @usableFromInline let base: UnsafeMutableRawPointer
    /// Size of the view in bytes.
    public let count: Int

    /// Views `count` bytes at `base`. The caller keeps them mapped while the view is used.
    @inlinable
    public init(base: UnsafeMutableRawPointer, count: Int) {
        precondition(count >= 0, "negative view size")
        self.base = base
        self.count = count
    }

    /// Throws unless `offset..<offset+length` lies inside the view.
    @inlinable
    public func checkBounds(offset: Int, length: Int) throws(SharedMemoryError) {
        guard offset >= 0, length >= 0, offset <= count, length <= count &- offset else {
            throw .outOfBounds(offset: offset, count: length, size: count)
        }
    }

    @inlinable
    func require(_ offset: Int, _ length: Int) {
        precondition(offset >= 0 && length >= 0 && offset <= count && length <= count &- offset,
                     "shared memory access out of bounds")
    }

    /// A sub-view of `length` bytes starting at `offset`.
    @inlinable
    public func slice(offset: Int, length: Int) throws(SharedMemoryError) -> SharedView {
        try checkBounds(offset: offset, length: length)
        return SharedView(base: base + offset, count: length)
    }

    // MARK: Plain little-endian loads and stores (one access each)

    /// Loads a little-endian integer at `offset`, in one access.
    @inlinable
    public func load<T: FixedWidthInteger>(_: T.Type = T.self, at offset: Int) -> T {
        require(offset, MemoryLayout<T>.size)
        let p = base + offset
        let aligned = Int(bitPattern: p) & (MemoryLayout<T>.size &- 1) == 0
        switch MemoryLayout<T>.size {
        case 1:
            return T(truncatingIfNeeded: xsm_load8(p))
        case 2 where aligned:
            return T(truncatingIfNeeded: UInt16(littleEndian: xsm_load16(p)))
        case 4 where aligned:
            return T(truncatingIfNeeded: UInt32(littleEndian: xsm_load32(p)))
        case 8 where aligned:
            return T(truncatingIfNeeded: UInt64(littleEndian: xsm_load64(p)))
        default:
            var value = T.zero
            withUnsafeMutableBytes(of: &value) { xsm_copy_in($0.baseAddress!, p, MemoryLayout<T>.size) }
            return T(littleEndian: value)
        }
    }

    /// Stores a little-endian integer at `offset`, in one access.
    @inlinable
    public func store<T: FixedWidthInteger>(_ value: T, at offset: Int) {
        require(offset, MemoryLayout<T>.size)
        let p = base + offset
        let aligned = Int(bitPattern: p) & (MemoryLayout<T>.size &- 1) == 0
        switch MemoryLayout<T>.size {
        case 1:
            xsm_store8(p, UInt8(truncatingIfNeeded: value))
        case 2 where aligned:
            xsm_store16(p, UInt16(truncatingIfNeeded: value).littleEndian)
        case 4 where aligned:
            xsm_store32(p, UInt32(truncatingIfNeeded: value).littleEndian)
        case 8 where aligned:
            xsm_store64(p, UInt64(truncatingIfNeeded: value).littleEndian)
        default:
            var le = value.littleEndian
            withUnsafeBytes(of: &le) { xsm_copy_out(p, $0.baseAddress!, MemoryLayout<T>.size) }
        }
    }

    /// Loads a little-endian integer at a peer-derived `offset`, throwing if out of bounds.
    @inlinable
    public func checkedLoad<T: FixedWidthInteger>(_: T.Type = T.self, at offset: Int) throws(SharedMemoryError) -> T {
        try checkBounds(offset: offset, length: MemoryLayout<T>.size)
        return load(T.self, at: offset)
    }

    /// Stores a little-endian integer at a peer-derived `offset`, throwing if out of bounds.
    @inlinable
    public func checkedStore<T: FixedWidthInteger>(_ value: T, at offset: Int) throws(SharedMemoryError) {
        try checkBounds(offset: offset, length: MemoryLayout<T>.size)
        store(value, at: offset)
    }

    // MARK: Atomic 32-bit access (ring indices, event fields)

    /// Atomically loads the 32-bit little-endian value at `offset` (4-byte aligned).
    @inlinable
    public func atomicLoad32(at offset: Int, ordering: MemoryOrdering) -> UInt32 {
        require(offset, 4)
        precondition(Int(bitPattern: base + offset) & 3 == 0, "misaligned atomic")
        return UInt32(littleEndian: xsm_atomic_load32(base + offset, ordering.rawValue))
    }

    /// Atomically stores a 32-bit little-endian value at `offset` (4-byte aligned).
    @inlinable
    public func atomicStore32(_ value: UInt32, at offset: Int, ordering: MemoryOrdering) {
        require(offset, 4)
        precondition(Int(bitPattern: base + offset) & 3 == 0, "misaligned atomic")
        xsm_atomic_store32(base + offset, value.littleEndian, ordering.rawValue)
    }

    /// Sequentially consistent 16-bit compare-exchange; returns the value found, which
    /// equals `expected` exactly when the exchange happened.
    @inlinable
    public func compareExchange16(at offset: Int, expected: UInt16, desired: UInt16) -> (exchanged: Bool, original: UInt16) {
        require(offset, 2)
        precondition(Int(bitPattern: base + offset) & 1 == 0, "misaligned atomic")
        var seen = expected.littleEndian
        let ok = xsm_cmpxchg16(base + offset, &seen, desired.littleEndian) != 0
        return (ok, UInt16(littleEndian: seen))
    }

    /// Sequentially consistent 32-bit compare-exchange.
    @inlinable
    public func compareExchange32(at offset: Int, expected: UInt32, desired: UInt32) -> (exchanged: Bool, original: UInt32) {
        require(offset, 4)
        precondition(Int(bitPattern: base + offset) & 3 == 0, "misaligned atomic")
        var seen = expected.littleEndian
        let ok = xsm_cmpxchg32(base + offset, &seen, desired.littleEndian) != 0
        return (ok, UInt32(littleEndian: seen))
    }

    // MARK: Bulk copies

    /// Copies `destination.count` bytes at `offset` out into private memory, reading each
    /// shared byte once. Decode from the copy, never from the view.
    @inlinable
    public func copyBytes(at offset: Int, into destination: UnsafeMutableRawBufferPointer) {
        require(offset, destination.count)
        guard let d = destination.baseAddress, destination.count > 0 else { return }
        xsm_memcpy(d, base + offset, destination.count)
    }

    /// Copies private bytes into the view at `offset`.
    @inlinable
    public func copyBytes(from source: UnsafeRawBufferPointer, to offset: Int) {
        require(offset, source.count)
        guard let s = source.baseAddress, source.count > 0 else { return }
        xsm_memcpy(base + offset, s, source.count)
    }

    /// Copies `length` bytes between views (grant copy, page copy).
    @inlinable
    public static func copy(from source: SharedView, at sourceOffset: Int,
                            to destination: SharedView, at destinationOffset: Int, length: Int) {
        source.require(sourceOffset, length)
        destination.require(destinationOffset, length)
        xsm_memcpy(destination.base + destinationOffset, source.base + sourceOffset, length)
    }

    /// Fills `length` bytes at `offset` with `byte`.
    @inlinable
    public func fill(_ byte: UInt8, at offset: Int, length: Int) {
        require(offset, length)
        xsm_memset(base + offset, Int32(byte), length)
    }

    /// Copies the whole view into an array (tests, diagnostics; not for hot paths).
    public func bytes(at offset: Int = 0, length: Int? = nil) -> [UInt8] {
        let n = length ?? (count - offset)
        var out = [UInt8](repeating: 0, count: n)
        out.withUnsafeMutableBytes { copyBytes(at: offset, into: $0) }
        return out
    }

    /// The address of the first byte, for handing to system calls that take a buffer
    /// (io_uring, pread, mmap). The caller keeps the owner alive for the call.
    @inlinable
    public var baseAddress: UnsafeMutableRawPointer { base }
}
