import Glibc

/// An export backed by a regular file or block device, through pread, pwrite, fdatasync
/// and fallocate.
///
/// FUA is a write followed by fdatasync. Trim punches a hole; zeroing punches a hole when
/// allowed and otherwise asks for FALLOC_FL_ZERO_RANGE, falling back to writing zeroes
/// where the file system supports neither.
public final class NBDFileExport: NBDExport, Sendable {
    // linux/falloc.h; not all are exported by the Glibc module.
    private static let keepSize: Int32 = 0x01
    private static let punchHole: Int32 = 0x02
    private static let zeroRange: Int32 = 0x10
    private static let zeroChunk = 1 << 20

    private let descriptor: Int32
    /// The path opened.
    public let path: String
    public let size: UInt64
    public let blockSizes: NBDBlockSizes
    public let isReadOnly: Bool
    public let features: NBDExportFeatures

    /// Opens `path` (read-write unless `readOnly`); the export's size is the file's size.
    public init(path: String, readOnly: Bool = false, blockSizes: NBDBlockSizes = .default) throws(NBDError) {
        let descriptor = open(path, (readOnly ? O_RDONLY : O_RDWR) | O_CLOEXEC)
        guard descriptor >= 0 else { throw .system(call: "open \(path)", errno: errno) }
        // lseek gives the size of regular files and block devices alike.
        let end = lseek(descriptor, 0, SEEK_END)
        guard end >= 0 else {
            let code = errno
            close(descriptor)
            throw .system(call: "lseek \(path)", errno: code)
        }
        self.descriptor = descriptor
        self.path = path
        self.size = UInt64(end)
        self.blockSizes = blockSizes
        self.isReadOnly = readOnly
        // Every connection shares the kernel's page cache, so multi-connection is safe.
        self.features = [.flush, .fua, .trim, .writeZeroes, .multiConnection]
    }

    deinit { close(descriptor) }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(NBDError) {
        var done = 0
        while done < buffer.count {
            let result = pread(descriptor, buffer.baseAddress! + done, buffer.count - done, off_t(offset) + off_t(done))
            if result > 0 {
                done += result
            } else if result == 0 {
                // The file shrank under us: what lies beyond its end reads as zero.
                UnsafeMutableRawBufferPointer(rebasing: buffer[done...]).initializeMemory(as: UInt8.self, repeating: 0)
                return
            } else if errno != EINTR {
                throw .exportIO(call: "pread", errno: errno)
            }
        }
    }

    public func write(_ buffer: UnsafeRawBufferPointer, at offset: UInt64, fua: Bool) throws(NBDError) {
        var done = 0
        while done < buffer.count {
            let result = pwrite(descriptor, buffer.baseAddress! + done, buffer.count - done, off_t(offset) + off_t(done))
            if result >= 0 {
                done += result
            } else if errno != EINTR {
                throw .exportIO(call: "pwrite", errno: errno)
            }
        }
        if fua { try flush() }
    }

    public func flush() throws(NBDError) {
        while fdatasync(descriptor) != 0 {
            if errno != EINTR { throw .exportIO(call: "fdatasync", errno: errno) }
        }
    }

    public func trim(at offset: UInt64, length: UInt64, fua: Bool) throws(NBDError) {
        guard length > 0 else { return }
        // A trim is advisory: a file system without hole punching simply keeps the data.
        let result = allocate(Self.punchHole | Self.keepSize, offset, length)
        if result != 0, result != EOPNOTSUPP { throw .exportIO(call: "fallocate(PUNCH_HOLE)", errno: result) }
        if fua { try flush() }
    }

    public func writeZeroes(at offset: UInt64, length: UInt64, mayPunchHole: Bool, fua: Bool) throws(NBDError) {
        guard length > 0 else { return }
        var result = allocate(mayPunchHole ? Self.punchHole | Self.keepSize : Self.zeroRange | Self.keepSize, offset, length)
        if result == EOPNOTSUPP, mayPunchHole { result = allocate(Self.zeroRange | Self.keepSize, offset, length) }
        if result == EOPNOTSUPP || result == ENODEV {
            try writeZeroBuffers(offset, length)
        } else if result != 0 {
            throw .exportIO(call: "fallocate", errno: result)
        }
        if fua { try flush() }
    }

    /// fallocate, retried on EINTR; the errno, or 0.
    private func allocate(_ mode: Int32, _ offset: UInt64, _ length: UInt64) -> Int32 {
        guard let fallocate = linuxFallocate else { return EOPNOTSUPP }
        while true {
            if fallocate(descriptor, mode, off_t(offset), off_t(length)) == 0 { return 0 }
            if errno != EINTR { return errno }
        }
    }

    private func writeZeroBuffers(_ offset: UInt64, _ length: UInt64) throws(NBDError) {
        let zeroes = UnsafeMutableRawBufferPointer.allocate(byteCount: Self.zeroChunk, alignment: 4096)
        defer { zeroes.deallocate() }
        zeroes.initializeMemory(as: UInt8.self, repeating: 0)
        var done: UInt64 = 0
        while done < length {
            let chunk = Int(min(UInt64(Self.zeroChunk), length - done))
            try write(UnsafeRawBufferPointer(rebasing: zeroes[0..<chunk]), at: offset + done, fua: false)
            done += UInt64(chunk)
        }
    }
}

/// glibc's fallocate(2) wrapper. Glibc's Swift module hides it (it is a _GNU_SOURCE
/// declaration), so it is looked up once by name instead of adding a C target.
private let linuxFallocate: (@convention(c) (Int32, Int32, off_t, off_t) -> Int32)? = {
    guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "fallocate") else { return nil }
    return unsafeBitCast(symbol, to: (@convention(c) (Int32, Int32, off_t, off_t) -> Int32).self)
}()
