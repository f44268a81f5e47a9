import XenPlatform

/// What one local domain holds at a moment, as the hypervisor counts it: the figures a
/// leak check compares before and after a device comes and goes, and that
/// `xensplit domain list --usage` prints. Wire form: six little-endian u32 after a u16
/// domid and a u16 pad (Protocols/local-hypervisor.md, message 15).
public struct DomainUsage: Equatable, Sendable, CustomStringConvertible {
    public var domain: DomainID
    /// Hypervisor connections open from the domain's processes.
    public var connections: Int
    /// Event-channel ports the domain has (unbound or bound).
    public var ports: Int
    /// Pages of the domain's memory granted out and not yet ended.
    public var grantedPages: Int
    /// The domain's grants some mapper holds a mapping of.
    public var pinnedGrants: Int
    /// Grant mappings the domain's processes hold (of other domains' pages).
    public var mappingsHeld: Int
    /// Pages of the domain's pool registered as grant-copy buffers.
    public var copyBufferPages: Int

    public init(domain: DomainID, connections: Int, ports: Int, grantedPages: Int, pinnedGrants: Int,
                mappingsHeld: Int, copyBufferPages: Int) {
        self.domain = domain
        self.connections = connections
        self.ports = ports
        self.grantedPages = grantedPages
        self.pinnedGrants = pinnedGrants
        self.mappingsHeld = mappingsHeld
        self.copyBufferPages = copyBufferPages
    }

    func encode(into w: inout PayloadWriter) {
        w.u16(domain)
        w.u16(0)
        for value in [connections, ports, grantedPages, pinnedGrants, mappingsHeld, copyBufferPages] {
            w.u32(UInt32(clamping: value))
        }
    }

    static func decode(_ r: inout PayloadReader) throws(HypervisorProtocolError) -> DomainUsage {
        let domain = try r.u16("domid")
        _ = try r.u16("pad")
        return DomainUsage(domain: domain, connections: Int(try r.u32("connections")), ports: Int(try r.u32("ports")),
                           grantedPages: Int(try r.u32("granted-pages")), pinnedGrants: Int(try r.u32("pinned-grants")),
                           mappingsHeld: Int(try r.u32("mappings-held")),
                           copyBufferPages: Int(try r.u32("copy-buffer-pages")))
    }

    public var description: String {
        "connections=\(connections) ports=\(ports) granted-pages=\(grantedPages) pinned-grants=\(pinnedGrants) "
            + "mappings-held=\(mappingsHeld) copy-buffer-pages=\(copyBufferPages)"
    }
}
