import SystemCalls

/// A system call on a TAP device, a namespace or the thread that enters one, as
/// ``TapError`` names it.
public enum TapOperation: String, Sendable, Hashable {
    /// open("/dev/net/tun").
    case openCloneDevice = "open /dev/net/tun"
    /// TUNSETIFF: create or attach to the device.
    case setInterface = "TUNSETIFF"
    /// TUNSETVNETHDRSZ.
    case setVnetHeaderSize = "TUNSETVNETHDRSZ"
    /// TUNSETOFFLOAD.
    case setOffload = "TUNSETOFFLOAD"
    /// TUNSETCARRIER.
    case setCarrier = "TUNSETCARRIER"
    /// socket(AF_INET, SOCK_DGRAM): the socket interface ioctls go through.
    case controlSocket = "socket(AF_INET, SOCK_DGRAM)"
    /// SIOCGIFMTU.
    case getMTU = "SIOCGIFMTU"
    /// SIOCSIFMTU.
    case setMTU = "SIOCSIFMTU"
    /// SIOCGIFFLAGS.
    case getFlags = "SIOCGIFFLAGS"
    /// SIOCSIFFLAGS.
    case setFlags = "SIOCSIFFLAGS"
    /// SIOCGIFHWADDR.
    case getHardwareAddress = "SIOCGIFHWADDR"
    /// SIOCSIFHWADDR.
    case setHardwareAddress = "SIOCSIFHWADDR"
    /// SIOCGIFINDEX.
    case getIndex = "SIOCGIFINDEX"
}

/// Errors of the Tap module. Each names what was wrong: the operation, the device or
/// namespace, and the errno the kernel gave.
public enum TapError: Error, Equatable, Sendable, CustomStringConvertible {
    /// An interface name that the kernel would refuse: empty, longer than IFNAMSIZ-1
    /// bytes, "." or "..", or holding '/', ':', whitespace or NUL (`why` says which).
    case invalidName(String, why: String)
    /// A system call on the device `device` failed with `errno`.
    case deviceCall(TapOperation, device: String, Errno)
    /// An operation on a device after ``TapDevice/close()``.
    case closed(device: String)
    /// A virtio-net header size TUNSETVNETHDRSZ cannot take: below struct virtio_net_hdr
    /// (10 bytes), which the kernel refuses.
    case vnetHeaderSize(Int)
    /// A namespace name that is not one file name under /var/run/netns.
    case invalidNamespaceName(String)
    /// The namespace file `path` could not be opened.
    case namespaceOpen(path: String, Errno)
    /// setns(CLONE_NEWNET) into the namespace at `path` failed.
    case namespaceEnter(path: String, Errno)
    /// The thread that enters a namespace could not be started.
    case threadStart(Errno)

    public var description: String {
        switch self {
        case let .invalidName(name, why):
            return "TAP device name \"\(name)\" is invalid: \(why)"
        case let .deviceCall(operation, device, errno):
            return "\(operation.rawValue) on TAP device \(device.isEmpty ? "(new)" : device) failed: \(errno)"
        case let .closed(device):
            return "TAP device \(device) is closed"
        case let .vnetHeaderSize(size):
            return "virtio-net header size \(size) is below the 10 bytes of struct virtio_net_hdr"
        case let .invalidNamespaceName(name):
            return "network namespace name \"\(name)\" is not a single file name under /var/run/netns"
        case let .namespaceOpen(path, errno):
            return "cannot open network namespace \(path): \(errno)"
        case let .namespaceEnter(path, errno):
            return "setns(CLONE_NEWNET) into \(path) failed: \(errno)"
        case let .threadStart(errno):
            return "cannot start the thread that enters a network namespace: \(errno)"
        }
    }
}
