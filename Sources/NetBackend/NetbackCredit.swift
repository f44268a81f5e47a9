import Netif
import URing

/// A guest's transmit credit under its vif's `rate` (Linux netback's credit scheme): the
/// credit is renewed by one interval's bytes each interval, up to the rate's burst; a
/// packet goes only if the credit covers it, else transmit pauses until the next renewal,
/// which a timer the worker polls announces.
final class NetbackCredit {
    let rate: NetifRate
    var remaining: UInt64
    var renewed: ContinuousClock.Instant
    let timer: TimerDescriptor

    init(rate: NetifRate) throws(NetbackError) {
        self.rate = rate
        remaining = rate.burst
        renewed = .now
        do { timer = try TimerDescriptor() } catch { throw .engine(error) }
    }

    /// Takes `bytes` of credit if there is enough (renewing it first for every interval
    /// that passed); false when the packet must wait.
    func take(_ bytes: Int, now: ContinuousClock.Instant = .now) -> Bool {
        let elapsed = now - renewed
        if elapsed >= rate.interval {
            let intervals = Int(elapsed / rate.interval)
            let added = rate.bytesPerInterval.multipliedReportingOverflow(by: UInt64(intervals))
            remaining = added.overflow ? rate.burst : min(rate.burst, remaining &+ added.partialValue)
            renewed = renewed.advanced(by: rate.interval * intervals)
        }
        guard UInt64(bytes) <= remaining else { return false }
        remaining -= UInt64(bytes)
        return true
    }

    /// Arms the timer for the next renewal.
    func armTimer(now: ContinuousClock.Instant = .now) throws(NetbackError) {
        do { try timer.arm(after: renewed.advanced(by: rate.interval) - now) } catch { throw .engine(error) }
    }
}
