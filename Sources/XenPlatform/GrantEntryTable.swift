import SharedMemory

/// A domain's grant table in the v1 entry format (grant_table.h: struct grant_entry_v1:
/// flags u16, domid u16, frame u32), living in memory the granting domain can write.
///
/// The granting side writes entries as a guest does; the mapping side validates them the
/// way Xen's hypervisor does: flags and domid are read together and updated with one
/// compare-exchange, so a guest rewriting the entry concurrently cannot slip a change in
/// between the check and the busy bits.
public struct GrantEntryTable: Sendable {
    /// Bytes per entry.
    public static let entrySize = 8
    /// Entries Xen keeps for the toolstack (console, xenstore); never handed out.
    public static let reservedEntries: UInt32 = 8
    /// Attempts at the compare-exchange before the entry counts as unstable (as Xen).
    static let maxRetries = 4

    public let view: SharedView
    public let count: UInt32

    public init(view: SharedView) {
        self.view = view
        self.count = UInt32(view.count / Self.entrySize)
    }

    // MARK: The granting side

    /// Fills entry `ref`: frame and domid first, then the flags with release ordering so a
    /// mapper that sees GTF_permit_access also sees the rest.
    public func grant(_ ref: GrantRef, to grantee: DomainID, frame: UInt32, readOnly: Bool) {
        let o = Int(ref) * Self.entrySize
        view.store(frame, at: o + 4)
        view.store(grantee, at: o + 2)
        let flags: GrantFlags = readOnly ? [.permitAccess, .readOnly] : .permitAccess
        memoryFence(.releasing)
        view.store(flags.rawValue, at: o)
    }

    /// Ends access to `ref` unless it is mapped (GTF_reading/GTF_writing), as a guest's
    /// gnttab_end_foreign_access does: one compare-exchange of the flags to zero.
    public func endAccess(_ ref: GrantRef) -> Bool {
        let o = Int(ref) * Self.entrySize
        var flags = view.load(UInt16.self, at: o)
        while true {
            if GrantFlags(rawValue: flags).intersection([.reading, .writing]) != [] { return false }
            let r = view.compareExchange16(at: o, expected: flags, desired: 0)
            if r.exchanged { return true }
            flags = r.original
        }
    }

    // MARK: The hypervisor side

    /// Validates entry `ref` for a mapping or copy by `grantee` and marks it busy
    /// (GTF_reading, plus GTF_writing when writable). Returns the frame, read once after
    /// the entry is pinned.
    public func acquire(_ ref: GrantRef, grantee: DomainID, writable: Bool, granter: DomainID) throws(PlatformError) -> UInt32 {
        guard ref < count else {
            throw .grant(.badGrantRef, ref: ref, domain: granter, reason: "ref \(ref) is past the table's \(count) entries")
        }
        let o = Int(ref) * Self.entrySize
        var combo = view.load(UInt32.self, at: o)
        for _ in 0..<Self.maxRetries {
            let flags = GrantFlags(rawValue: UInt16(truncatingIfNeeded: combo))
            let domid = DomainID(truncatingIfNeeded: combo >> 16)
            guard flags.intersection([.typeMask, .subPage]) == .permitAccess else {
                throw .grant(.generalError, ref: ref, domain: granter, reason: "entry flags \(flags.rawValue) do not permit access")
            }
            guard domid == grantee else {
                throw .grant(.generalError, ref: ref, domain: granter, reason: "granted to d\(domid), not d\(grantee)")
            }
            var busy: GrantFlags = .reading
            if writable {
                guard !flags.contains(.readOnly) else {
                    throw .grant(.generalError, ref: ref, domain: granter, reason: "read-only grant used for writing")
                }
                busy.insert(.writing)
            }
            let desired = UInt32(flags.union(busy).rawValue) | UInt32(domid) << 16
            let r = view.compareExchange32(at: o, expected: combo, desired: desired)
            if r.exchanged {
                memoryFence(.acquiring)
                return view.load(UInt32.self, at: o + 4)
            }
            combo = r.original
        }
        throw .grant(.generalError, ref: ref, domain: granter, reason: "entry kept changing under the compare-exchange")
    }

    /// Clears busy bits when the last mapping of a kind goes.
    public func clearBusy(_ ref: GrantRef, reading: Bool, writing: Bool) {
        guard ref < count else { return }
        let o = Int(ref) * Self.entrySize
        var clear: GrantFlags = []
        if reading { clear.insert(.reading) }
        if writing { clear.insert(.writing) }
        var flags = view.load(UInt16.self, at: o)
        while true {
            let r = view.compareExchange16(at: o, expected: flags, desired: flags & ~clear.rawValue)
            if r.exchanged { return }
            flags = r.original
        }
    }

    /// The flags of `ref` as they stand (diagnostics and tests).
    public func flags(_ ref: GrantRef) -> GrantFlags {
        GrantFlags(rawValue: view.load(UInt16.self, at: Int(ref) * Self.entrySize))
    }
}

/// First-fit allocator of runs of consecutive units (pool pages, grant refs), shared by
/// the local hypervisor and the in-process doubles.
public struct RunAllocator: Sendable {
    private var used: [Bool]
    public let base: Int

    public init(count: Int, base: Int = 0) {
        used = [Bool](repeating: false, count: max(count, 0))
        self.base = base
    }

    public var capacity: Int { used.count }

    /// The first unit of `n` free consecutive units, now taken, or nil.
    public mutating func allocate(_ n: Int) -> Int? {
        guard n > 0, n <= used.count else { return nil }
        var start = 0
        while start + n <= used.count {
            if let busy = (start..<start + n).last(where: { used[$0] }) {
                start = busy + 1
                continue
            }
            for i in start..<start + n { used[i] = true }
            return start + base
        }
        return nil
    }

    /// Takes `n` units, not necessarily consecutive, or none; units `available` refuses
    /// are passed over (and stay free).
    public mutating func allocateScattered(_ n: Int, where available: (Int) -> Bool = { _ in true }) -> [Int]? {
        var taken: [Int] = []
        for i in used.indices where !used[i] && available(i + base) {
            taken.append(i)
            if taken.count == n { break }
        }
        guard taken.count == n else { return nil }
        for i in taken { used[i] = true }
        return taken.map { $0 + base }
    }

    /// Returns `n` units from `unit` on.
    public mutating func free(_ unit: Int, count n: Int = 1) {
        for i in (unit - base)..<(unit - base + n) where used.indices.contains(i) { used[i] = false }
    }

    /// Whether `unit` is taken.
    public func isUsed(_ unit: Int) -> Bool {
        used.indices.contains(unit - base) && used[unit - base]
    }
}
