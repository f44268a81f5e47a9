/// Where the server listens: a Unix socket path or a numeric TCP address.
public enum NBDAddress: Equatable, Sendable, CustomStringConvertible {
    /// A Unix stream socket at this path.
    case unix(path: String)
    /// A TCP socket; `host` is a numeric IPv4 or IPv6 address, port 0 picks a free port.
    case tcp(host: String, port: UInt16)

    /// The host used when an address names only a port: loopback, so nothing is exported
    /// beyond this machine unless asked for.
    public static let defaultHost = "127.0.0.1"

    /// Parses `unix:PATH`, `tcp:PORT`, `tcp:HOST:PORT` or `tcp:[IPV6]:PORT`.
    public init(parsing text: String) throws(NBDError) {
        if text.hasPrefix("unix:") {
            let path = String(text.dropFirst(5))
            guard !path.isEmpty else { throw .invalidAddress(text) }
            self = .unix(path: path)
            return
        }
        guard text.hasPrefix("tcp:") else { throw .invalidAddress(text) }
        let rest = text.dropFirst(4)
        let host: Substring
        let portText: Substring
        if rest.hasPrefix("[") {
            guard let close = rest.firstIndex(of: "]"), rest[rest.index(after: close)...].hasPrefix(":") else {
                throw .invalidAddress(text)
            }
            host = rest[rest.index(after: rest.startIndex)..<close]
            portText = rest[rest.index(close, offsetBy: 2)...]
        } else if let colon = rest.lastIndex(of: ":") {
            host = rest[..<colon]
            portText = rest[rest.index(after: colon)...]
        } else {
            host = Substring(Self.defaultHost)
            portText = rest
        }
        guard !host.isEmpty, let port = UInt16(portText) else { throw .invalidAddress(text) }
        self = .tcp(host: String(host), port: port)
    }

    public var description: String {
        switch self {
        case let .unix(path): "unix:\(path)"
        case let .tcp(host, port): host.contains(":") ? "tcp:[\(host)]:\(port)" : "tcp:\(host):\(port)"
        }
    }

    /// The libnbd URI for this address, for clients such as nbdinfo and nbdcopy.
    public var uri: String {
        switch self {
        case let .unix(path): "nbd+unix:///?socket=\(path)"
        case let .tcp(host, port): host.contains(":") ? "nbd://[\(host)]:\(port)/" : "nbd://\(host):\(port)/"
        }
    }
}
