/// One guest disk as xl's DISKSPEC describes it (`man 5 xl-disk-configuration`), parsed and
/// checked against what the local block backend can serve. Pure: no I/O.
///
/// Accepted: the `key=value` parameters `target=` (last: it takes the rest of the string,
/// commas included, less one final comma), `format=`, `vdev=`, `access=`, `devtype=`, `backend=`, `backendtype=`,
/// `specification=`; the flags `cdrom`, `discard`/`no-discard`, `direct-io-safe`,
/// `trusted`/`untrusted`; the positional parameters target, format, vdev, access in that
/// order; the deprecated `raw:`/`phy:`/`file:`/`aio:`/`tap:`... target prefixes (after which
/// no format is expected positionally; an unknown word and colon followed by a letter or
/// digit is part of the path, as in xl's lexer) and the `vdev:cdrom`/`vdev:disk` suffixes.
///
/// Refused, each with an error naming the parameter: image formats other than raw, `script=`
/// and the script prefixes (`nbd:`, `iscsi:`, ...: the local backend runs no hotplug
/// scripts), `backendtype=` other than `phy`, `specification=virtio`, the COLO parameters,
/// and an empty target (an empty cdrom drive). A parameter given twice is refused, as the
/// man page says each may appear at most once; `target=` may follow an empty positional
/// target.
///
/// As xl does: a target not starting with `/` gets `/dev/` prepended; a cdrom is read-only
/// and removable whatever `access=` says; access defaults to read-write. `backend=NAME` is
/// recorded; `LocalToolstack` accepts dom0 (`Domain-0` or `0`) only.
public struct DiskSpec: Sendable, Equatable {
    /// The backing file or block device path.
    public var target: String
    /// The guest's name and number for the disk (frontend `virtual-device`).
    public var vdev: VirtualDevice
    /// Whether the guest may write (backend `mode` `w`, else `r`).
    public var readWrite: Bool
    /// `devtype=`: what the guest sees (backend and frontend `device-type`).
    public var deviceType: DeviceType
    /// `backend=`: the backend domain's name; nil for dom0.
    public var backendDomain: String?
    /// `discard`/`no-discard` (backend `discard-enable`).
    public var discard: Bool
    /// `direct-io-safe` (backend `direct-io-safe`).
    public var directIOSafe: Bool
    /// `trusted`/`untrusted` (frontend `trusted`).
    public var trusted: Bool

    /// `io/blkif.h: device-type`.
    public enum DeviceType: String, Sendable, Equatable {
        /// A hard disk.
        case disk
        /// A cdrom drive: read-only and removable.
        case cdrom
    }

    /// Whether the guest may eject the medium (backend `removable`): cdroms only, as xl sets.
    public var removable: Bool { deviceType == .cdrom }

    /// Parses one DISKSPEC; the error names the offending parameter, its position and what
    /// was expected.
    public init(parsing spec: String) throws(DeviceSpecError) {
        var p = Parser(spec: spec)
        try p.run()
        guard let vdev = p.vdev else { throw .missingVirtualDevice(spec: spec) }
        guard let target = p.target, !target.isEmpty else {
            throw .missingTarget(spec: spec, cdrom: p.deviceType == .cdrom)
        }
        self.target = target.hasPrefix("/") ? target : "/dev/" + target
        self.vdev = vdev
        self.deviceType = p.deviceType ?? .disk
        self.readWrite = deviceType == .cdrom ? false : (p.readWrite ?? true)
        self.backendDomain = p.backendDomain
        self.discard = p.discard ?? true
        self.directIOSafe = p.directIOSafe
        self.trusted = p.trusted ?? true
    }
}

/// The tokenizer and assignment rules of xl's DISKSPEC lexer, in our own code.
private struct Parser {
    let spec: String
    let chars: [Character]
    var index = 0
    var target: String?
    var targetNamed = false
    var formatSet = false
    var vdev: DiskSpec.VirtualDevice?
    var vdevSet = false
    var readWrite: Bool?
    var accessPositional = false
    var deviceType: DiskSpec.DeviceType?
    var backendDomain: String?
    var backendSet = false
    var backendTypeSet = false
    var specificationSet = false
    var discard: Bool?
    var directIOSafe = false
    var trusted: Bool?
    var hadDeprecatedPrefix = false

    init(spec: String) {
        self.spec = spec
        chars = Array(spec)
    }

    mutating func run() throws(DeviceSpecError) {
        var i = 0
        while i < chars.count {
            while i < chars.count, chars[i] == " " || chars[i] == "\t" || chars[i] == "\n" { i += 1 }
            if i == chars.count { break }
            let start = i
            index += 1
            if chars[i...].starts(with: "target=") {
                // The rest of the string, commas and trailing whitespace included, less one
                // final comma (as xl strips it).
                let text = String(chars[start...])
                var value = chars[(start + 7)...]
                if value.last == "," { value = value.dropLast() }
                try namedTarget(String(value), DeviceSpecToken(text: text, index: index, offset: start))
                return
            }
            while i < chars.count, chars[i] != "," { i += 1 }
            let text = String(chars[start..<i])
            if i < chars.count { i += 1 }
            try parameter(DeviceSpecToken(text: text, index: index, offset: start))
        }
    }

    static let flags: Set<String> = ["cdrom", "discard", "no-discard", "direct-io-safe", "trusted", "untrusted", "colo", "no-colo"]
    static let coloKeys: Set<String> = ["colo-host", "colo-port", "colo-export", "active-disk", "hidden-disk"]

    mutating func parameter(_ t: DeviceSpecToken) throws(DeviceSpecError) {
        if let eq = t.text.firstIndex(of: "=") {
            let key = String(t.text[..<eq])
            let value = String(t.text[t.text.index(after: eq)...])
            guard Self.isKeyword(key) else {
                throw .malformed(t, reason: "a positional parameter cannot contain '=': give a target with '=' or ',' as target=PATH, last")
            }
            try named(key, value, t)
        } else if Self.flags.contains(t.text) {
            try flag(t)
        } else {
            try positional(t)
        }
    }

    /// Parameter names: an ASCII letter, then letters, digits, '-' and '_'.
    static func isKeyword(_ s: String) -> Bool {
        guard let first = s.unicodeScalars.first, first.isASCII, first.properties.isAlphabetic else { return false }
        return s.unicodeScalars.allSatisfy { $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || $0 == "-" || $0 == "_") }
    }

    mutating func named(_ key: String, _ value: String, _ t: DeviceSpecToken) throws(DeviceSpecError) {
        switch key {
        case "format":
            if formatSet { throw .repeated(t, parameter: "format") }
            try setFormat(value, t)
        case "vdev":
            // As xl, an empty value may be given again.
            if vdev != nil { throw .repeated(t, parameter: "vdev") }
            try setVdev(value, t, allowDevtypeSuffix: false)
        case "access":
            if readWrite != nil { throw .repeated(t, parameter: "access") }
            try setAccess(value, t)
        case "devtype":
            if deviceType != nil { throw .repeated(t, parameter: "devtype") }
            switch value {
            case "cdrom": deviceType = .cdrom
            case "disk", "": deviceType = .disk
            default: throw .badValue(t, parameter: "devtype", expected: "cdrom")
            }
        case "backend":
            if backendSet { throw .repeated(t, parameter: "backend") }
            backendSet = true
            backendDomain = value.isEmpty ? nil : value
        case "backendtype":
            if backendTypeSet { throw .repeated(t, parameter: "backendtype") }
            backendTypeSet = true
            switch value {
            case "phy", "": break
            case "qdisk", "standalone", "tap":
                throw .unsupported(t, parameter: "backendtype=\(value)", reason: "the local backend is a phy-type backend; leave backendtype out or say phy")
            default: throw .badValue(t, parameter: "backendtype", expected: "phy, qdisk or standalone")
            }
        case "specification":
            if specificationSet { throw .repeated(t, parameter: "specification") }
            specificationSet = true
            switch value {
            case "xen", "": break
            case "virtio": throw .unsupported(t, parameter: "specification=virtio", reason: "the local backend speaks io/blkif.h (specification=xen) only")
            default: throw .badValue(t, parameter: "specification", expected: "xen or virtio")
            }
        case "script":
            throw .unsupported(t, parameter: "script=", reason: "the local toolstack runs no hotplug scripts; give the file or block device as target")
        default:
            if Self.coloKeys.contains(key) {
                throw .unsupported(t, parameter: key + "=", reason: "COLO block replication needs the qdisk backend")
            }
            throw .unknownKey(t, key: key)
        }
    }

    mutating func namedTarget(_ value: String, _ t: DeviceSpecToken) throws(DeviceSpecError) {
        // Allowed after an empty positional target, as the man page says.
        if targetNamed || !(target ?? "").isEmpty { throw .repeated(t, parameter: "target") }
        targetNamed = true
        target = value
    }

    mutating func flag(_ t: DeviceSpecToken) throws(DeviceSpecError) {
        switch t.text {
        case "cdrom":
            if deviceType != nil { throw .repeated(t, parameter: "devtype") }
            deviceType = .cdrom
        case "discard", "no-discard":
            if discard != nil { throw .repeated(t, parameter: "discard/no-discard") }
            discard = t.text == "discard"
        case "direct-io-safe":
            if directIOSafe { throw .repeated(t, parameter: "direct-io-safe") }
            directIOSafe = true
        case "trusted", "untrusted":
            if trusted != nil { throw .repeated(t, parameter: "trusted/untrusted") }
            trusted = t.text == "trusted"
        case "no-colo":
            // The default; nothing to turn off.
            break
        default:
            throw .unsupported(t, parameter: t.text, reason: "COLO block replication needs the qdisk backend")
        }
    }

    /// Positional values fill target, format, vdev, access in turn, skipping those already
    /// given; after a deprecated target prefix the format slot is skipped (the old syntax
    /// was target,vdev,access).
    mutating func positional(_ t: DeviceSpecToken) throws(DeviceSpecError) {
        if target == nil {
            try positionalTarget(t)
        } else if !hadDeprecatedPrefix && !formatSet {
            // xend's empty cdrom, ",hdc:cdrom,r": the vdev comes where the format would.
            if target == "", !vdevSet, t.text.hasSuffix(":cdrom"),
               (try? DiskSpec.VirtualDevice(parsing: String(t.text.dropLast(6)), token: t)) != nil {
                formatSet = true
                try setVdev(t.text, t, allowDevtypeSuffix: true)
            } else {
                try setFormat(t.text, t)
            }
        } else if !vdevSet {
            try setVdev(t.text, t, allowDevtypeSuffix: true)
        } else if !accessPositional {
            accessPositional = true
            if readWrite != nil { throw .repeated(t, parameter: "access") }
            try setAccess(t.text, t)
        } else {
            throw .tooManyPositional(t)
        }
    }

    static let ignoredPrefixes: Set<String> = ["tapdisk", "tap2", "tap", "aio", "ioemu", "file", "phy"]
    static let formatPrefixes: Set<String> = ["raw", "qcow", "qcow2", "vhd"]
    static let scriptPrefixes: Set<String> = ["iscsi", "nbd", "enbd", "drbd"]

    mutating func positionalTarget(_ t: DeviceSpecToken) throws(DeviceSpecError) {
        var rest = Substring(t.text)
        // Deprecated prefixes: lower-case words ending in ':' ("tap:aio:/x" has two).
        while let colon = rest.firstIndex(of: ":"), rest.startIndex < colon,
              rest[..<colon].unicodeScalars.allSatisfy({ ("a"..."z").contains($0) || ("0"..."9").contains($0) }),
              rest.unicodeScalars.first.map({ ("a"..."z").contains($0) }) == true {
            let prefix = String(rest[..<colon])
            let after = rest[rest.index(after: colon)...]
            let known = Self.formatPrefixes.contains(prefix) || Self.scriptPrefixes.contains(prefix) || Self.ignoredPrefixes.contains(prefix)
            // As xl: an unknown word and a colon followed by a letter or digit is part of
            // the path ("host:1234"); followed by anything else it is a mistyped prefix.
            if !known, let next = after.unicodeScalars.first, ("a"..."z").contains(next) || ("0"..."9").contains(next) { break }
            if Self.formatPrefixes.contains(prefix) {
                if formatSet { throw .repeated(t, parameter: "format") }
                try setFormat(prefix, t)
            } else if Self.scriptPrefixes.contains(prefix) {
                throw .unsupported(t, parameter: "the \(prefix): prefix", reason: "it names the block-\(prefix) hotplug script and the local toolstack runs none")
            } else if !Self.ignoredPrefixes.contains(prefix) {
                throw .badValue(t, parameter: "target prefix '\(prefix):'",
                                expected: "raw:, phy:, file:, aio:, tap:, tapdisk:, tap2: or ioemu: (a path containing ':' goes in target=PATH, last)")
            }
            hadDeprecatedPrefix = true
            rest = after
        }
        target = String(rest)
    }

    mutating func setFormat(_ value: String, _ t: DeviceSpecToken) throws(DeviceSpecError) {
        formatSet = true
        switch value {
        case "raw", "": break
        case "qcow", "qcow2", "vhd", "qed", "empty": throw .unsupportedFormat(t, format: value)
        default: throw .badValue(t, parameter: "format", expected: "raw (qcow, qcow2, vhd and qed are xl formats the local backend cannot serve)")
        }
    }

    mutating func setAccess(_ value: String, _ t: DeviceSpecToken) throws(DeviceSpecError) {
        switch value {
        case "rw", "w", "": readWrite = true
        case "ro", "r": readWrite = false
        default: throw .badValue(t, parameter: "access", expected: "ro, r, rw or w")
        }
    }

    mutating func setVdev(_ value: String, _ t: DeviceSpecToken, allowDevtypeSuffix: Bool) throws(DeviceSpecError) {
        vdevSet = true
        var name = Substring(value)
        if allowDevtypeSuffix, let colon = value.lastIndex(of: ":") {
            // Deprecated "hdc:cdrom" and "xvda:disk".
            let suffix = value[value.index(after: colon)...]
            guard let type = DiskSpec.DeviceType(rawValue: String(suffix)) else {
                throw .badValue(t, parameter: "vdev suffix", expected: "':cdrom', ':disk' or none")
            }
            if deviceType != nil { throw .repeated(t, parameter: "devtype") }
            deviceType = type
            name = value[..<colon]
        }
        if name.isEmpty { return }
        vdev = try DiskSpec.VirtualDevice(parsing: String(name), token: t)
    }
}
