import Glibc
import Synchronization
import URing

/// A raw image file or a block device, opened with open(2) and driven through the
/// worker's I/O engine.
///
/// Files discard by punching a hole (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE); block
/// devices take the same fallocate, which Linux turns into a discard or zero-out of the
/// range. Secure discard is offered only for block devices whose queue reports secure
/// erase support in sysfs, and is done with BLKSECDISCARD.
public final class FileBackingStore: BlockBackingStore {
    public let path: String
    public let readOnly: Bool
    public let logicalSectorSize: UInt32
    public let physicalSectorSize: UInt32
    public let supportsDiscard: Bool
    public let supportsSecureDiscard: Bool
    /// Whether the path is a block device (else a regular file).
    public let isBlockDevice: Bool
    /// Whether I/O bypasses the page cache (O_DIRECT): asked for, and done where it lives.
    public let direct: Bool
    /// Why direct I/O was asked for and is not done; nil otherwise.
    public let directUnavailable: String?
    private let descriptor: Mutex<Int32>

    /// Opens `path` read-write, or read-only when `readOnly` (the device is then read-only
    /// whatever the frontend asks). With `direct`, I/O bypasses the page cache (O_DIRECT)
    /// where the file system or device does direct I/O in units of the sector size it is
    /// served with; queues then move data through their page-aligned copy buffers. Where
    /// it does not (tmpfs takes O_DIRECT and stays buffered), the store is buffered and
    /// ``directUnavailable`` says why.
    public init(path: String, readOnly: Bool, direct: Bool = false) throws(BlockBackendError) {
        let flags = (readOnly ? O_RDONLY : O_RDWR) | O_CLOEXEC
        let fd: Int32
        switch SystemCall.retrying({ open(path, flags) }) {
        case let .success(opened): fd = opened
        case let .failure(error): throw .backingStore(path: path, call: "open", error)
        }
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            let error = Errno(code: errno)
            Glibc.close(fd)
            throw .backingStore(path: path, call: "fstat", error)
        }
        let type = info.st_mode & S_IFMT
        self.path = path
        self.readOnly = readOnly
        var logical: UInt32 = 512
        var physical: UInt32 = 512
        switch type {
        case S_IFREG:
            isBlockDevice = false
            physical = UInt32(clamping: max(512, Int(info.st_blksize)))
            supportsDiscard = true
            supportsSecureDiscard = false
        case S_IFBLK:
            isBlockDevice = true
            var deviceLogical: Int32 = 0
            var devicePhysical: UInt32 = 0
            guard ioctl(fd, Self.BLKSSZGET, &deviceLogical) == 0, ioctl(fd, Self.BLKPBSZGET, &devicePhysical) == 0 else {
                let error = Errno(code: errno)
                Glibc.close(fd)
                throw .backingStore(path: path, call: "ioctl(BLKSSZGET/BLKPBSZGET)", error)
            }
            logical = UInt32(clamping: max(512, Int(deviceLogical)))
            physical = devicePhysical
            let queue = Self.sysfsQueue(major: Self.major(info.st_rdev), minor: Self.minor(info.st_rdev))
            supportsDiscard = (queue.flatMap { Self.readNumber("\($0)/discard_max_bytes") } ?? 0) > 0
            supportsSecureDiscard = (queue.flatMap { Self.readNumber("\($0)/max_secure_erase_sectors") } ?? 0) > 0
        default:
            Glibc.close(fd)
            throw .unsupportedBackingStore(path: path, mode: UInt32(info.st_mode))
        }
        let unavailable = direct ? Self.enableDirectIO(fd, sectorSize: logical) : nil
        self.direct = direct && unavailable == nil
        directUnavailable = unavailable
        logicalSectorSize = logical
        physicalSectorSize = max(logical, physical)
        descriptor = Mutex(fd)
    }

    /// Turns on O_DIRECT for `fd` when its file does direct I/O with alignments requests
    /// meet: a transfer starts page-aligned in a copy buffer and covers whole sectors of
    /// `sectorSize` bytes (the size the frontend is told; a file's stays 512, as a larger
    /// one would change the disk's geometry under its guests). Returns why not, or nil.
    static func enableDirectIO(_ fd: Int32, sectorSize: UInt32) -> String? {
        let alignment: DirectIOAlignment?
        do { alignment = try DirectIOAlignment.of(fd) } catch {
            return "statx(STATX_DIOALIGN): \(error)"
        }
        guard let alignment else {
            return "the file system does no direct I/O (statx reports no O_DIRECT alignment)"
        }
        guard alignment.memory <= 4096, alignment.offset <= sectorSize else {
            return "direct I/O needs buffers aligned to \(alignment.memory) bytes and offsets to \(alignment.offset),"
                + " more than a page or the \(sectorSize)-byte sector"
        }
        let flags = fcntl(fd, F_GETFL)
        guard flags >= 0, fcntl(fd, F_SETFL, flags | O_DIRECT) == 0 else {
            return "fcntl(F_SETFL, O_DIRECT): \(Errno(code: errno))"
        }
        return nil
    }

    deinit { close() }

    public var fileDescriptor: Int32 { descriptor.withLock { $0 } }

    public func currentSectors() throws(BlockBackendError) -> UInt64 {
        let fd = fileDescriptor
        if isBlockDevice {
            var bytes: UInt64 = 0
            guard ioctl(fd, Self.BLKGETSIZE64, &bytes) == 0 else {
                throw .backingStore(path: path, call: "ioctl(BLKGETSIZE64)", Errno(code: errno))
            }
            return bytes / 512
        }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw .backingStore(path: path, call: "fstat", Errno(code: errno)) }
        return UInt64(max(0, info.st_size)) / 512
    }

    public func discardOperation(offset: UInt64, length: UInt64) -> BlockIOOperation {
        .discard(.descriptor(fileDescriptor), offset: offset, length: length)
    }

    public func secureDiscard(offset: UInt64, length: UInt64) throws(BlockBackendError) {
        guard supportsSecureDiscard else {
            throw .backingStore(path: path, call: "ioctl(BLKSECDISCARD)", .EOPNOTSUPP)
        }
        var range: (UInt64, UInt64) = (offset, length)
        if case let .failure(error) = SystemCall.retrying({ ioctl(fileDescriptor, Self.BLKSECDISCARD, &range) }) {
            throw .backingStore(path: path, call: "ioctl(BLKSECDISCARD)", error)
        }
    }

    public func close() {
        descriptor.withLock { fd in
            guard fd >= 0 else { return }
            Glibc.close(fd)
            fd = -1
        }
    }

    // MARK: linux/fs.h ioctl numbers (_IO(0x12, n) and _IOR(0x12, 114, size_t))

    /// asm-generic/fcntl.h O_DIRECT, which Glibc's module does not export.
    #if arch(arm64) || arch(arm)
    static let O_DIRECT: Int32 = 0o200000
    #else
    static let O_DIRECT: Int32 = 0o40000
    #endif

    static let BLKSSZGET: UInt = 0x1268
    static let BLKPBSZGET: UInt = 0x127B
    static let BLKSECDISCARD: UInt = 0x127D
    static let BLKGETSIZE64: UInt = 0x8008_1272

    static func major(_ device: dev_t) -> UInt64 {
        (UInt64(device) >> 8) & 0xFFF | (UInt64(device) >> 32) & ~UInt64(0xFFF)
    }

    static func minor(_ device: dev_t) -> UInt64 {
        UInt64(device) & 0xFF | (UInt64(device) >> 12) & ~UInt64(0xFF)
    }

    /// The sysfs queue directory of a disk or, for a partition, of its disk.
    static func sysfsQueue(major: UInt64, minor: UInt64) -> String? {
        let base = "/sys/dev/block/\(major):\(minor)"
        for candidate in ["\(base)/queue", "\(base)/../queue"] where access(candidate, F_OK) == 0 {
            return candidate
        }
        return nil
    }

    /// A decimal number from a sysfs file, or nil if it cannot be read.
    static func readNumber(_ file: String) -> UInt64? {
        let fd = open(file, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { Glibc.close(fd) }
        var buffer = [UInt8](repeating: 0, count: 32)
        let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        guard count > 0 else { return nil }
        let text = String(decoding: buffer[0..<count], as: UTF8.self)
        return UInt64(text.trimmingPrefixAndSuffixWhitespace)
    }
}

extension String {
    fileprivate var trimmingPrefixAndSuffixWhitespace: Substring {
        let isSpace: (Character) -> Bool = { $0 == " " || $0 == "\n" || $0 == "\t" }
        guard let first = firstIndex(where: { !isSpace($0) }), let last = lastIndex(where: { !isSpace($0) }) else {
            return ""
        }
        return self[first...last]
    }
}
