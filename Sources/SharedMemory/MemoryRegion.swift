import CSharedMemory
import Glibc

/// Page-aligned memory with one owner: anonymous, memfd-backed (shareable with another
/// process by its descriptor), or a mapping handed in by a platform (a grant mapping).
///
/// The region unmaps on ``close()`` or when the last reference goes; views taken from it
/// must not outlive it.
public final class MemoryRegion: @unchecked Sendable {
    /// How the memory came to be, which decides how it is released.
    public enum Backing: Sendable {
        /// Private anonymous pages.
        case anonymous
        /// A memfd; the descriptor stays open while the region lives, so it can be passed on.
        case memfd(fd: Int32)
        /// A mapping made by someone else; `release` runs once on close.
        case adopted
    }

    // SAFETY: base..<base+length is mapped until `close()`; `closed` guards double unmap.
    private let base: UnsafeMutableRawPointer
    /// Length in bytes, a multiple of ``pageSize``.
    public let length: Int
    /// How the memory is backed.
    public let backing: Backing
    private let release: (@Sendable (UnsafeMutableRawPointer, Int) -> Void)?
    private var closed = false

    private init(base: UnsafeMutableRawPointer, length: Int, backing: Backing,
                 release: (@Sendable (UnsafeMutableRawPointer, Int) -> Void)?) {
        self.base = base
        self.length = length
        self.backing = backing
        self.release = release
    }

    deinit { close() }

    /// A view of the whole region.
    public var view: SharedView { SharedView(base: base, count: length) }

    /// The memfd backing this region, if any.
    public var fileDescriptor: Int32? {
        if case let .memfd(fd) = backing { return fd }
        return nil
    }

    /// Private zeroed pages; `populate` faults them all in now (MAP_POPULATE), so memory a
    /// long-lived user reserves counts from the start, not page by page as it is touched.
    public static func anonymous(pages: Int, populate: Bool = false) throws(SharedMemoryError) -> MemoryRegion {
        let length = try byteLength(pages: pages)
        let flags = MAP_SHARED | MAP_ANONYMOUS | (populate ? MAP_POPULATE : 0)
        guard let p = mmap(nil, length, PROT_READ | PROT_WRITE, flags, -1, 0),
              p != MAP_FAILED else {
            throw .systemCall("mmap(anonymous, \(length))", errno: errno)
        }
        return MemoryRegion(base: p, length: length, backing: .anonymous, release: nil)
    }

    /// Zeroed pages in a new memfd named `name`; the descriptor can be sent to another
    /// process, which maps it with ``map(fileDescriptor:offset:length:writable:)``.
    public static func memfd(name: String, pages: Int) throws(SharedMemoryError) -> MemoryRegion {
        let length = try byteLength(pages: pages)
        let fd = xsm_memfd_create(name)
        guard fd >= 0 else { throw .systemCall("memfd_create(\(name))", errno: errno) }
        guard ftruncate(fd, off_t(length)) == 0 else {
            let e = errno
            Glibc.close(fd)
            throw .systemCall("ftruncate(memfd \(name), \(length))", errno: e)
        }
        guard let p = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), p != MAP_FAILED else {
            let e = errno
            Glibc.close(fd)
            throw .systemCall("mmap(memfd \(name), \(length))", errno: e)
        }
        return MemoryRegion(base: p, length: length, backing: .memfd(fd: fd), release: nil)
    }

    /// Maps `length` bytes of a shared file descriptor (a memfd from another process).
    /// The descriptor is not owned; the caller may close it after this returns.
    /// `populate`: fault every page in now (MAP_POPULATE), as for ``anonymous(pages:populate:)``.
    public static func map(fileDescriptor fd: Int32, offset: Int = 0, length: Int,
                           writable: Bool = true, populate: Bool = false) throws(SharedMemoryError) -> MemoryRegion {
        guard length > 0, length % pageSize == 0 else { throw .badSize(length) }
        guard offset >= 0, offset % pageSize == 0 else { throw .badSize(offset) }
        let prot = writable ? PROT_READ | PROT_WRITE : PROT_READ
        guard let p = mmap(nil, length, prot, MAP_SHARED | (populate ? MAP_POPULATE : 0), fd, off_t(offset)),
              p != MAP_FAILED else {
            throw .systemCall("mmap(fd \(fd), offset \(offset), \(length))", errno: errno)
        }
        return MemoryRegion(base: p, length: length, backing: .adopted) { base, length in
            munmap(base, length)
        }
    }

    /// Maps the pages `frames` (page indices) of a shared file descriptor side by side in
    /// one contiguous region, whatever order or gaps the frames have: how a grant mapping
    /// of several refs looks to its user.
    public static func mapFrames(fileDescriptor fd: Int32, frames: [UInt32],
                                 writable: Bool) throws(SharedMemoryError) -> MemoryRegion {
        let length = frames.count * pageSize
        guard length > 0 else { throw .badSize(0) }
        guard let base = mmap(nil, length, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), base != MAP_FAILED else {
            throw .systemCall("mmap(reserve \(length))", errno: errno)
        }
        let prot = writable ? PROT_READ | PROT_WRITE : PROT_READ
        for (i, frame) in frames.enumerated() {
            let p = mmap(base + i * pageSize, pageSize, prot, MAP_SHARED | MAP_FIXED, fd, off_t(Int(frame) * pageSize))
            guard p != MAP_FAILED else {
                let e = errno
                munmap(base, length)
                throw .systemCall("mmap(fd \(fd), frame \(frame))", errno: e)
            }
        }
        return MemoryRegion(base: base, length: length, backing: .adopted) { b, l in munmap(b, l) }
    }

    /// Adopts a mapping made elsewhere (for example by libxengnttab). `release` runs once,
    /// on close.
    public static func adopting(base: UnsafeMutableRawPointer, length: Int,
                                release: @escaping @Sendable (UnsafeMutableRawPointer, Int) -> Void) -> MemoryRegion {
        MemoryRegion(base: base, length: length, backing: .adopted, release: release)
    }

    /// Unmaps the memory and closes a memfd. Safe to call more than once.
    public func close() {
        guard !closed else { return }
        closed = true
        if let release {
            release(base, length)
        } else {
            munmap(base, length)
        }
        if case let .memfd(fd) = backing { Glibc.close(fd) }
    }

    private static func byteLength(pages: Int) throws(SharedMemoryError) -> Int {
        let (length, overflow) = pages.multipliedReportingOverflow(by: pageSize)
        guard pages > 0, !overflow else { throw .badSize(pages &* pageSize) }
        return length
    }
}
