import Logging
import SharedMemory
import XenPlatform

/// One queue's persistently mapped grants (`io/blkif.h`: feature-persistent), keyed by
/// grant reference, at most ``capacity`` at a time.
///
/// Everything is allocated when the queue is made: the entries, an open-addressing index
/// from gref to entry (linear probing, twice the capacity rounded up to a power of two,
/// backward-shift deletion so there are no tombstones), a free-entry stack and an
/// intrusive least-recently-used list. A hit is a probe, a count and at most one list
/// unlink: no allocation, no lock. A miss costs one map (the `GrantMapper` takes an
/// array, so it allocates, next to a hypercall or a call to the local hypervisor).
///
/// Only idle entries (no in-flight request uses them) are on the LRU list, so the list
/// head is always the page to evict: it is unmapped and its entry reused. When every
/// entry is busy there is nothing to evict and ``acquire(_:writable:)`` answers
/// ``Acquired/copy``: the request grant-copies that segment, as if persistent grants
/// were off for it (Linux blkback maps such pages for the one request instead; a copy is
/// cheaper than a map and an unmap).
///
/// Pages are mapped writable whatever the request, as `io/blkif.h` (note 8) lets a
/// backend do once both ends advertised feature-persistent, so one mapping serves reads
/// and writes. A frontend that granted a page read-only anyway gets, for requests that
/// only read the page (writes, indirect segment pages), a read-only mapping; a later
/// read request into that page (the backend writes it) remaps it writable if it is idle,
/// or copies if it is busy. A page that cannot be mapped at all is grant-copied: a
/// revoked, invalid or still read-only grant fails that copy, and so the request, with
/// BLKIF_RSP_ERROR; a map refused for a reason of ours (gntdev or address-space limits)
/// leaves the copy to succeed.
///
/// A frontend that does not reuse its grants (it need not: the protocol only asks it to)
/// would turn every page into a map and an unmap, some 50 times the worker time of a
/// grant copy, taken from every queue on the same worker; so would one that sends grefs
/// that cannot be mapped. So lookups are counted in windows of ``window``: when more than
/// a quarter of a window's lookups evicted a page or failed to map, misses are
/// grant-copied instead of mapped (hits are still served) for the next window; after a
/// window that maps again and still misses that much, for 2, 4, ... up to 64 windows. A
/// mapping window with reuse ends it.
///
/// While a page is mapped its grant is pinned: the frontend cannot end access to it
/// (Xen and the local hypervisor refuse while GTF_reading/GTF_writing are set), and
/// rewriting its grant entry does not move the mapping, which stays on the frame mapped
/// first. A frontend that retargets a persistently used gref therefore only redirects
/// its own data to the old page of its own; the backend never touches a page that was
/// not granted to it.
///
/// An unmap that fails on eviction (a platform that refuses it, or a handle it lost)
/// leaves the page mapped and its grant busy. The entry is then set aside: out of the
/// index and off every list, so no request uses the page and the entry is not reused,
/// with its mapping kept so that ``unmapAll()`` retries the unmap at teardown. Each one is
/// counted (``Statistics/failedUnmaps``); only the first is logged, with its gref and
/// error, so a platform that refuses every unmap costs a log line, not one per request.
/// At worst every entry ends up set aside and the queue grant-copies from then on.
final class BlkbackPersistentGrants {
    /// What ``acquire(_:writable:)`` found or made.
    enum Acquired {
        /// This entry holds the page; release it when the request is done with it.
        case mapped(Int32)
        /// No entry can take the page now, or it could not be mapped: grant-copy it for
        /// this request.
        case copy
    }

    /// One cached mapping. `uses` counts in-flight requests holding it; `previous` and
    /// `next` link idle entries from least to most recently used (-1: none).
    struct Entry {
        var gref: GrantRef = 0
        var uses: Int32 = 0
        var previous: Int32 = -1
        var next: Int32 = -1
        var writable = false
        /// Its unmap failed: the mapping is kept for ``unmapAll()`` to retry.
        var setAside = false
        var view = Entry.unmapped
        /// An empty view for entries that hold no page (never read: `mappings` says which hold one).
        static let unmapped = SharedView(base: UnsafeMutableRawPointer(bitPattern: pageSize)!, count: 0)
    }

    /// Counters for tests and the queue's closing log line.
    struct Statistics: Sendable, Equatable {
        /// Lookups answered by a mapping already held.
        var hits = 0
        /// Pages mapped.
        var maps = 0
        /// Idle pages unmapped to make room.
        var evictions = 0
        /// Segments grant-copied: every entry busy, a read-only mapping busy, or misses
        /// copied while the frontend was not reusing its grants.
        var copies = 0
        /// Windows of mapping that showed no reuse (misses were then copied for a while).
        var thrashingWindows = 0
        /// Maps that failed.
        var failures = 0
        /// Evictions whose unmap failed (the entry was set aside until teardown).
        var failedUnmaps = 0
    }

    let capacity: Int
    /// Lookups per window of the reuse check.
    let window: Int
    let mapper: any GrantMapper
    let domain: DomainID
    let logger: Logger
    private(set) var statistics = Statistics()
    /// Pages mapped now, set-aside ones included.
    private(set) var count = 0
    /// Entries set aside after a failed unmap, waiting for ``unmapAll()``.
    private(set) var setAside = 0

    private let entries: UnsafeMutableBufferPointer<Entry>
    private let mappings: UnsafeMutableBufferPointer<GrantMapping?>
    private let index: UnsafeMutableBufferPointer<Int32>
    private let indexMask: Int
    private let free: UnsafeMutableBufferPointer<Int32>
    private var freeCount: Int
    private var lruHead: Int32 = -1
    private var lruTail: Int32 = -1
    private var windowLookups = 0
    private var windowMisses = 0
    /// Windows still to copy misses in, and how many the next thrashing window earns.
    private var copyWindowsLeft = 0
    private var backoff = 1

    /// A cache of at most `capacity` pages of `domain`, mapped through `mapper`; 0 turns it
    /// off. `window`: lookups per reuse check (default: four times the capacity, at least 1024).
    /// `logger` reports a failed unmap (once) and the retry of set-aside ones at teardown.
    init(capacity: Int, mapper: any GrantMapper, domain: DomainID, window: Int? = nil,
         logger: Logger = Logger(label: "xensplit.blkback")) {
        self.capacity = capacity
        self.logger = logger
        self.window = max(1, window ?? max(1024, 4 * capacity))
        self.mapper = mapper
        self.domain = domain
        entries = .allocate(capacity: capacity)
        entries.initialize(repeating: Entry())
        mappings = .allocate(capacity: capacity)
        mappings.initialize(repeating: nil)
        var slots = 1
        while slots < 2 * capacity { slots <<= 1 }
        index = .allocate(capacity: slots)
        index.initialize(repeating: -1)
        indexMask = slots - 1
        free = .allocate(capacity: capacity)
        for k in 0..<capacity { free[k] = Int32(capacity - 1 - k) }
        freeCount = capacity
    }

    deinit {
        entries.deallocate()
        mappings.deinitialize()
        mappings.deallocate()
        index.deallocate()
        free.deallocate()
    }

    /// The mapped page of entry `entry`.
    @inline(__always)
    func view(_ entry: Int32) -> SharedView { entries[Int(entry)].view }

    /// Takes a use of `gref`'s page, mapping it on a miss; `writable` when the backend
    /// will write into it (a read request).
    func acquire(_ gref: GrantRef, writable: Bool) -> Acquired {
        if windowLookups == window { endWindow() }
        windowLookups += 1
        if let found = find(gref) {
            let e = Int(found)
            if !writable || entries[e].writable {
                if entries[e].uses == 0 { unlink(found) }
                entries[e].uses += 1
                statistics.hits += 1
                return .mapped(found)
            }
            // Mapped read-only, needed writable: remap if nobody uses it, else copy.
            guard entries[e].uses == 0 else {
                statistics.copies += 1
                return .copy
            }
            unlink(found)
            // Set aside if its unmap fails; the page is then looked for anew below.
            _ = drop(found)
        }
        guard capacity > 0 else { return .copy }
        // While the frontend shows no reuse, misses are copied (see the type's comment).
        guard copyWindowsLeft == 0 else {
            statistics.copies += 1
            return .copy
        }
        let e: Int32
        if freeCount > 0 {
            freeCount -= 1
            e = free[freeCount]
        } else if lruHead >= 0 {
            windowMisses += 1
            e = lruHead
            unlink(e)
            guard drop(e) else {
                // Still mapped and now set aside: nothing was freed for this page.
                statistics.copies += 1
                return .copy
            }
            statistics.evictions += 1
            freeCount -= 1
        } else {
            statistics.copies += 1
            return .copy
        }
        let mapping: GrantMapping
        do {
            mapping = try mapper.map([gref], from: domain, writable: true)
        } catch {
            // io/blkif.h note 8 promised a writable grant; a page the backend only reads
            // still works read-only.
            guard !writable, let readOnly = try? mapper.map([gref], from: domain, writable: false) else {
                free[freeCount] = e
                freeCount += 1
                statistics.failures += 1
                windowMisses += 1
                return .copy
            }
            mapping = readOnly
        }
        mappings[Int(e)] = mapping
        entries[Int(e)] = Entry(gref: gref, uses: 1, previous: -1, next: -1, writable: mapping.writable,
                                view: mapping.view)
        insert(e)
        count += 1
        statistics.maps += 1
        return .mapped(e)
    }

    /// Gives back one use of entry `entry`; once idle it becomes the most recently used.
    func release(_ entry: Int32) {
        let e = Int(entry)
        entries[e].uses -= 1
        guard entries[e].uses == 0 else { return }
        entries[e].previous = lruTail
        entries[e].next = -1
        if lruTail >= 0 { entries[Int(lruTail)].next = entry } else { lruHead = entry }
        lruTail = entry
    }

    /// Unmaps every page (none may be in use), retrying those set aside after a failed
    /// unmap; returns the first unmap failure. A mapping whose unmap fails here is let go
    /// of: the platform releases it when its handle closes.
    func unmapAll() -> PlatformError? {
        var failure: PlatformError?
        var retried = 0
        var failedAgain = 0
        for e in 0..<capacity {
            let wasSetAside = entries[e].setAside
            entries[e] = Entry()
            guard let mapping = mappings[e] else { continue }
            mappings[e] = nil
            if wasSetAside { retried += 1 }
            do { try mapper.unmap(mapping) } catch {
                failure = failure ?? error
                if wasSetAside { failedAgain += 1 }
            }
        }
        if retried > 0 {
            logger.warning("blkback persistent grants: unmaps that failed on eviction retried at teardown", metadata: [
                "frontend": "d\(domain)", "retried": "\(retried)", "failed-again": "\(failedAgain)",
                "first-failure": "\(failure.map { "\($0)" } ?? "none")"])
        }
        setAside = 0
        index.update(repeating: -1)
        for k in 0..<capacity { free[k] = Int32(capacity - 1 - k) }
        freeCount = capacity
        lruHead = -1
        lruTail = -1
        count = 0
        return failure
    }

    // MARK: Internals

    /// Judges a window in which misses were mapped; counts down one that copied them.
    private func endWindow() {
        if copyWindowsLeft > 0 {
            copyWindowsLeft -= 1
        } else if windowMisses > window / 4 {
            statistics.thrashingWindows += 1
            copyWindowsLeft = backoff
            backoff = min(2 * backoff, 64)
        } else {
            backoff = 1
        }
        windowLookups = 0
        windowMisses = 0
    }

    /// Unmaps entry `e` (idle, off the LRU list) and removes it from the index. True: the
    /// entry is on the free stack. False: the unmap failed, and the entry is set aside
    /// with its mapping (see the type's comment).
    private func drop(_ e: Int32) -> Bool {
        let gref = entries[Int(e)].gref
        remove(gref)
        if let mapping = mappings[Int(e)] {
            do throws(PlatformError) {
                try mapper.unmap(mapping)
            } catch {
                entries[Int(e)].setAside = true
                entries[Int(e)].view = Entry.unmapped
                setAside += 1
                statistics.failedUnmaps += 1
                if statistics.failedUnmaps == 1 {
                    logger.error("blkback persistent grant unmap failed: page kept mapped and set aside until teardown", metadata: [
                        "frontend": "d\(domain)", "gref": "\(gref)", "error": "\(error)",
                        "note": "later failures are only counted (failed-unmaps)"])
                }
                return false
            }
            mappings[Int(e)] = nil
        }
        count -= 1
        free[freeCount] = e
        freeCount += 1
        return true
    }

    private func unlink(_ entry: Int32) {
        let e = Int(entry)
        let previous = entries[e].previous
        let next = entries[e].next
        if previous >= 0 { entries[Int(previous)].next = next } else { lruHead = next }
        if next >= 0 { entries[Int(next)].previous = previous } else { lruTail = previous }
        entries[e].previous = -1
        entries[e].next = -1
    }

    @inline(__always)
    private func home(_ gref: GrantRef) -> Int {
        // Fibonacci hashing: the product's high bits mix every bit of the gref.
        Int(truncatingIfNeeded: (UInt64(gref) &* 0x9E37_79B9_7F4A_7C15) >> 32) & indexMask
    }

    private func find(_ gref: GrantRef) -> Int32? {
        guard capacity > 0 else { return nil }
        var at = home(gref)
        while true {
            let e = index[at]
            if e < 0 { return nil }
            if entries[Int(e)].gref == gref { return e }
            at = (at + 1) & indexMask
        }
    }

    private func insert(_ e: Int32) {
        var at = home(entries[Int(e)].gref)
        while index[at] >= 0 { at = (at + 1) & indexMask }
        index[at] = e
    }

    /// Backward-shift deletion: later members of the probe run move up into the hole.
    private func remove(_ gref: GrantRef) {
        var hole = home(gref)
        while index[hole] >= 0, entries[Int(index[hole])].gref != gref { hole = (hole + 1) & indexMask }
        guard index[hole] >= 0 else { return }
        var at = hole
        while true {
            at = (at + 1) & indexMask
            let e = index[at]
            if e < 0 { break }
            let want = home(entries[Int(e)].gref)
            // Move e into the hole unless its home lies cyclically in (hole, at].
            let stays = hole <= at ? (want > hole && want <= at) : (want > hole || want <= at)
            if !stays {
                index[hole] = e
                hole = at
            }
        }
        index[hole] = -1
    }
}
