import XenDevice

/// The queue pairs one I/O thread serves (``FrontendRingService``): tx answers free pages,
/// rx answers go to each pair's TAP queue, free rx slots are posted again. Frames from the
/// TAP queues go onto the tx rings from their ``NetFrontendTapSource``s, on the same
/// thread, between this service's calls.
struct NetFrontendRingService: FrontendRingService {
    /// This thread's queue pairs, each served in turn every pass.
    let datapaths: [NetFrontendDatapath]

    mutating func consumeResponses() -> Bool {
        var any = false
        for datapath in datapaths {
            if datapath.consumeTx() { any = true }
            if datapath.consumeRx(tapFD: datapath.tapFD.load(ordering: .acquiring)) { any = true }
        }
        return any
    }

    mutating func produceRequests() -> Bool {
        var any = false
        for datapath in datapaths where datapath.postRx() { any = true }
        return any
    }

    mutating func pushRequests() {
        for datapath in datapaths { datapath.push() }
    }

    /// Every ring asks to be notified before the thread sleeps, so each is checked even
    /// after one has answers.
    mutating func finalCheckForResponses() -> Bool {
        var any = false
        for datapath in datapaths where datapath.finalCheck() { any = true }
        return any
    }

    /// Rx pages are always posted, so answers are always awaited while a pair works.
    var awaitsResponses: Bool { datapaths.contains { $0.broken == nil } }

    var portCount: Int { datapaths.reduce(0) { $0 + ($1.txPort == $1.rxPort ? 1 : 2) } }
}
