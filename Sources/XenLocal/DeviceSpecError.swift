/// The part of a DISKSPEC or VIFSPEC that an error points at.
public struct DeviceSpecToken: Sendable, Equatable, CustomStringConvertible {
    /// Which syntax it was read from: `DISKSPEC`, `VIFSPEC`, `vdev`.
    public let syntax: String
    /// The parameter's text as written (whitespace before it dropped).
    public let text: String
    /// Which parameter, from 1; 0 when the token stands alone.
    public let index: Int
    /// Its first character's offset in the spec, from 0.
    public let offset: Int

    public init(syntax: String = "DISKSPEC", text: String, index: Int, offset: Int) {
        self.syntax = syntax
        self.text = text
        self.index = index
        self.offset = offset
    }

    public var description: String {
        index == 0 ? "\(syntax) \"\(text)\"" : "\(syntax) parameter \(index) \"\(text)\" (offset \(offset))"
    }
}

extension String {
    /// Without trailing newlines and blanks.
    func trimmingSuffix() -> String {
        var s = Substring(self)
        while let last = s.last, last == "\n" || last == " " || last == "\t" || last == "\r" { s = s.dropLast() }
        return String(s)
    }
}

/// Why a DISKSPEC or VIFSPEC cannot be parsed, or its device cannot be attached.
public enum DeviceSpecError: Error, Equatable, Sendable, CustomStringConvertible {
    /// A `key=` that xl's syntax does not define.
    case unknownKey(DeviceSpecToken, key: String)
    /// A value its parameter does not take; `expected` lists what it takes.
    case badValue(DeviceSpecToken, parameter: String, expected: String)
    /// An image format xl knows but the local backend cannot serve (it serves raw only).
    case unsupportedFormat(DeviceSpecToken, format: String)
    /// A parameter xl knows but the local toolstack cannot honour, and why.
    case unsupported(DeviceSpecToken, parameter: String, reason: String)
    /// A parameter given a second time.
    case repeated(DeviceSpecToken, parameter: String)
    /// A fifth positional parameter (target, format, vdev, access are all set).
    case tooManyPositional(DeviceSpecToken)
    /// A parameter that is neither `key=value`, a flag nor a positional value.
    case malformed(DeviceSpecToken, reason: String)
    /// A virtual device name xl cannot number, and why.
    case badVirtualDevice(DeviceSpecToken, reason: String)
    /// No `vdev` (it is mandatory).
    case missingVirtualDevice(spec: String)
    /// No target or an empty one (for a cdrom, an empty drive, which has no local backend).
    case missingTarget(spec: String, cdrom: Bool)
    /// The target cannot be examined (`stat` failed with `errno`).
    case targetUnavailable(path: String, errno: Int32)
    /// The target exists but is neither a regular file nor a block device.
    case targetNotDisk(path: String, kind: String)
    /// Two disks of one domain share a virtual device number.
    case duplicateVirtualDevice(vdev: String, number: UInt32, other: String)
    /// The guest already has a device at this frontend path.
    case deviceExists(path: String)
    /// Two interfaces of one domain ask for the same device id.
    case duplicateDeviceID(kind: String, devid: UInt32)
    /// A `rate=` whose `part` (RATE, `@INTERVAL` or the whole value) is garbage, zero or
    /// overflows, and why.
    case badRate(DeviceSpecToken, part: String, reason: String)
    /// A device's hotplug script is not an executable file.
    case scriptNotExecutable(device: String, script: String)
    /// The backend did not reach `wanted` within `timeout`; `state` is its last `state`
    /// value (nil: absent).
    case backendTimedOut(device: String, wanted: String, timeout: Duration, state: String?)
    /// The backend closed (`state` 5 or 6) or its directory went while the toolstack waited
    /// for InitWait (`state` nil: gone).
    case backendClosed(device: String, state: String?)
    /// The hotplug script could not be started (`errno` from posix_spawn).
    case scriptSpawnFailed(device: String, script: String, errno: Int32)
    /// The hotplug script ran `action` and failed: `exit` says how it ended; its standard
    /// error and the `hotplug-error` it wrote, if any.
    case scriptFailed(device: String, script: String, action: String, exit: String, stderr: String, hotplugError: String?)
    /// The hotplug script ran `action` for longer than `timeout` and was killed.
    case scriptTimedOut(device: String, script: String, action: String, timeout: Duration, stderr: String)

    /// `target=` takes the rest of the spec, so a parameter written after it becomes part
    /// of the path: say so when the path holds what looks like one.
    static func swallowedHint(_ spec: String) -> String {
        guard let range = spec.range(of: "target=") else { return "" }
        let keys = ["vdev", "format", "access", "devtype", "backend", "backendtype", "script", "specification"]
        for part in spec[range.upperBound...].split(separator: ",").dropFirst() {
            let key = part.drop(while: { $0 == " " }).prefix(while: { $0 != "=" })
            if keys.contains(String(key)), part.contains("=") {
                return "; '\(part.drop(while: { $0 == " " }))' is read as part of the target path, because"
                    + " target= takes the rest of the DISKSPEC: put target= last"
            }
        }
        return ""
    }

    /// A script's standard error for a message: trimmed, or a note that it wrote none.
    static func quoted(_ stderr: String) -> String {
        let text = stderr.trimmingSuffix()
        return text.isEmpty ? "; it wrote nothing to stderr" : "; its stderr: " + text
    }

    public var description: String {
        switch self {
        case let .unknownKey(t, key):
            return "\(t): unknown parameter '\(key)='"
        case let .badValue(t, parameter, expected):
            return "\(t): bad \(parameter), expected \(expected)"
        case let .unsupportedFormat(t, format):
            return "\(t): format \(format) is not supported: the local backend serves raw images only (format=raw)"
        case let .unsupported(t, parameter, reason):
            return "\(t): \(parameter) is not supported: \(reason)"
        case let .repeated(t, parameter):
            return "\(t): \(parameter) given more than once"
        case let .tooManyPositional(t):
            return "\(t): too many positional parameters, expected at most target,format,vdev,access"
        case let .malformed(t, reason):
            return "\(t): \(reason)"
        case let .badVirtualDevice(t, reason):
            return "\(t): bad vdev: \(reason)"
        case let .missingVirtualDevice(spec):
            return "DISKSPEC \"\(spec)\": no vdev, expected vdev=NAME or a third positional parameter (xvda, hdc, sdb, ...)"
                + Self.swallowedHint(spec)
        case let .missingTarget(spec, cdrom):
            return cdrom
                ? "DISKSPEC \"\(spec)\": no target: an empty cdrom drive is not supported by the local backend"
                : "DISKSPEC \"\(spec)\": no target, expected a first positional parameter or target=PATH last"
        case let .targetUnavailable(path, errno):
            return "disk target \(path): cannot stat it (errno \(errno))" + Self.swallowedHint("target=" + path)
        case let .targetNotDisk(path, kind):
            return "disk target \(path) is a \(kind), expected a regular file or a block device"
        case let .duplicateVirtualDevice(vdev, number, other):
            return "vdev \(vdev) is virtual-device \(number), already used by vdev \(other)"
        case let .deviceExists(path):
            return "a device already exists at \(path)"
        case let .duplicateDeviceID(kind, devid):
            return "two \(kind) devices ask for devid \(devid)"
        case let .badRate(t, part, reason):
            return "\(t): bad rate '\(part)': \(reason); expected RATE/s[@INTERVAL] such as 10Mb/s or 250KB/s@20ms"
        case let .scriptNotExecutable(device, script):
            return "\(device): hotplug script \(script) is not an executable file"
        case let .backendTimedOut(device, wanted, timeout, state):
            return "\(device): the backend did not reach \(wanted) within \(timeout) (state \(state ?? "absent")):"
                + " is a net backend serving this domain's vifs?"
        case let .backendClosed(device, state):
            return state.map { "\(device): the backend went to state \($0) before InitWait" }
                ?? "\(device): the backend directory was removed before InitWait"
        case let .scriptSpawnFailed(device, script, errno):
            return "\(device): cannot run hotplug script \(script) (errno \(errno))"
        case let .scriptFailed(device, script, action, exit, stderr, hotplugError):
            return "\(device): hotplug script \(script) \(action) failed (\(exit))"
                + (hotplugError.map { ", hotplug-error: \($0)" } ?? "") + Self.quoted(stderr)
        case let .scriptTimedOut(device, script, action, timeout, stderr):
            return "\(device): hotplug script \(script) \(action) ran for more than \(timeout) and was killed" + Self.quoted(stderr)
        }
    }
}
