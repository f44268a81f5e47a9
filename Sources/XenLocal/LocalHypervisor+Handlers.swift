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
        w.u32(UInt32(d.poolPages))
        w.u32(d.grants.count)
        return HandlerReply(payload: w.bytes, fds: [d.pool.fileDescriptor!, d.grantTableMemory.fileDescriptor!])
    }

    // MARK: Granting side

    func share(_ r: inout PayloadReader, _ c: HypervisorConnection) throws(HypervisorProtocolError) -> HandlerReply {
        let grantee = try r.u16("grantee")
        let writable = try r.u8("writable") != 0
        _ = try r.u8("pad")
        let count = Int(try r.u32("count"))
        guard (1...Self.maxBatch).contains(count) else { return .errno(EINVAL, "share of \(count) pages; 1...\(Self.maxBatch) allowed") }
        guard let d = domains[c.domain] else { return .errno(ESRCH, "domain \(c.domain) is gone") }
        guard let first = d.frames.allocate(count) else { return .errno(ENOMEM, "d\(d.id) has no \(count) free consecutive pages") }
        guard let refs = d.refs.allocateScattered(count) else {
            d.frames.free(first, count: count)
            return .errno(ENOSPC, "d\(d.id) has no \(count) free grant entries")
        }
        d.pool.view.fill(0, at: first * pageSize, length: count * pageSize)
        for (i, ref) in refs.enumerated() {
            d.grants.grant(GrantRef(ref), to: grantee, frame: UInt32(first + i), readOnly: !writable)
        }
        d.shares[UInt32(first)] = refs.map { GrantRef($0) }
        var w = PayloadWriter()
        w.u32(UInt32(first))
        for ref in refs { w.u32(UInt32(ref)) }
        return HandlerReply(payload: w.bytes)
    }

    func endAccess(_ r: inout PayloadReader, _ c: HypervisorConnection) throws(HypervisorProtocolError) -> HandlerReply {
        let first = try r.u32("first-frame")
        guard let d = domains[c.domain], let refs = d.shares[first] else {
            return .errno(ENOENT, "no shared pages start at frame \(first)")
        }
        // All or nothing: refuse before touching any entry if one is still mapped.
        if let busy = refs.first(where: { !d.grants.flags($0).intersection([.reading, .writing]).isEmpty }) {
            var w = PayloadWriter()
            w.u32(busy)
            return HandlerReply(status: EBUSY, payload: w.bytes)
        }
        for ref in refs where !d.grants.endAccess(ref) {
            // The only writer of busy bits is this thread, so this cannot happen unless the
            // domain scribbled on its own table; its pages stay allocated.
            return .errno(EBUSY, "grant \(ref) became busy while ending access")
        }
        for ref in refs { d.refs.free(Int(ref)) }
        d.frames.free(Int(first), count: refs.count)
        d.shares[first] = nil
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
        var frames: [UInt32] = []
        for (i, ref) in refs.enumerated() {
            do {
                let frame = try d.grants.acquire(ref, grantee: c.domain, writable: writable, granter: granter)
                guard Int(frame) < d.poolPages else {
                    d.grants.clearBusy(ref, reading: (d.pins[ref]?.readers ?? 0) == 0, writing: writable && (d.pins[ref]?.writers ?? 0) == 0)
                    releasePins(domain: granter, refs: Array(refs[0..<i]), writable: writable)
                    return .grant(.badPage, ref: ref, "frame \(frame) is outside d\(granter)'s \(d.poolPages) pages")
                }
                pin(d, ref, writable: writable)
                frames.append(frame)
            } catch {
                releasePins(domain: granter, refs: Array(refs[0..<i]), writable: writable)
                if case let .grant(status, _, _, reason) = error { return .grant(status, ref: ref, reason) }
                return .grant(.generalError, ref: ref, "\(error)")
            }
        }
        let handle = nextHandle
        nextHandle += 1
        c.mappings[handle] = (granter, refs, writable)
        var w = PayloadWriter()
        w.u64(handle)
        for f in frames { w.u32(f) }
        return HandlerReply(payload: w.bytes, fds: [d.pool.fileDescriptor!])
    }

    func unmap(_ r: inout PayloadReader, _ c: HypervisorConnection) throws(HypervisorProtocolError) -> HandlerReply {
        let handle = try r.u64("handle")
        guard let m = c.mappings.removeValue(forKey: handle) else {
            return .grant(.badHandle, ref: 0, "no mapping with handle \(handle)")
        }
        releasePins(domain: m.domain, refs: m.refs, writable: m.writable)
        return HandlerReply()
    }

    func pin(_ d: LocalDomain, _ ref: GrantRef, writable: Bool) {
        var p = d.pins[ref] ?? (0, 0)
        p.readers += 1
        if writable { p.writers += 1 }
        d.pins[ref] = p
    }

    /// Drops one pin per ref and clears the busy bits no mapping needs any more.
    func releasePins(domain: DomainID, refs: [GrantRef], writable: Bool) {
        guard let d = domains[domain] else { return }
        for ref in refs {
            guard var p = d.pins[ref] else { continue }
            p.readers -= 1
            if writable { p.writers -= 1 }
            d.grants.clearBusy(ref, reading: p.readers == 0, writing: p.writers == 0)
            d.pins[ref] = p.readers == 0 ? nil : p
        }
    }

    // MARK: Copy

    func allocateBuffer(_ r: inout PayloadReader, _ c: HypervisorConnection) throws(HypervisorProtocolError) -> HandlerReply {
        let pages = Int(try r.u32("pages"))
        guard (1...Self.maxBatch).contains(pages) else { return .errno(EINVAL, "buffer of \(pages) pages; 1...\(Self.maxBatch) allowed") }
        guard let d = domains[c.domain] else { return .errno(ESRCH, "domain \(c.domain) is gone") }
        guard let first = d.frames.allocate(pages) else { return .errno(ENOMEM, "d\(d.id) has no \(pages) free consecutive pages") }
        d.buffers[UInt32(first)] = pages
        c.buffers[UInt32(first)] = pages
        var w = PayloadWriter()
        w.u32(UInt32(first))
        return HandlerReply(payload: w.bytes)
    }

    func freeBuffer(_ r: inout PayloadReader, _ c: HypervisorConnection) throws(HypervisorProtocolError) -> HandlerReply {
        let id = try r.u32("buffer")
        guard let pages = c.buffers.removeValue(forKey: id), let d = domains[c.domain] else {
            return .errno(ENOENT, "no copy buffer \(id) on this connection")
        }
        d.buffers[id] = nil
        d.frames.free(Int(id), count: pages)
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

    /// One grant copy with Xen's checks; the grant ends are pinned only for the copy.
    func copyOne(source: GrantCopyEndpoint, destination: GrantCopyEndpoint, length: Int, for c: HypervisorConnection) -> GrantStatus {
        var pinned: [(LocalDomain, GrantRef, Bool)] = []
        defer {
            for (d, ref, wrote) in pinned {
                let p = d.pins[ref]
                d.grants.clearBusy(ref, reading: p == nil, writing: wrote && (p?.writers ?? 0) == 0)
            }
        }
        func resolve(_ e: GrantCopyEndpoint, writing: Bool) -> Result<SharedView, GrantStatus> {
            switch e {
            case let .grant(domain, ref, offset):
                guard let d = domains[domain] else { return .failure(.badDomain) }
                guard Int(offset) + length <= pageSize else { return .failure(.badCopyArgument) }
                let frame: UInt32
                do { frame = try d.grants.acquire(ref, grantee: c.domain, writable: writing, granter: domain) } catch {
                    if case let .grant(status, _, _, _) = error { return .failure(status) }
                    return .failure(.generalError)
                }
                pinned.append((d, ref, writing))
                guard let page = d.pages(at: frame, count: 1) else { return .failure(.badPage) }
                return (try? page.slice(offset: Int(offset), length: length)).map { .success($0) } ?? .failure(.badCopyArgument)
            case let .local(buffer, offset):
                guard let pages = c.buffers[buffer], let d = domains[c.domain],
                      let view = d.pages(at: buffer, count: pages) else { return .failure(.badVirtualAddress) }
                guard let s = try? view.slice(offset: offset, length: length) else { return .failure(.badCopyArgument) }
                return .success(s)
            }
        }
        guard length > 0, length <= pageSize else { return .badCopyArgument }
        let src: SharedView
        switch resolve(source, writing: false) {
        case let .success(v): src = v
        case let .failure(s): return s
        }
        let dst: SharedView
        switch resolve(destination, writing: true) {
        case let .success(v): dst = v
        case let .failure(s): return s
        }
        SharedView.copy(from: src, at: 0, to: dst, at: 0, length: length)
        return .okay
    }
}
