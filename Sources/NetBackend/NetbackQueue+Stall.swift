/// A guest that stops posting rx buffers: its packets wait in the queue's buffers (and past
/// them in the kernel's TAP queue) for at most the drain timeout, and after the stall
/// timeout the vif's carrier goes off, so dom0's stack stops sending to it; once the guest
/// posts buffers again the carrier comes back. Linux's netback does the same with its
/// rx_drain_timeout (10 s) and rx_stall_timeout (60 s).
public struct NetbackStallPolicy: Sendable, Equatable {
    /// Held packets older than this are dropped.
    public var drain: Duration
    /// With packets waiting this long and no buffer posted, the carrier goes off.
    public var stall: Duration

    public init(drain: Duration = .seconds(10), stall: Duration = .seconds(60)) {
        self.drain = drain
        self.stall = stall
    }
}

extension NetbackQueue {
    /// On the worker, from the device's housekeeping: drops packets held past the drain
    /// timeout and says which carrier state the vif should have now (true: on).
    func checkStall(now: ContinuousClock.Instant, policy: NetbackStallPolicy) -> Bool {
        guard disconnectReason == nil else { return true }
        let posted = (try? rxRing.unconsumedRequests()) ?? 0
        if posted > 0 {
            // The guest posted buffers: whatever waited goes at the next service.
            rxStarvedSince = nil
            stalled = false
            watchesStall.store(rxWaitingSince != nil, ordering: .relaxed)
            return true
        }
        // Packets delivered since the last check cleared rxStarvedSince and `stalled`.
        if let since = rxWaitingSince, now - since >= policy.drain {
            for position in rxHeldHead..<rxHeld.count {
                rxFinished(rxHeld[position])
                statistics.rxDropped += 1
            }
            rxHeld.removeAll(keepingCapacity: true)
            rxHeldHead = 0
            rxWaitingSince = nil
        }
        if let since = rxStarvedSince, now - since >= policy.stall { stalled = true }
        watchesStall.store(rxWaitingSince != nil || rxStarvedSince != nil || stalled, ordering: .relaxed)
        return !stalled
    }
}
