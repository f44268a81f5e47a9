import CXenLocal
import Glibc
import SharedMemory
import XenPlatform

extension LocalHypervisor {
    /// Largest batch in one share, map or copy request.
    static let maxBatch = 4096

    func handle(_ kind: HypervisorMessage.Kind, payload: [UInt8], from c: HypervisorConnection) -> HandlerReply {
        var r = PayloadReader(payload)
        do {
            switch kind {
            case .hello: return try hello(&r, c)
            case .share: return try share(&r, c)
            case .endAccess: return try endAccess(&r, c)
            case .map: return try map(&r, c)
            case .unmap: return try unmap(&r, c)
            case .allocateBuffer: return try allocateBuffer(&r, c)
            case .freeBuffer: return try freeBuffer(&r, c)
            case .copy: return try copy(&r, c)
            case .eventAllocateUnbound: return try allocateUnbound(&r, c)
            case .eventBindInterdomain: return try bindInterdomain(&r, c)
            case .eventClose: return try eventClose(&r, c)
            case .domainCreate: return try domainCreate(&r, c)
            case .domainDestroy: return try domainDestroy(&r, c)
            case .domainList: return domainList(c)
            case .domainUsage: return domainUsage(c)
            }
        } catch {
            return .errno(EINVAL, "malformed \(kind) request: \(error)")
        }
    }

    func hello(_ r: inout PayloadReader, _ c: HypervisorConnection) throws(HypervisorProtocolError) -> HandlerReply {
        let version = try r.u32("version")
        guard version == HypervisorMessage.version else {
            return .errno(EPROTO, "protocol version \(version) not supported; this hypervisor speaks \(HypervisorMessage.version)")
        }
        guard let d = domains[c.domain] else { return .errno(ESRCH, "domain \(c.domain) is gone") }
        var w = PayloadWriter()
        w.u16(d.id)
        w.u16(0)
        w.u32(UInt32(d.memory.poolPages))
        w.u32(d.memory.grants.count)
        return HandlerReply(payload: w.bytes, fds: [d.memory.pool.fileDescriptor!, d.memory.tableMemory.fileDescriptor!])
    }

    // MARK: Granting side

    func share(_ r: inout PayloadReader, _ c: HypervisorConnection) throws(HypervisorProtocolError) -> HandlerReply {
        let grantee = try r.u16("grantee")
        let writable = try r.u8("writable") != 0
        _ = try r.u8("pad")
        let count = Int(try r.u32("count"))
        guard (1...Self.maxBatch).contains(count) else { return .errno(EINVAL, "share of \(count) pages; 1...\(Self.maxBatch) allowed") }
        guard let d = domains[c.domain] else { return .errno(ESRCH, "domain \(c.domain) is gone") }
        let shared: (first: UInt32, refs: [GrantRef])
        do { shared = try d.memory.share(count: count, with: grantee, writable: writable) } catch {
            return .platform(error)
        }
        var w = PayloadWriter()
        w.u32(shared.first)
        for ref in shared.refs { w.u32(ref) }
        return HandlerReply(payload: w.bytes)
    }

    func endAccess(_ r: inout PayloadReader, _ c: HypervisorConnection) throws(HypervisorProtocolError) -> HandlerReply {
        let first = try r.u32("first-frame")
        guard let d = domains[c.domain], d.memory.shares[first] != nil else {
            return .errno(ENOENT, "no shared pages start at frame \(first)")
        }
        do { try d.memory.endAccess(first: first) } catch {
            if case let .grantBusy(ref) = error {
                var w = PayloadWriter()
                w.u32(ref)
                return HandlerReply(status: EBUSY, payload: w.bytes)
            }
            return .platform(error)
        }
        return HandlerReply()
    }

    // MARK: Mapping side

    func map(_ r: inout PayloadReader, _ c: HypervisorConnection) throws(HypervisorProtocolError) -> HandlerReply {
        let granter = try r.u16("domain")
        let writable = try r.u8("writable") != 0
        _ = try r.u8("pad")
        let count = try r.count("count", itemSize: 4, limit: Self.maxBatch)
        var refs: [GrantRef] = []
        for _ in 0..<count { refs.append(try r.u32("ref")) }
        guard count > 0 else { return .errno(EINVAL, "map of zero refs") }
        // Mapping hands over the granter's whole pool descriptor, which only the privileged
        // domain may hold (on Xen, dom0 can map any guest page anyway).
        guard c.domain == 0 else {
            return .grant(.permissionDenied, ref: refs[0], "only dom0 may map grants on the local hypervisor; use grant copy")
        }
        guard let d = domains[granter] else { return .grant(.badDomain, ref: refs[0], "no domain \(granter)") }
        let frames: [UInt32]
        do { frames = try d.memory.acquire(refs, for: c.domain, writable: writable) } catch {
            return .platform(error)
        }
        let handle = nextHandle
        nextHandle += 1
        c.mappings[handle] = (granter, refs, writable)
        var w = PayloadWriter()
        w.u64(handle)
        for f in frames { w.u32(f) }
        return HandlerReply(payload: w.bytes, fds: [d.memory.pool.fileDescriptor!])
    }

    func unmap(_ r: inout PayloadReader, _ c: HypervisorConnection) throws(HypervisorProtocolError) -> HandlerReply {
        let handle = try r.u64("handle")
        guard let m = c.mappings.removeValue(forKey: handle) else {
            return .grant(.badHandle, ref: 0, "no mapping with handle \(handle)")
        }
        releasePins(domain: m.domain, refs: m.refs, writable: m.writable)
        return HandlerReply()
    }

    /// Drops one pin per ref of `domain`, if the domain still exists.
    func releasePins(domain: DomainID, refs: [GrantRef], writable: Bool) {
        domains[domain]?.memory.releasePins(refs, writable: writable)
    }

    // MARK: Copy

    func allocateBuffer(_ r: inout PayloadReader, _ c: HypervisorConnection) throws(HypervisorProtocolError) -> HandlerReply {
        let pages = Int(try r.u32("pages"))
        guard (1...Self.maxBatch).contains(pages) else { return .errno(EINVAL, "buffer of \(pages) pages; 1...\(Self.maxBatch) allowed") }
        guard let d = domains[c.domain] else { return .errno(ESRCH, "domain \(c.domain) is gone") }
        let first: UInt32
        do { first = try d.memory.allocateBuffer(pages: pages) } catch { return .platform(error) }
        c.buffers[first] = pages
        var w = PayloadWriter()
        w.u32(first)
        return HandlerReply(payload: w.bytes)
    }

    func freeBuffer(_ r: inout PayloadReader, _ c: HypervisorConnection) throws(HypervisorProtocolError) -> HandlerReply {
        let id = try r.u32("buffer")
        guard c.buffers.removeValue(forKey: id) != nil else {
            return .errno(ENOENT, "no copy buffer \(id) on this connection")
        }
        domains[c.domain]?.memory.freeBuffer(id)
        return HandlerReply()
    }

    /// Bytes one copy segment takes on the wire.
    static let copySegmentSize = 28

    func copy(_ r: inout PayloadReader, _ c: HypervisorConnection) throws(HypervisorProtocolError) -> HandlerReply {
        let count = try r.count("count", itemSize: Self.copySegmentSize, limit: Self.maxBatch)
        var w = PayloadWriter()
        for _ in 0..<count {
            let length = Int(try r.u16("copy.length"))
            _ = try r.u16("copy.pad")
            let source = try GrantCopyEndpoint.decode(&r)
            let destination = try GrantCopyEndpoint.decode(&r)
            w.i16(copyOne(source: source, destination: destination, length: length, for: c).rawValue)
        }
        return HandlerReply(payload: w.bytes)
    }

    /// One grant copy with Xen's checks. A local buffer must belong to this connection.
    func copyOne(source: GrantCopyEndpoint, destination: GrantCopyEndpoint, length: Int, for c: HypervisorConnection) -> GrantStatus {
        for end in [source, destination] {
            if case let .local(buffer, _) = end, c.buffers[buffer] == nil { return .badVirtualAddress }
        }
        let segment = GrantCopySegment(source: source, destination: destination, length: UInt16(clamping: length))
        return GrantDomain.copy(segment, by: c.domain) { self.domains[$0]?.memory }
    }
}
