import XenDevice

/// A connection's rings as its I/O thread serves them (``FrontendRingService``): tx
/// answers free pages, rx answers go to the TAP device, free rx slots are posted again.
/// Frames from the TAP device go onto the tx ring from ``NetFrontendTapSource``, on the
/// same thread, between this service's calls.
struct NetFrontendRingService: FrontendRingService {
    let datapath: NetFrontendDatapath
    let core: NetFrontendCore

    mutating func consumeResponses() -> Bool {
        let tx = datapath.consumeTx()
        let rx = datapath.consumeRx(tapFD: core.tapDescriptor)
        return tx || rx
    }

    mutating func produceRequests() -> Bool { datapath.postRx() }

    mutating func pushRequests() { datapath.push() }

    mutating func finalCheckForResponses() -> Bool { datapath.finalCheck() }

    /// Rx pages are always posted, so answers are always awaited.
    var awaitsResponses: Bool { datapath.broken == nil }

    var portCount: Int { datapath.txPort == datapath.rxPort ? 1 : 2 }
}
