import XenPlatform

/// A failure an ``InProcessHypervisor`` injects into the next matching operation, so a
/// device test can walk the error paths a real hypervisor takes only under load or
/// misconfiguration. Each fault fires once and is then gone.
public enum InProcessFault: Sendable, Equatable, CustomStringConvertible {
    /// The next map that names `ref` of `granter` fails with `status`, changing nothing,
    /// as GNTTABOP_map_grant_ref would (grant_table.h: GNTST_*).
    case map(granter: DomainID, ref: GrantRef, status: GrantStatus)
    /// The next copy segment that names `ref` of `granter` ends with `status`; the other
    /// segments of the batch still run (grant_table.h: GNTTABOP_copy).
    case copy(granter: DomainID, ref: GrantRef, status: GrantStatus)
    /// The next notify on `port` of `domain` fails with `errno` (event_channel.h: EVTCHNOP_send).
    case notify(domain: DomainID, port: EventPort, errno: Int32)
    /// The next bind by `domain` to any port fails with `errno`
    /// (event_channel.h: EVTCHNOP_bind_interdomain).
    case bind(domain: DomainID, errno: Int32)
    /// The next share by `domain` throws `error` (out of grant entries, out of memory).
    case share(domain: DomainID, error: PlatformError)
    /// The next unmap of a mapping holding `ref` of `granter` fails with `status`,
    /// changing nothing: the page stays mapped and the grant busy, as after a failed
    /// GNTTABOP_unmap_grant_ref (grant_table.h), so a later unmap can still succeed.
    case unmap(granter: DomainID, ref: GrantRef, status: GrantStatus)

    public var description: String {
        switch self {
        case let .map(granter, ref, status): return "map of d\(granter) ref \(ref) fails with \(status)"
        case let .copy(granter, ref, status): return "copy of d\(granter) ref \(ref) fails with \(status)"
        case let .notify(domain, port, errno): return "notify on d\(domain) port \(port) fails with errno \(errno)"
        case let .bind(domain, errno): return "bind by d\(domain) fails with errno \(errno)"
        case let .share(domain, error): return "share by d\(domain) fails: \(error)"
        case let .unmap(granter, ref, status): return "unmap of d\(granter) ref \(ref) fails with \(status)"
        }
    }
}
