extension DiskSpec {
    /// A guest disk name and the number libxl writes as the frontend's `virtual-device`
    /// (`io/blkif.h: virtual-device`; the numbering is `xen-vbd-interface(7)`'s, computed
    /// as libxl's `libxl__device_disk_dev_number` does). Protocols/xl-vdev.tsv holds the
    /// formulas and examples.
    ///
    /// - `xvd` + disk letters [+ partition], and `dDISKpPART`: disk < 2^20, partition < 256;
    ///   `(202 << 8) | disk << 4 | partition` when both are < 16, else
    ///   `(1 << 28) | disk << 8 | partition`.
    /// - `hd` + letters a..d [+ partition < 64]: major 3 (hda, hdb) or 22 (hdc, hdd),
    ///   `major << 8 | (disk & 1) << 6 | partition`.
    /// - `sd` + letters a..p [+ partition < 16]: `8 << 8 | disk << 4 | partition`.
    /// - a number (decimal, `0x` hex or leading-`0` octal) up to 2^31-1: itself.
    ///
    /// Disk letters count as in spreadsheet columns: a=0 .. z=25, aa=26, ab=27, ...
    /// A partition number has no leading zero. Stricter than libxl in two corners: a name
    /// with no disk letter (`xvd1`, which libxl numbers from disk -1) and a sign or
    /// whitespace before a number (which C's `strtoul` skips) are refused.
    public struct VirtualDevice: Sendable, Equatable, CustomStringConvertible {
        /// The name as given (the backend's `dev`).
        public let name: String
        /// The frontend's `virtual-device` and the device id in both directory paths.
        public let number: UInt32

        /// Parses a vdev name outside a DISKSPEC.
        public init(_ name: String) throws(DeviceSpecError) {
            try self.init(parsing: name, token: DeviceSpecToken(syntax: "vdev", text: name, index: 0, offset: 0))
        }

        init(parsing name: String, token: DeviceSpecToken) throws(DeviceSpecError) {
            self.name = name
            switch Self.number(of: name) {
            case let .success(n): number = n
            case let .failure(reason): throw .badVirtualDevice(token, reason: reason.text)
            }
        }

        public var description: String { "\(name) (\(number))" }

        struct Reason: Error { let text: String }

        static func number(of name: String) -> Result<UInt32, Reason> {
            let s = Array(name.utf8)
            if let (disk, partition) = diskPartitionForm(s) {
                guard disk < 1 << 20 else { return .failure(Reason(text: "disk \(disk) in \(name) is past the largest, 1048575")) }
                guard partition < 256 else { return .failure(Reason(text: "partition \(partition) in \(name) is past the largest, 255")) }
                return .success(xvdNumber(disk: disk, partition: partition))
            }
            if s.starts(with: Array("xvd".utf8)) {
                return lettered(s, prefix: 3, name: name, maxDisk: (1 << 20) - 1, maxPartition: 255).map { xvdNumber(disk: $0.0, partition: $0.1) }
            }
            if let first = s.first, ("0"..."9").contains(Unicode.Scalar(first)) {
                guard let n = plainNumber(s) else { return .failure(Reason(text: "\(name) is not a decimal, 0x hex or octal number")) }
                guard n <= UInt64(Int32.max) else { return .failure(Reason(text: "\(name) is past the largest device number, 2147483647")) }
                return .success(UInt32(n))
            }
            if s.starts(with: Array("hd".utf8)) {
                return lettered(s, prefix: 2, name: name, maxDisk: 3, maxPartition: 63).map { disk, partition in
                    UInt32((disk < 2 ? 3 : 22) << 8 | (disk & 1) << 6 | partition)
                }
            }
            if s.starts(with: Array("sd".utf8)) {
                return lettered(s, prefix: 2, name: name, maxDisk: 15, maxPartition: 15).map { disk, partition in
                    UInt32(8 << 8 | disk << 4 | partition)
                }
            }
            return .failure(Reason(text: "\(name) is not xvdX[N], hdX[N], sdX[N], dDISKpPART or a number"))
        }

        static func xvdNumber(disk: Int, partition: Int) -> UInt32 {
            disk <= 15 && partition <= 15
                ? UInt32(202 << 8 | disk << 4 | partition)
                : UInt32(1 << 28 | disk << 8 | partition)
        }

        /// `dDISKpPART` in decimal, or nil when `s` is not of that shape.
        static func diskPartitionForm(_ s: [UInt8]) -> (Int, Int)? {
            guard s.first == UInt8(ascii: "d"), let p = s.firstIndex(of: UInt8(ascii: "p")) else { return nil }
            guard let disk = decimal(s[1..<p]), let partition = decimal(s[(p + 1)...]) else { return nil }
            return (disk, partition)
        }

        /// Decimal digits only, saturating so huge values still compare as too large.
        static func decimal(_ digits: ArraySlice<UInt8>) -> Int? {
            guard !digits.isEmpty, digits.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else { return nil }
            var n = 0
            for d in digits { n = min(n * 10 + Int(d - 0x30), Int(UInt32.max)) }
            return n
        }

        /// Decimal, `0x` hex or leading-`0` octal, as `strtoul(..., 0)` reads them.
        static func plainNumber(_ s: [UInt8]) -> UInt64? {
            var digits = s[...]
            var radix: UInt64 = 10
            if s.count > 2, s[0] == UInt8(ascii: "0"), s[1] | 0x20 == UInt8(ascii: "x") {
                radix = 16
                digits = s[2...]
            } else if s.count > 1, s[0] == UInt8(ascii: "0") {
                radix = 8
                digits = s[1...]
            }
            var n: UInt64 = 0
            for c in digits {
                let v: UInt64
                switch c {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): v = UInt64(c - UInt8(ascii: "0"))
                case UInt8(ascii: "a")...UInt8(ascii: "f"): v = UInt64(c - UInt8(ascii: "a") + 10)
                case UInt8(ascii: "A")...UInt8(ascii: "F"): v = UInt64(c - UInt8(ascii: "A") + 10)
                default: return nil
                }
                guard v < radix else { return nil }
                n = min(n * radix + v, UInt64(UInt32.max) + 1)
            }
            return n
        }

        /// Disk letters after `prefix`, then an optional partition number.
        static func lettered(_ s: [UInt8], prefix: Int, name: String, maxDisk: Int, maxPartition: Int) -> Result<(Int, Int), Reason> {
            var i = prefix
            var disk = -1
            while i < s.count, s[i] >= UInt8(ascii: "a"), s[i] <= UInt8(ascii: "z") {
                disk = (disk + 1) * 26 + Int(s[i] - UInt8(ascii: "a"))
                guard disk <= maxDisk else {
                    return .failure(Reason(text: "disk letters of \(name) go past the largest disk, \(maxDisk)"))
                }
                i += 1
            }
            guard disk >= 0 else { return .failure(Reason(text: "\(name) has no disk letter after '\(String(decoding: s[..<prefix], as: UTF8.self))'")) }
            if i == s.count { return .success((disk, 0)) }
            guard s[i] != UInt8(ascii: "0") else { return .failure(Reason(text: "partition of \(name) has a leading zero")) }
            guard let partition = decimal(s[i...]) else {
                return .failure(Reason(text: "\(name) has '\(String(decoding: s[i...], as: UTF8.self))' after its disk letters, expected a partition number"))
            }
            guard partition <= maxPartition else {
                return .failure(Reason(text: "partition \(partition) of \(name) is past the largest, \(maxPartition)"))
            }
            return .success((disk, partition))
        }
    }
}
