import CXenLocal
import Glibc
import SharedMemory
import Synchronization
import XenPlatform
import XenStore

/// The platform of a process joined to the local hypervisor as one domain: dom0 through
/// `DIR/hypervisor.socket`, or domain NAME through `DIR/domains/NAME/hypervisor.socket`.
public final class LocalPlatform: Platform, GrantTable, GrantMapper, @unchecked Sendable {
    // SAFETY (@unchecked): immutable after init except `buffers`, guarded by its Mutex.
    public let domainID: DomainID
    /// The state directory of the hypervisor.
    public let stateDirectory: String
    /// The domain's name (nil for dom0).
    public let domainName: String?
    let client: HypervisorClient
    let poolFD: Int32
    let poolPages: Int
    private let buffers = Mutex<[UInt32: CopyBuffer]>([:])

    /// Joins the hypervisor at `stateDirectory` as dom0 (`domain` nil) or as domain `domain`.
    public init(stateDirectory: String, domain: String? = nil) throws(PlatformError) {
        self.stateDirectory = stateDirectory
        self.domainName = domain
        let path = domain.map { LocalHypervisor.socketPath(stateDirectory: stateDirectory, domain: $0) }
            ?? LocalHypervisor.socketPath(stateDirectory: stateDirectory)
        client = try HypervisorClient(path: path)
        var w = PayloadWriter()
        w.u32(HypervisorMessage.version)
        let reply = try client.call(.hello, w.bytes)
        defer { for fd in reply.fds.dropFirst() { Glibc.close(fd) } }
        try reply.check("hello")
        var r = PayloadReader(reply.payload)
        do {
            domainID = try r.u16("domid")
            _ = try r.u16("pad")
            poolPages = Int(try r.u32("pool-pages"))
        } catch { throw .hypervisor("hello reply: \(error)") }
        guard let pool = reply.fds.first else { throw .hypervisor("hello reply carried no pool descriptor") }
        poolFD = pool
    }

    deinit { Glibc.close(poolFD) }

    public var grantTable: any GrantTable { self }
    public var grantMapper: any GrantMapper { self }

    public func openEventChannel() throws(PlatformError) -> any EventChannel {
        try LocalEventChannel(client: client)
    }

    /// The xenstore socket of this domain.
    public var xenStoreSocketPath: String {
        LocalHypervisor.xenStorePath(stateDirectory: stateDirectory, domain: domainName)
    }

    public func connectXenStore() throws(PlatformError) -> XenStoreClient {
        do { return try XenStoreClient(socketPath: xenStoreSocketPath) } catch {
            throw .hypervisor("xenstore at \(xenStoreSocketPath): \(error)")
        }
    }

    func mapOwn(frame: UInt32, pages: Int, populate: Bool = false) throws(PlatformError) -> MemoryRegion {
        do {
            return try MemoryRegion.map(fileDescriptor: poolFD, offset: Int(frame) * pageSize, length: pages * pageSize,
                                        populate: populate)
        } catch {
            throw .system("mmap of own pool frames \(frame)+\(pages): \(error)", errno: ENOMEM)
        }
    }

    // MARK: GrantTable

    public func share(pages count: Int, with grantee: DomainID, writable: Bool) throws(PlatformError) -> SharedPages {
        guard count > 0 else { throw .invalidArgument("share of \(count) pages") }
        var w = PayloadWriter()
        w.u16(grantee)
        w.u8(writable ? 1 : 0)
        w.u8(0)
        w.u32(UInt32(count))
        let reply = try client.call(.share, w.bytes)
        try reply.check("share \(count) pages with d\(grantee)")
        var r = PayloadReader(reply.payload)
        let first: UInt32
        var refs: [GrantRef] = []
        do {
            first = try r.u32("first-frame")
            for _ in 0..<count { refs.append(try r.u32("ref")) }
        } catch { throw .hypervisor("share reply: \(error)") }
        let region = try mapOwn(frame: first, pages: count)
        return SharedPages(region: region, refs: refs, grantee: grantee, writable: writable, token: UInt64(first))
    }

    public func endAccess(_ pages: SharedPages) throws(PlatformError) {
        var w = PayloadWriter()
        w.u32(UInt32(pages.token))
        let reply = try client.call(.endAccess, w.bytes)
        if reply.status == EBUSY {
            var r = PayloadReader(reply.payload)
            throw .grantBusy(ref: (try? r.u32("ref")) ?? 0)
        }
        try reply.check("end access")
        pages.region.close()
    }

    // MARK: GrantMapper

    public func map(_ refs: [GrantRef], from domain: DomainID, writable: Bool) throws(PlatformError) -> GrantMapping {
        guard !refs.isEmpty else { throw .invalidArgument("map of zero refs") }
        var w = PayloadWriter()
        w.u16(domain)
        w.u8(writable ? 1 : 0)
        w.u8(0)
        w.u32(UInt32(refs.count))
        for ref in refs { w.u32(ref) }
        let reply = try client.call(.map, w.bytes)
        defer { for fd in reply.fds { Glibc.close(fd) } }
        do { try reply.check("map") } catch {
            if case let .grant(status, ref, _, reason) = error { throw .grant(status, ref: ref, domain: domain, reason: reason) }
            throw error
        }
        var r = PayloadReader(reply.payload)
        let handle: UInt64
        var frames: [UInt32] = []
        do {
            handle = try r.u64("handle")
            for _ in refs { frames.append(try r.u32("frame")) }
        } catch { throw .hypervisor("map reply: \(error)") }
        guard let fd = reply.fds.first else { throw .hypervisor("map reply carried no descriptor") }
        let region: MemoryRegion
        do { region = try MemoryRegion.mapFrames(fileDescriptor: fd, frames: frames, writable: writable) } catch {
            // Give the pins back: the mapping never existed for us.
            var w = PayloadWriter()
            w.u64(handle)
            _ = try? client.call(.unmap, w.bytes)
            throw .system("mapping d\(domain)'s frames: \(error)", errno: ENOMEM)
        }
        return GrantMapping(region: region, domain: domain, refs: refs, writable: writable, handle: handle)
    }

    public func unmap(_ mapping: GrantMapping) throws(PlatformError) {
        // Our view goes first, so nothing here can touch the page once its busy bits clear.
        mapping.region.close()
        var w = PayloadWriter()
        w.u64(mapping.handle)
        let reply = try client.call(.unmap, w.bytes)
        do { try reply.check("unmap") } catch {
            if case let .grant(status, _, _, reason) = error {
                throw .grant(status, ref: mapping.refs.first ?? 0, domain: mapping.domain, reason: reason)
            }
            throw error
        }
    }

    public func registerCopyBuffer(pages: Int) throws(PlatformError) -> CopyBuffer {
        guard pages > 0 else { throw .invalidArgument("copy buffer of \(pages) pages") }
        var w = PayloadWriter()
        w.u32(UInt32(pages))
        let reply = try client.call(.allocateBuffer, w.bytes)
        try reply.check("copy buffer of \(pages) pages")
        var r = PayloadReader(reply.payload)
        let id: UInt32
        do { id = try r.u32("buffer") } catch { throw .hypervisor("buffer reply: \(error)") }
        // Faulted in now: a copy buffer is a queue's working memory for as long as it is
        // connected, so the backend's memory is what it will be from the connect on
        // (otherwise RSS creeps for minutes as requests first touch each page).
        let buffer = CopyBuffer(region: try mapOwn(frame: id, pages: pages, populate: true), id: id)
        buffers.withLock { $0[id] = buffer }
        return buffer
    }

    public func unregisterCopyBuffer(_ buffer: CopyBuffer) throws(PlatformError) {
        guard buffers.withLock({ $0.removeValue(forKey: buffer.id) }) != nil else {
            throw .invalidArgument("copy buffer \(buffer.id) is not registered here")
        }
        buffer.region.close()
        var w = PayloadWriter()
        w.u32(buffer.id)
        try client.call(.freeBuffer, w.bytes).check("free copy buffer \(buffer.id)")
    }

    public func copy(_ segments: UnsafeMutableBufferPointer<GrantCopySegment>) throws(PlatformError) {
        guard !segments.isEmpty else { return }
        var w = PayloadWriter()
        w.u32(UInt32(segments.count))
        for s in segments {
            w.u16(s.length)
            w.u16(0)
            s.source.encode(into: &w)
            s.destination.encode(into: &w)
        }
        let reply = try client.call(.copy, w.bytes)
        try reply.check("grant copy")
        var r = PayloadReader(reply.payload)
        for i in segments.indices {
            let raw: Int16
            do { raw = try r.i16("status") } catch { throw .hypervisor("copy reply: \(error)") }
            segments[i].status = GrantStatus(rawValue: raw) ?? .generalError
        }
    }

    // MARK: Toolstack (dom0)

    /// Creates a domain; returns its id.
    public func createDomain(name: String) throws(PlatformError) -> DomainID {
        let reply = try client.call(.domainCreate, Array(name.utf8))
        try reply.check("create domain '\(name)'")
        var r = PayloadReader(reply.payload)
        do { return try r.u16("domid") } catch { throw .hypervisor("create reply: \(error)") }
    }

    /// Destroys a domain by id.
    public func destroyDomain(_ id: DomainID) throws(PlatformError) {
        var w = PayloadWriter()
        w.u16(id)
        try client.call(.domainDestroy, w.bytes).check("destroy domain \(id)")
    }

    /// Every domain, dom0 first.
    public func listDomains() throws(PlatformError) -> [(id: DomainID, name: String)] {
        let reply = try client.call(.domainList)
        try reply.check("list domains")
        var r = PayloadReader(reply.payload)
        var out: [(DomainID, String)] = []
        do {
            while r.remaining > 0 {
                let id = try r.u16("domid")
                let n = Int(try r.u16("name-length"))
                var name: [UInt8] = []
                for _ in 0..<n { name.append(try r.u8("name")) }
                out.append((id, String(decoding: name, as: UTF8.self)))
            }
        } catch { throw .hypervisor("list reply: \(error)") }
        return out
    }

    /// What every domain holds right now (dom0 only), by domain id.
    public func domainUsage() throws(PlatformError) -> [DomainID: DomainUsage] {
        let reply = try client.call(.domainUsage)
        try reply.check("domain usage")
        var r = PayloadReader(reply.payload)
        var out: [DomainID: DomainUsage] = [:]
        do {
            while r.remaining > 0 {
                let usage = try DomainUsage.decode(&r)
                out[usage.domain] = usage
            }
        } catch { throw .hypervisor("usage reply: \(error)") }
        return out
    }
}
