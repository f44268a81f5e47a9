// Every NBD field is big-endian ("network byte order", proto.md "Conventions").

extension UnsafeRawBufferPointer {
    /// The big-endian integer at `offset`; the caller has checked the length.
    @inlinable
    func loadBigEndian<T: FixedWidthInteger>(_: T.Type, at offset: Int) -> T {
        T(bigEndian: loadUnaligned(fromByteOffset: offset, as: T.self))
    }
}

extension UnsafeMutableRawBufferPointer {
    /// Stores `value` big-endian at `offset`; the caller has checked the length.
    @inlinable
    func storeBigEndian<T: FixedWidthInteger>(_ value: T, at offset: Int) {
        storeBytes(of: value.bigEndian, toByteOffset: offset, as: T.self)
    }
}

/// Appends big-endian fields to a byte array, for the handshake's variable-length messages.
struct NBDByteWriter {
    var bytes: [UInt8] = []

    mutating func append<T: FixedWidthInteger>(_ value: T) {
        withUnsafeBytes(of: value.bigEndian) { bytes.append(contentsOf: $0) }
    }

    mutating func append(contentsOf data: some Sequence<UInt8>) {
        bytes.append(contentsOf: data)
    }
}

/// Reads big-endian fields from a copied-out message, each read bounds-checked and named.
struct NBDByteReader {
    let bytes: [UInt8]
    let message: String
    private(set) var offset = 0

    init(_ bytes: [UInt8], message: String) {
        self.bytes = bytes
        self.message = message
    }

    var remaining: Int { bytes.count - offset }

    mutating func read<T: FixedWidthInteger>(_: T.Type) throws(NBDError) -> T {
        let size = MemoryLayout<T>.size
        guard remaining >= size else {
            throw .truncated(message: message, length: bytes.count, needed: offset + size)
        }
        let value = bytes.withUnsafeBytes { $0.loadBigEndian(T.self, at: offset) }
        offset += size
        return value
    }

    mutating func readBytes(_ count: Int) throws(NBDError) -> ArraySlice<UInt8> {
        guard count >= 0, remaining >= count else {
            throw .truncated(message: message, length: bytes.count, needed: offset + count)
        }
        defer { offset += count }
        return bytes[offset..<(offset + count)]
    }
}

/// proto.md "Conventions": strings are UTF-8 without NUL, at most 4096 bytes.
enum NBDString {
    static let maximumLength = 4096

    static func decode(_ bytes: ArraySlice<UInt8>, field: String) throws(NBDError) -> String {
        guard bytes.count <= maximumLength else {
            throw .fieldOutOfRange(field: field, value: UInt64(bytes.count), limit: UInt64(maximumLength))
        }
        guard !bytes.contains(0), let text = String(validating: bytes, as: UTF8.self) else {
            throw .invalidString(field: field)
        }
        return text
    }
}
