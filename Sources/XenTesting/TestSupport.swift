import Glibc
import Foundation
import XenPlatform

/// A small seeded generator (SplitMix64), so every random test replays exactly.
public struct SeededGenerator: RandomNumberGenerator, Sendable {
    public var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// A tab-separated data file under Protocols/: `#` lines are comments, the first other
/// line names the columns.
public struct ProtocolTable: Sendable {
    public let columns: [String]
    public let rows: [[String: String]]

    /// Reads Protocols/`name` of the package whose test file is `filePath`
    /// (Tests/<Target>/<file>.swift), so pass the caller's `#filePath`.
    public init(_ name: String, filePath: String = #filePath) throws {
        let text = try String(contentsOf: Self.directory(filePath: filePath).appendingPathComponent(name), encoding: .utf8)
        let lines = text.split(separator: "\n", omittingEmptySubsequences: true)
            .filter { !$0.hasPrefix("#") }
            .map { $0.split(separator: "\t", omittingEmptySubsequences: false).map(String.init) }
        guard let header = lines.first else {
            throw CocoaError(.fileReadCorruptFile, userInfo: [NSFilePathErrorKey: name])
        }
        columns = header
        rows = try lines.dropFirst().map { fields in
            guard fields.count == header.count else {
                throw CocoaError(.fileReadCorruptFile, userInfo: [NSFilePathErrorKey: name])
            }
            return Dictionary(uniqueKeysWithValues: zip(header, fields))
        }
    }

    /// The Protocols/ directory, three levels above a test source file.
    public static func directory(filePath: String) -> URL {
        URL(fileURLWithPath: filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Protocols")
    }
}

/// Bytes from a hex string ("0a0b..."); whitespace is not allowed.
public func hexBytes(_ hex: String) -> [UInt8] {
    var out: [UInt8] = []
    var index = hex.startIndex
    while index < hex.endIndex {
        let next = hex.index(index, offsetBy: 2, limitedBy: hex.endIndex) ?? hex.endIndex
        out.append(UInt8(hex[index..<next], radix: 16) ?? 0)
        index = next
    }
    return out
}

/// A sparse image file of `sectors` 512-byte sectors in a fresh directory under /tmp (a
/// disk file system, so a backend's discard punches holes), removed at deinit.
public final class TestImage: Sendable {
    public let directory: String
    public let path: String
    public let sectors: UInt64

    public init(sectors: UInt64, name: String = "disk.img", prefix: String = "xensplit-image") throws {
        var template = Array("/tmp/\(prefix)-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw PlatformError.system("mkdtemp", errno: errno) }
        directory = String(cString: made)
        path = directory + "/" + name
        self.sectors = sectors
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw PlatformError.system("open \(path)", errno: errno) }
        defer { close(fd) }
        guard ftruncate(fd, off_t(sectors * 512)) == 0 else { throw PlatformError.system("ftruncate \(path)", errno: errno) }
    }

    deinit {
        unlink(path)
        rmdir(directory)
    }

    /// The file's bytes as they stand.
    public func contents() throws -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw PlatformError.system("open \(path)", errno: errno) }
        defer { close(fd) }
        var bytes = [UInt8](repeating: 0, count: Int(sectors * 512))
        let count = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }
        guard count == bytes.count else { throw PlatformError.system("pread \(path)", errno: errno) }
        return bytes
    }
}
