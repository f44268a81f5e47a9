/// Why a ``BackendDaemon`` stopped serving by itself, not because ``BackendDaemon/stop()``
/// asked it to.
public enum BackendDaemonError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The xenstore connection closed while the daemon watched `directory`: xenstored, or
    /// the local hypervisor that serves it, went away. Every device was released first.
    case hypervisorLost(directory: String)

    public var description: String {
        switch self {
        case let .hypervisorLost(directory):
            return "lost the hypervisor: its xenstore connection closed while serving \(directory); every device was released"
        }
    }
}
