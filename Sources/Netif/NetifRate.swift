/// A vif's transmit credit: the backend's `rate` key, `BYTES,MICROSECONDS` as libxl writes
/// it (so many bytes per interval of so many microseconds). Pure: no I/O.
public struct NetifRate: Sendable, Hashable {
    /// Bytes the guest may send per interval.
    public var bytesPerInterval: UInt64
    /// The interval, in microseconds (1 or more).
    public var intervalMicroseconds: UInt64

    public init(bytesPerInterval: UInt64, intervalMicroseconds: UInt64) {
        self.bytesPerInterval = bytesPerInterval
        self.intervalMicroseconds = intervalMicroseconds
    }

    /// Parses the `rate` value; the error names the key and what was expected.
    public init(xenstore value: String) throws(NetifError) {
        let parts = value.split(separator: ",", omittingEmptySubsequences: false)
        guard parts.count == 2, let bytes = UInt64(parts[0]), let micros = UInt64(parts[1]), bytes > 0, micros > 0 else {
            throw .featureValue(key: NetifToolstackKeys.rate, value: value,
                                expected: "BYTES,MICROSECONDS: two decimals above 0")
        }
        self.init(bytesPerInterval: bytes, intervalMicroseconds: micros)
    }

    /// The interval as a duration.
    public var interval: Duration { .microseconds(Int64(clamping: intervalMicroseconds)) }

    /// The most credit that builds up while the guest sends nothing: one interval's, but
    /// at least 128 KiB, so a packet of any size (a 64 KiB GSO packet under a small rate)
    /// can go, as Linux's netback allows.
    public var burst: UInt64 { max(bytesPerInterval, 131_072) }
}
