import Foundation
import Glibc
import Logging
import XenPlatform
import XenStore

/// Whether `createDomain`, `attachNic` and `destroy` run devices' hotplug scripts.
public enum HotplugPolicy: Sendable, Equatable {
    /// As xl does: after writing a vif's nodes, wait for its backend's InitWait and run its
    /// script `online`; on removal, close the backend and run the script `offline`.
    case run
    /// Write and remove the nodes only (the same nodes, `script` included): wait for no
    /// backend and run no script. For tests of the node layout, or a caller that runs the
    /// scripts itself.
    case none
}

/// The toolstack's waits, libxl's by default.
public struct HotplugTimeouts: Sendable, Equatable {
    /// For a backend to reach InitWait after its nodes are written (LIBXL_INIT_TIMEOUT).
    public var initWait: Duration
    /// For a hotplug script to exit (LIBXL_HOTPLUG_TIMEOUT); then it is killed.
    public var script: Duration
    /// For a backend to reach Closed once told to close (LIBXL_DESTROY_TIMEOUT).
    public var close: Duration

    public init(initWait: Duration = .seconds(10), script: Duration = .seconds(40), close: Duration = .seconds(10)) {
        self.initWait = initWait
        self.script = script
        self.close = close
    }
}

/// Hotplug scripts for vifs, run as libxl runs them on Linux (`libxl__get_hotplug_script_info`
/// and `libxl__hotplug_nic`): the script is the backend's `script` key, its arguments
/// `online` or `offline` and `type_if=vif`, its environment the toolstack's own plus
/// `script`, `XENBUS_TYPE`, `XENBUS_PATH` (relative to dom0's home), `XENBUS_BASE_PATH`,
/// `netdev` (the backend's `gatewaydev`, or empty) and `vif`, and here also
/// `XENSTORED_PATH`, so xenstore-utils in the script reach the local hypervisor's xenstore.
/// libxl always names `vif` vifDOMID.DEVID (Xen's vif-common.sh then renames the interface
/// to `vifname`); here `vif` is `vifname` when the backend has one, the name the local net
/// backend is to give its TAP, else vifDOMID.DEVID.
extension LocalToolstack {
    /// The script a vif without `script=` runs, as xl's default.
    public static let defaultVifScript = "vif-bridge"
    /// The script directory of an installed xensplit.
    public static let installedScriptDirectory = "/etc/xensplit/scripts"

    /// Where scripts named without a path are found, when no directory is given:
    /// `$XENSPLIT_SCRIPT_DIR`; else the nearest `scripts/hotplug` above the running
    /// executable (a build inside the repository, `<repo>/.build/<config>/xensplit`); else
    /// the source tree this library was built from (a `--scratch-path` build outside the
    /// repository), if it still has `scripts/hotplug`; else ``installedScriptDirectory``.
    public static func defaultScriptDirectory(environment: [String: String] = ProcessInfo.processInfo.environment,
                                              executable: String? = nil) -> String {
        if let dir = environment["XENSPLIT_SCRIPT_DIR"], !dir.isEmpty { return dir }
        let fm = FileManager.default
        var isDirectory: ObjCBool = false
        func hasScripts(_ root: URL) -> String? {
            let dir = root.appendingPathComponent("scripts/hotplug").path
            return fm.fileExists(atPath: dir, isDirectory: &isDirectory) && isDirectory.boolValue ? dir : nil
        }
        let running = executable ?? (try? fm.destinationOfSymbolicLink(atPath: "/proc/self/exe"))
        if let running {
            var dir = URL(fileURLWithPath: running).resolvingSymlinksInPath().deletingLastPathComponent()
            while dir.path != "/" {
                if let found = hasScripts(dir) { return found }
                dir = dir.deletingLastPathComponent()
            }
        }
        // #filePath is <repo>/Sources/XenLocal/<this file>.
        let source = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        return hasScripts(source) ?? installedScriptDirectory
    }

    /// A vif's script as libxl writes it to the backend: a path as given, a name joined to
    /// the script directory (libxl__abs_path).
    public func scriptPath(for nic: VifSpec) -> String {
        let script = nic.script ?? Self.defaultVifScript
        return script.hasPrefix("/") ? script : scriptDirectory + "/" + script
    }

    /// Refuses, before anything is created, a vif whose script is not an executable file.
    func checkScripts(_ nics: [VifSpec]) throws(DeviceSpecError) {
        for nic in nics {
            let path = scriptPath(for: nic)
            var st = stat()
            guard stat(path, &st) == 0, st.st_mode & S_IFMT == S_IFREG, access(path, X_OK) == 0 else {
                throw .scriptNotExecutable(device: "vif devid \(nic.devid.map(String.init) ?? "-")", script: path)
            }
        }
    }

    static func vifName(domain: DomainID, devid: UInt32) -> String { "vif \(domain)/\(devid)" }

    /// libxl's connect half of `device_hotplug` for a vif whose nodes are written: waits for
    /// the backend's InitWait (the net backend has made the TAP by then), then runs the
    /// script `online`. A backend already further on (Connected) is accepted; one that
    /// closes, or whose directory goes, fails at once.
    func plugVif(domain: DomainID, devid: UInt32, store: XenStoreClient) async throws {
        let device = Self.vifName(domain: domain, devid: devid)
        let backend = Self.backendPath(kind: "vif", frontend: domain, device: devid)
        let reached = try await Self.waitForState(backend + "/state", store: store, timeout: timeouts.initWait) { state in
            guard let state else { return true }
            return (Int(state) ?? 0) >= 2
        }
        switch reached {
        case let .timedOut(last):
            throw DeviceSpecError.backendTimedOut(device: device, wanted: "InitWait (2)", timeout: timeouts.initWait,
                                                  state: last)
        case let .reached(state):
            guard let state, let n = Int(state), (2...4).contains(n) else { throw DeviceSpecError.backendClosed(device: device, state: state) }
        }
        try await runScript(domain: domain, devid: devid, action: "online", store: store)
        logger.info("\(device): hotplug script online done")
    }

    /// libxl's remove half for a vif: `online` 0, the backend told to close (state Closing,
    /// which the frontend sees) and waited for until Closed, then the script run `offline`
    /// (under ``HotplugPolicy/run``). A backend that never left Initialising, is gone or
    /// does not close in time is logged and not waited for further. The nodes stay; the
    /// caller removes them.
    func unplugVif(domain: DomainID, devid: UInt32, hotplug: HotplugPolicy, store: XenStoreClient) async throws {
        let device = Self.vifName(domain: domain, devid: devid)
        let backend = Self.backendPath(kind: "vif", frontend: domain, device: devid)
        guard let state = try await Self.readOptional(backend + "/state", store) else {
            logger.info("\(device): backend directory already gone: no offline script to run")
            return
        }
        let wasServed = (2...4).contains(Int(state) ?? 0)
        try await store.withTransaction { tx in
            try await tx.write(backend + "/online", "0")
            if wasServed { try await tx.write(backend + "/state", "5") }
        }
        if state == "6" {
            logger.info("\(device): backend already Closed")
        } else if !wasServed {
            logger.info("\(device): backend in state \(state), never served: not waiting for Closed")
        } else {
            let closed = try await Self.waitForState(backend + "/state", store: store, timeout: timeouts.close) { $0 == nil || $0 == "6" }
            switch closed {
            case .reached(nil): logger.info("\(device): backend directory went while closing")
            case .reached: logger.info("\(device): backend Closed")
            case let .timedOut(last):
                logger.warning("\(device): backend not Closed within \(timeouts.close) (state \(last ?? "absent")): running offline anyway")
            }
        }
        guard hotplug == .run else { return }
        try await runScript(domain: domain, devid: devid, action: "offline", store: store)
        logger.info("\(device): hotplug script offline done")
    }

    /// Runs the backend's `script` with `action`, failing with what the script said.
    func runScript(domain: DomainID, devid: UInt32, action: String, store: XenStoreClient) async throws {
        let device = Self.vifName(domain: domain, devid: devid)
        let backend = Self.backendPath(kind: "vif", frontend: domain, device: devid)
        guard let script = try await Self.readOptional(backend + "/script", store) else {
            logger.info("\(device): no script key in the backend: no hotplug script to run \(action)")
            return
        }
        var environment = ProcessInfo.processInfo.environment
        let variables: [String: String] = [
            "script": script,
            "XENBUS_TYPE": "vif",
            "XENBUS_PATH": "backend/vif/\(domain)/\(devid)",
            "XENBUS_BASE_PATH": "backend",
            "netdev": try await Self.readOptional(backend + "/gatewaydev", store) ?? "",
            "vif": try await Self.readOptional(backend + "/vifname", store) ?? "vif\(domain).\(devid)",
            "XENSTORED_PATH": platform.xenStoreSocketPath,
        ]
        environment.merge(variables) { $1 }
        let run: HotplugScriptRun
        do {
            run = try await HotplugScriptRun.run(script, arguments: [action, "type_if=vif"], environment: environment,
                                                 timeout: timeouts.script, networkNamespace: scriptNetworkNamespace)
        } catch {
            throw DeviceSpecError.scriptSpawnFailed(device: device, script: script, errno: error.errno)
        }
        switch run.outcome {
        case .exited(0):
            return
        case .timedOut:
            throw DeviceSpecError.scriptTimedOut(device: device, script: script, action: action,
                                                 timeout: timeouts.script, stderr: run.stderr)
        case let .exited(status):
            throw DeviceSpecError.scriptFailed(device: device, script: script, action: action, exit: "exit status \(status)",
                                               stderr: run.stderr, hotplugError: try? await Self.readOptional(backend + "/hotplug-error", store))
        case let .signalled(signal):
            throw DeviceSpecError.scriptFailed(device: device, script: script, action: action, exit: "killed by signal \(signal)",
                                               stderr: run.stderr, hotplugError: try? await Self.readOptional(backend + "/hotplug-error", store))
        }
    }

    /// What a wait for a backend's `state` saw.
    enum StateWait: Equatable {
        /// The state the wait stopped at (nil: the node is absent).
        case reached(String?)
        /// The timeout passed; the last state read (nil: absent).
        case timedOut(String?)
    }

    /// Reads `path` on every watch event until `done` accepts its value, or `timeout`
    /// passes: the decision rests on the node's current value, never on the events.
    static func waitForState(_ path: String, store: XenStoreClient, timeout: Duration,
                             until done: @escaping @Sendable (String?) -> Bool) async throws -> StateWait {
        let watch = try await store.watch(path)
        let outcome: StateWait? = try await withThrowingTaskGroup(of: StateWait?.self) { group in
            group.addTask {
                // The first event is the watch's initial one, so the present value is read at once.
                for await _ in watch {
                    let value = try await readOptional(path, store)
                    if done(value) { return .reached(value) }
                }
                return nil
            }
            group.addTask {
                try await Task.sleep(for: timeout)
                return .timedOut(nil)
            }
            defer { group.cancelAll() }
            return try await group.next() ?? nil
        }
        try? await watch.cancel()
        if case let .reached(value)? = outcome { return .reached(value) }
        return .timedOut(try await readOptional(path, store))
    }

    /// The node's value, nil when it does not exist.
    static func readOptional(_ path: String, _ store: XenStoreClient) async throws(XenStoreError) -> String? {
        do {
            return try await store.readString(path)
        } catch .daemon(.enoent) {
            return nil
        }
    }
}
