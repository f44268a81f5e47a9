import Blkif
import SharedMemory
import XenRing

/// What a new process found in a queue's persistent state and did about it.
public struct BlkbackRecovery: Equatable, Sendable {
    /// Where the queue's ring resumes: req_cons.
    public var consumed: RingIndex
    /// rsp_prod_pvt, which recovery also published (rsp_prod).
    public var answered: RingIndex
    /// Records of the requests that were in flight, in the order they were taken: to be
    /// re-executed (``BlkbackQueue`` does it before it consumes anything new).
    public var replay: [Int32]
    /// Responses that were answered but not visible, written again and published.
    public var republished: Int

    /// Requests the previous process took and had not yet made answers visible for.
    public var tookOver: Int { replay.count + republished }
}

extension BlkbackRestartState {
    /// Reads the state a dead (or departed) process left, checks it against itself and
    /// against the shared ring's indices, writes again and publishes the responses that
    /// were answered but not yet visible, and returns the requests still owed
    /// (Protocols/blkback-restart.md, "Recovery", steps 1 to 5). The caller notifies the
    /// frontend once the queue is serving and re-executes ``BlkbackRecovery/replay``.
    ///
    /// Every record and index is read once. The ring is the frontend's memory: its
    /// indices are only checked, never adopted.
    public func recover(ring: SharedRing) throws(BlkbackRestartError) -> BlkbackRecovery {
        let n = UInt32(recordCount)
        var consumed = self.consumed
        var answered = self.answered
        let published = self.published

        var taken: [(record: Int32, index: RingIndex)] = []
        var answers: [(record: Int32, index: RingIndex)] = []
        for r in 0..<Int32(recordCount) {
            let base = offset(r)
            let raw = view.atomicLoad32(at: base + Record.state, ordering: .acquiring)
            guard let state = RecordState(rawValue: raw) else {
                throw .inconsistent("record \(r) has state \(raw)")
            }
            switch state {
            case .free: continue
            case .taken: taken.append((r, view.atomicLoad32(at: base + Record.requestIndex, ordering: .relaxed)))
            case .answered: answers.append((r, view.atomicLoad32(at: base + Record.responseIndex, ordering: .relaxed)))
            }
        }
        // Rules 1 and 2: a record whose index store (T3, A3) did not happen.
        if taken.contains(where: { $0.index == consumed }) { consumed &+= 1 }
        if answers.contains(where: { $0.index == answered }) { answered &+= 1 }
        guard answered &- published <= n, consumed &- answered <= n, consumed &- published <= n else {
            throw .inconsistent("indices consumed \(consumed), answered \(answered), published \(published) for \(n) slots")
        }

        // Rule 3: every consumed request is answered or in flight, so the records taken
        // are exactly consumed - answered. (A request may stay in flight while any number
        // of later ones come and go: its index says only the order it was taken in.)
        guard taken.count == Int(consumed &- answered) else {
            throw .inconsistent("\(taken.count) records in flight, but consumed \(consumed) - answered \(answered)")
        }
        let owed = Int(answered &- published)
        var pending = [Int32](repeating: -1, count: owed)
        var stale: [Int32] = []
        for a in answers {
            if a.index &- published < UInt32(owed) {
                let k = Int(a.index &- published)
                guard pending[k] < 0 else { throw .inconsistent("two records answer at \(a.index)") }
                pending[k] = a.record
            } else if published &- 1 &- a.index < n {
                stale.append(a.record)
            } else {
                throw .inconsistent("record \(a.record) answered at \(a.index), outside \(published &- n)..<\(answered)")
            }
        }
        if let missing = pending.firstIndex(of: -1) {
            throw .inconsistent("no record answers at \(published &+ UInt32(missing))")
        }

        // Rule 4: the shared indices, read once, must agree with ours.
        let responseProducer = ring.loadResponseProducer()
        guard published &- responseProducer <= n else {
            throw .inconsistent("the ring's rsp_prod \(responseProducer) is not within \(n) before published \(published)")
        }
        let requestProducer = ring.loadRequestProducer()
        guard requestProducer &- consumed <= n, requestProducer &- answered <= n else {
            throw .inconsistent("the ring's req_prod \(requestProducer) is not within \(n) after consumed \(consumed)")
        }

        // Rule 5: the owed responses again (their slots cannot hold newer requests: the
        // frontend has not seen them), then published as a push does (P1, P2, P3).
        for (k, record) in pending.enumerated() {
            let base = offset(record)
            let raw = Int16(bitPattern: view.load(UInt16.self, at: base + Record.status))
            guard let status = BlkifStatus(rawValue: raw) else {
                throw .inconsistent("record \(record) answers with status \(raw)")
            }
            BlkifResponse(id: view.load(UInt64.self, at: base + Record.id),
                          operation: view.load(UInt8.self, at: base + Record.operation), status: status)
                .encode(into: ring.slot(published &+ UInt32(k)), at: 0, abi: abi)
        }
        view.atomicStore32(consumed, at: Header.consumed, ordering: .releasing)
        view.atomicStore32(answered, at: Header.answered, ordering: .releasing)
        view.atomicStore32(answered, at: Header.published, ordering: .releasing)
        ring.storeResponseProducer(answered)
        for record in pending + stale {
            view.atomicStore32(RecordState.free.rawValue, at: offset(record) + Record.state, ordering: .releasing)
        }
        rebuildFreeList()
        // The order they were taken in: oldest (furthest before consumed) first.
        let replay = taken.sorted { consumed &- $0.index > consumed &- $1.index }
        return BlkbackRecovery(consumed: consumed, answered: answered, replay: replay.map(\.record), republished: owed)
    }
}
