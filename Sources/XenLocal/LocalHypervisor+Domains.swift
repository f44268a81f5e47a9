import CXenLocal
import Foundation
import XenPlatform
import XenStore

extension LocalHypervisor {
    /// Largest domain name accepted.
    static let maxNameLength = 64

    /// Creates a domain with its memory, grant table and sockets, and introduces it to
    /// xenstore (@introduceDomain). Dom0 only.
    func domainCreate(_ r: inout PayloadReader, _ c: HypervisorConnection) throws(HypervisorProtocolError) -> HandlerReply {
        guard c.domain == 0 else { return .errno(EPERM, "only dom0 may create domains") }
        let name = String(decoding: r.rest(), as: UTF8.self)
        guard !name.isEmpty, name.utf8.count <= Self.maxNameLength,
              name.unicodeScalars.allSatisfy({ CharacterSet.alphanumerics.contains($0) || "-_.".unicodeScalars.contains($0) }),
              name != "Domain-0", !name.hasPrefix(".")
        else {
            return .errno(EINVAL, "bad domain name '\(name)': 1-\(Self.maxNameLength) letters, digits, '-', '_' or '.'")
        }
        guard !domains.values.contains(where: { $0.name == name }) else { return .errno(EEXIST, "domain '\(name)' exists") }
        guard let id = (1..<DomainID(0x7FF0)).first(where: { domains[$0] == nil }) else { return .errno(ENOSPC, "no free domain id") }
        let d: LocalDomain
        do {
            d = try LocalDomain(id: id, name: name, poolPages: configuration.poolPages, grantEntries: configuration.grantEntries)
        } catch {
            return .errno(ENOMEM, "\(error)")
        }
        let dir = configuration.stateDirectory + "/domains/" + name
        do { try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true) } catch {
            return .errno(EACCES, "mkdir \(dir): \(error)")
        }
        let l = xl_listen_unix(dir + "/hypervisor.socket", 64)
        guard l >= 0 else { return .errno(-l, "listen on \(dir)/hypervisor.socket") }
        _ = xl_set_nonblocking(l)
        d.listener = l
        d.directory = dir
        do {
            let path = Self.xenStorePath(stateDirectory: configuration.stateDirectory, domain: name)
            try xenstore.listen(path: path, identity: .domain(id))
        } catch {
            closeListener(d)
            return .errno(EIO, "xenstore socket for \(name): \(error)")
        }
        guard let token = register(l, events: Int16(POLLIN), as: .listener(fd: l, domain: id)) else {
            xenstore.detach(domid: id)
            closeListener(d)
            return .errno(EIO, "epoll_ctl add of \(name)'s hypervisor socket")
        }
        d.listenerToken = token
        domains[id] = d
        runOnXenStore { engine in _ = engine.introduceDomain(id) }
        logger.info("domain created", metadata: ["name": "\(name)", "domid": "\(id)"])
        var w = PayloadWriter()
        w.u16(id)
        return HandlerReply(payload: w.bytes)
    }

    /// Destroys a domain: its processes' connections, ports, grants, memory and xenstore
    /// nodes go, and @releaseDomain fires. Dom0 only.
    func domainDestroy(_ r: inout PayloadReader, _ c: HypervisorConnection) throws(HypervisorProtocolError) -> HandlerReply {
        guard c.domain == 0 else { return .errno(EPERM, "only dom0 may destroy domains") }
        let id = try r.u16("domid")
        guard id != 0, let d = domains[id] else { return .errno(ESRCH, "no domain \(id)") }
        for other in Array(connections.values) where other.domain == id {
            disconnect(other, reason: "domain destroyed")
        }
        for port in Array(d.ports.keys) { closePort(domain: id, port: port) }
        // Mappings of its pages held by dom0 processes stay valid until they unmap (the
        // memfd lives while mapped); their pins simply have nothing left to clear.
        closeListener(d)
        domains[id] = nil
        xenstore.detach(domid: id)
        runOnXenStore { engine in
            engine.removeTree("/local/domain/\(id)")
            _ = engine.releaseDomain(id)
        }
        logger.info("domain destroyed", metadata: ["name": "\(d.name)", "domid": "\(id)"])
        return HandlerReply()
    }

    func domainList(_ c: HypervisorConnection) -> HandlerReply {
        var w = PayloadWriter()
        for d in domains.values.sorted(by: { $0.id < $1.id }) {
            w.u16(d.id)
            w.u16(UInt16(d.name.utf8.count))
            w.raw(Array(d.name.utf8))
        }
        return HandlerReply(payload: w.bytes)
    }

    /// What each domain holds right now (dom0 only): the resource counts a leak check or an
    /// operator compares before and after a device comes and goes.
    func domainUsage(_ c: HypervisorConnection) -> HandlerReply {
        guard c.domain == 0 else { return .errno(EPERM, "only dom0 may read domain usage") }
        var w = PayloadWriter()
        for d in domains.values.sorted(by: { $0.id < $1.id }) {
            let own = connections.values.filter { $0.domain == d.id }
            DomainUsage(
                domain: d.id,
                connections: own.count,
                ports: d.ports.count,
                grantedPages: d.memory.shares.values.reduce(0) { $0 + $1.count },
                pinnedGrants: d.memory.pins.count,
                mappingsHeld: own.reduce(0) { $0 + $1.mappings.count },
                copyBufferPages: d.memory.buffers.values.reduce(0, +)
            ).encode(into: &w)
        }
        return HandlerReply(payload: w.bytes)
    }

    /// Runs `body` on the xenstored thread and waits for it (control path only). No Swift
    /// concurrency here: this thread must not depend on the cooperative pool, which the
    /// hypervisor's own clients may be blocking.
    func runOnXenStore(_ body: @escaping @Sendable (XenStoreEngine) -> Void) {
        xenstore.withEngineBlocking(body)
    }
}
