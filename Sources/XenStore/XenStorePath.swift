/// Path rules of xenstore (io/xs_wire.h limits, docs/misc/xenstore.txt rules).
///
/// An absolute path starts with `/`, has no empty component (no `//`), does not end in
/// `/` (except the root itself), uses only `A-Z a-z 0-9 - / _ @`, and is at most
/// XENSTORE_ABS_PATH_MAX bytes. A relative path (no leading `/`) names a node under the
/// connection's domain home `/local/domain/<domid>` and is at most XENSTORE_REL_PATH_MAX
/// bytes. A path starting with `@` names a special event (`@introduceDomain`,
/// `@releaseDomain`), valid for watches and permissions only.
public enum XenStorePath {
    /// io/xs_wire.h's special watch paths.
    public static let introduceDomain = "@introduceDomain"
    /// Fired when a domain is released.
    public static let releaseDomain = "@releaseDomain"

    /// The home of a domain, `/local/domain/<domid>`.
    public static func domainPath(_ domid: UInt16) -> String { "/local/domain/\(domid)" }

    /// Whether `byte` may appear in a node path.
    @inlinable
    public static func isValidCharacter(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "A") ... UInt8(ascii: "Z"), UInt8(ascii: "a") ... UInt8(ascii: "z"),
             UInt8(ascii: "0") ... UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "/"),
             UInt8(ascii: "_"), UInt8(ascii: "@"):
            return true
        default:
            return false
        }
    }

    /// Checks an absolute node path; returns it as a String.
    public static func validateAbsolute(_ bytes: ArraySlice<UInt8>) throws(XenStoreError) -> String {
        let text = printable(bytes)
        guard bytes.first == UInt8(ascii: "/") else { throw .invalidPath(path: text, reason: "does not start with /") }
        guard bytes.count <= XenStoreLimits.absolutePathMax else {
            throw .invalidPath(path: String(text.prefix(64)) + "...",
                               reason: "length \(bytes.count) exceeds XENSTORE_ABS_PATH_MAX \(XenStoreLimits.absolutePathMax)")
        }
        if bytes.count > 1, bytes.last == UInt8(ascii: "/") { throw .invalidPath(path: text, reason: "ends with /") }
        var previousSlash = false
        for byte in bytes {
            guard isValidCharacter(byte) else { throw .invalidPath(path: text, reason: "byte \(byte) is not allowed") }
            let slash = byte == UInt8(ascii: "/")
            if slash && previousSlash { throw .invalidPath(path: text, reason: "contains //") }
            previousSlash = slash
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Resolves a path sent by a connection: absolute paths are checked, relative ones are
    /// joined to `home` (nil for a connection without a domain home, for which relative
    /// paths are invalid, as for C xenstored's socket clients). Returns the absolute path
    /// and whether it was relative.
    public static func resolve(_ bytes: ArraySlice<UInt8>, home: String?) throws(XenStoreError) -> (path: String, relative: Bool) {
        if bytes.first == UInt8(ascii: "/") { return (try validateAbsolute(bytes), false) }
        guard let home else { throw .invalidPath(path: printable(bytes), reason: "relative path on a connection without a domain home") }
        guard !bytes.isEmpty else { throw .invalidPath(path: "", reason: "empty") }
        guard bytes.count <= XenStoreLimits.relativePathMax else {
            throw .invalidPath(path: String(printable(bytes).prefix(64)) + "...",
                               reason: "length \(bytes.count) exceeds XENSTORE_REL_PATH_MAX \(XenStoreLimits.relativePathMax)")
        }
        return (try validateAbsolute(ArraySlice(Array(home.utf8) + [UInt8(ascii: "/")] + bytes)), true)
    }

    /// The parent of an absolute path (`/` for a top-level node and for `/`).
    public static func parent(of path: String) -> String {
        guard let slash = path.utf8.lastIndex(of: UInt8(ascii: "/")), slash != path.utf8.startIndex else { return "/" }
        return String(path[..<slash])
    }

    /// The last component of an absolute path other than `/`.
    public static func basename(of path: String) -> String {
        guard let slash = path.utf8.lastIndex(of: UInt8(ascii: "/")) else { return path }
        return String(path[path.utf8.index(after: slash)...])
    }

    /// `parent + "/" + child`, for any parent including `/`.
    public static func join(_ parent: String, _ child: String) -> String {
        parent == "/" ? "/" + child : parent + "/" + child
    }

    /// Whether `path` is `ancestor` or lies below it.
    public static func isSelfOrDescendant(_ path: String, of ancestor: String) -> Bool {
        if ancestor == "/" { return path.utf8.first == UInt8(ascii: "/") }
        guard path.utf8.starts(with: ancestor.utf8) else { return false }
        let rest = path.utf8.dropFirst(ancestor.utf8.count)
        return rest.isEmpty || rest.first == UInt8(ascii: "/")
    }

    static func printable(_ bytes: ArraySlice<UInt8>) -> String {
        String(decoding: bytes.prefix(256).map { (0x20 ..< 0x7f).contains($0) ? $0 : UInt8(ascii: "?") }, as: UTF8.self)
    }
}
