import Foundation

/// One comparison in DESIGN.md's format:
/// `bench NAME ours=VALUE reference=VALUE unit=UNIT ratio=OURS/REFERENCE spread=PCT`.
struct BenchComparison {
    let name: String
    let unit: String
    var ours: [Double] = []
    var reference: [Double] = []
    /// Latency figures (names ending `_p99_us`): lower is better, so the ratio is
    /// reference/ours and > 1 still means we are better.
    var lowerIsBetter = false

    static func median(_ xs: [Double]) -> Double {
        guard !xs.isEmpty else { return .nan }
        let s = xs.sorted()
        return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
    }

    /// (max - min) / median, in percent.
    static func spread(_ xs: [Double]) -> Double {
        guard let lo = xs.min(), let hi = xs.max() else { return .nan }
        let m = median(xs)
        return m == 0 ? 0 : (hi - lo) / m * 100
    }

    var line: String {
        let o = Self.median(ours)
        guard !reference.isEmpty else {
            return "bench \(name) ours=\(Self.format(o)) reference=none unit=\(unit) ratio=none spread=\(String(format: "%.1f", Self.spread(ours)))%"
        }
        let r = Self.median(reference)
        let ratio = lowerIsBetter ? r / o : o / r
        let spread = max(Self.spread(ours), Self.spread(reference))
        return "bench \(name) ours=\(Self.format(o)) reference=\(Self.format(r)) unit=\(unit) ratio=\(String(format: "%.3f", ratio)) spread=\(String(format: "%.1f", spread))%"
    }

    static func format(_ v: Double) -> String {
        v >= 100 ? String(format: "%.0f", v) : String(format: "%.3f", v)
    }
}

/// Whether round `round` (counted from 0) runs ours before the reference: ours first in
/// rounds 1, 3, 5... and the reference first in rounds 2, 4..., so neither side always
/// runs second, after the other has warmed (or dirtied) caches, the page cache or the
/// CPU's frequency.
func oursFirst(round: Int) -> Bool { round % 2 == 0 }

/// Runs `ours` and `reference` `runs` times each, taking turns to go first
/// (``oursFirst(round:)``), and collects their figures.
func alternate(_ comparison: inout BenchComparison, runs: Int,
               ours: () throws -> Double, reference: () throws -> Double) rethrows {
    for round in 0..<runs {
        if oursFirst(round: round) {
            comparison.ours.append(try ours())
            comparison.reference.append(try reference())
        } else {
            comparison.reference.append(try reference())
            comparison.ours.append(try ours())
        }
    }
}

/// Monotonic seconds.
func now() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}
