import Netif
import Synchronization

/// The counters as atomics, bumped by the I/O thread and read by anyone.
final class NetFrontendStatistics: Sendable {
    let txPackets = Atomic<Int>(0)
    let txBytes = Atomic<Int>(0)
    let txDropped = Atomic<Int>(0)
    let txErrors = Atomic<Int>(0)
    let rxPackets = Atomic<Int>(0)
    let rxBytes = Atomic<Int>(0)
    let rxDropped = Atomic<Int>(0)
    let rxErrors = Atomic<Int>(0)

    var snapshot: NetifCounters {
        var c = NetifCounters()
        c.txPackets = txPackets.load(ordering: .relaxed)
        c.txBytes = txBytes.load(ordering: .relaxed)
        c.txDropped = txDropped.load(ordering: .relaxed)
        c.txErrors = txErrors.load(ordering: .relaxed)
        c.rxPackets = rxPackets.load(ordering: .relaxed)
        c.rxBytes = rxBytes.load(ordering: .relaxed)
        c.rxDropped = rxDropped.load(ordering: .relaxed)
        c.rxErrors = rxErrors.load(ordering: .relaxed)
        return c
    }
}
