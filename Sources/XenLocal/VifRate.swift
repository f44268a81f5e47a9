/// A vif's transmit rate limit, as xl's `rate=RATE/s[@INTERVAL]` describes it and as the
/// backend's `rate` key carries it: so many bytes per interval of so many microseconds.
/// Pure: no I/O.
///
/// Parsing follows libxlu's `xlu_vif_parse_rate`: RATE is a decimal count with an optional
/// `k`/`K` (10^3), `M` (10^6) or `G` (10^9) prefix and the unit `B/s` (bytes) or `b/s`
/// (bits, divided by 8) per second; INTERVAL is a decimal count of `s`, `ms` or `us`,
/// 50 ms when absent. The bytes per interval are the per-second figure scaled to the
/// interval, rounded down. Stricter than xl: a sign or whitespace in a number, a zero rate,
/// a zero interval and a limit that rounds down to 0 bytes per interval are refused.
public struct VifRate: Sendable, Equatable {
    /// The credit the backend grants per interval, in bytes.
    public var bytesPerInterval: UInt64
    /// The interval the credit is renewed at, in microseconds.
    public var intervalMicroseconds: UInt32

    /// libxl's interval when the spec names none: 50 ms.
    public static let defaultIntervalMicroseconds: UInt32 = 50_000

    public init(bytesPerInterval: UInt64, intervalMicroseconds: UInt32) {
        self.bytesPerInterval = bytesPerInterval
        self.intervalMicroseconds = intervalMicroseconds
    }

    /// The backend's `rate` value as libxl writes it: `BYTES,MICROSECONDS` in decimal.
    public var xenstoreValue: String { "\(bytesPerInterval),\(intervalMicroseconds)" }

    /// Parses the value of `rate=`; `t` is the parameter, for errors that name the bad part.
    init(parsing value: String, _ t: DeviceSpecToken) throws(DeviceSpecError) {
        let halves = value.split(separator: "@", maxSplits: 1, omittingEmptySubsequences: false)
        let rateText = String(halves[0])
        let bytesPerSecond = try Self.bytesPerSecond(rateText, t)
        var interval = Self.defaultIntervalMicroseconds
        if halves.count == 2 { interval = try Self.intervalMicroseconds(String(halves[1]), t) }
        // bytes/s * us must fit 64 bits before it is divided back down (libxl's overflow check).
        let (product, overflow) = bytesPerSecond.multipliedReportingOverflow(by: UInt64(interval))
        guard !overflow else {
            throw .badRate(t, part: value, reason: "\(bytesPerSecond) bytes/s over \(interval) us overflows 64 bits")
        }
        let perInterval = product / 1_000_000
        guard perInterval > 0 else {
            throw .badRate(t, part: value, reason: "\(bytesPerSecond) bytes/s is 0 bytes per \(interval) us interval")
        }
        self.init(bytesPerInterval: perInterval, intervalMicroseconds: interval)
    }

    /// RATE: digits, an optional decimal prefix, then `B/s` or `b/s`.
    static func bytesPerSecond(_ text: String, _ t: DeviceSpecToken) throws(DeviceSpecError) -> UInt64 {
        guard !text.isEmpty else { throw .badRate(t, part: "", reason: "no rate before '@', expected RATE/s such as 10Mb/s") }
        let digits = text.prefix { $0.isASCII && $0.isNumber }
        guard !digits.isEmpty else {
            throw .badRate(t, part: text, reason: "expected a decimal number, then B/s or b/s (10MB/s, 100Kb/s)")
        }
        guard let count = UInt64(digits) else { throw .badRate(t, part: String(digits), reason: "number exceeds 64 bits") }
        var unit = Substring(text.dropFirst(digits.count))
        var multiplier: UInt64 = 1
        switch unit.first {
        case "k", "K": multiplier = 1_000
        case "M": multiplier = 1_000_000
        case "G": multiplier = 1_000_000_000
        default: break
        }
        if multiplier != 1 { unit = unit.dropFirst() }
        let bits: Bool
        switch unit {
        case "B/s": bits = false
        case "b/s": bits = true
        default:
            let written = text.dropFirst(digits.count)
            throw written.isEmpty
                ? .badRate(t, part: text, reason: "no unit, expected B/s or b/s, optionally after k, K, M or G")
                : .badRate(t, part: String(written), reason: "unit is not B/s or b/s, optionally after k, K, M or G")
        }
        let (scaled, overflow) = count.multipliedReportingOverflow(by: multiplier)
        guard !overflow else { throw .badRate(t, part: text, reason: "rate exceeds 64 bits") }
        let perSecond = bits ? scaled / 8 : scaled
        guard perSecond > 0 else { throw .badRate(t, part: text, reason: "rate is less than 1 byte per second") }
        return perSecond
    }

    /// INTERVAL: digits then `s`, `ms` or `us`, at least 1 us and at most 2^32-1 us.
    static func intervalMicroseconds(_ text: String, _ t: DeviceSpecToken) throws(DeviceSpecError) -> UInt32 {
        let digits = text.prefix { $0.isASCII && $0.isNumber }
        guard !digits.isEmpty else {
            throw .badRate(t, part: "@" + text, reason: "expected an interval: a decimal number, then s, ms or us (@20ms)")
        }
        let scale: UInt64
        switch text.dropFirst(digits.count) {
        case "s": scale = 1_000_000
        case "ms": scale = 1_000
        case "us": scale = 1
        default:
            throw .badRate(t, part: "@" + text, reason: "interval unit is not s, ms or us")
        }
        guard let count = UInt64(digits), case let (us, false) = count.multipliedReportingOverflow(by: scale),
              us <= UInt64(UInt32.max) else {
            throw .badRate(t, part: "@" + text, reason: "interval exceeds \(UInt32.max) us")
        }
        guard us > 0 else { throw .badRate(t, part: "@" + text, reason: "interval is zero") }
        return UInt32(us)
    }
}
