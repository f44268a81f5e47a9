import Logging
import Synchronization
import Testing
import XenBus
import XenDevice
import XenPlatform
import XenStore
import XenTesting

let quiet: Logger = {
    var logger = Logger(label: "xendevice-tests")
    logger.logLevel = .critical
    return logger
}()

/// A device with no data path: advertises one key, connects to any `ring-ref`, counts what
/// the daemon asks of it, and can report a violation as a real device's queue would.
final class CountingDevice: BackendDevice {
    struct Counts {
        var connects: [UInt32] = []
        var disconnects = 0
        var housekeeping = 0
        var releases = 0
    }

    let counts = Mutex(Counts())
    let report: @Sendable (String) -> Void

    init(report: @escaping @Sendable (String) -> Void) { self.report = report }

    var isConnected: Bool { counts.withLock { $0.connects.count > $0.disconnects } }

    func features(for paths: XenbusDevicePaths) async throws -> XenbusKeys { ["feature-test": "1"] }

    func readFrontend(_ frontend: XenbusNodeReader, paths: XenbusDevicePaths) async throws -> UInt32 {
        try await frontend.unsigned("ring-ref", max: 1000)
    }

    func connect(_ ref: UInt32, paths: XenbusDevicePaths) async throws -> XenbusKeys {
        counts.withLock { $0.connects.append(ref) }
        return ["connected-ref": String(ref)]
    }

    func disconnect(paths: XenbusDevicePaths, reason: String) async { counts.withLock { $0.disconnects += 1 } }

    func housekeeping(store: XenStoreClient) async { counts.withLock { $0.housekeeping += 1 } }

    func release() { counts.withLock { $0.releases += 1 } }
}

func state(_ store: XenStoreClient, _ path: String) async -> String? { try? await store.readString(path + "/state") }

@Suite("XenDevice's backend daemon, for any device type")
struct BackendDaemonTests {
    let hypervisor: InProcessHypervisor
    let toolstack: XenStoreClient

    init() throws {
        hypervisor = try InProcessHypervisor()
        toolstack = try hypervisor.connectXenStore(as: .tool)
    }

    func daemon() throws -> BackendDaemon<CountingDevice> {
        BackendDaemon(store: try hypervisor.platform(for: .dom0).connectXenStore(), backendID: .dom0, type: "tst",
                      housekeepingInterval: .milliseconds(20), logger: quiet) { _, report in
            CountingDevice(report: report)
        }
    }

    /// A device of a new guest, and the guest's connection, with the frontend's keys written
    /// by hand (the frontend half is not under test).
    func guestDevice(_ devid: String) async throws -> (XenbusDevicePaths, XenStoreClient) {
        let guest = try hypervisor.createDomain(name: "g\(devid)")
        let paths = try XenbusDevicePaths(type: "tst", devid: devid, backendID: .dom0, frontendID: guest)
        try await XenbusToolstack.addDevice(paths, store: toolstack)
        return (paths, try hypervisor.platform(for: guest).connectXenStore())
    }

    func handshake(_ paths: XenbusDevicePaths, _ guest: XenStoreClient, ref: UInt32) async throws {
        try await eventually("backend InitWait") { await state(toolstack, paths.backend) == "2" }
        try await guest.write(paths.frontend + "/ring-ref", String(ref))
        try await guest.write(paths.frontend + "/state", "3")
        try await eventually("backend Connected") { await state(toolstack, paths.backend) == "4" }
        try await guest.write(paths.frontend + "/state", "4")
    }

    @Test func servesEveryDeviceRunsHousekeepingAndClosesAndReleasesEachOnStop() async throws {
        let daemon = try daemon()
        let run = Task { try await daemon.run() }
        let (a, guestA) = try await guestDevice("1")
        let (b, guestB) = try await guestDevice("2")
        try await handshake(a, guestA, ref: 11)
        try await handshake(b, guestB, ref: 22)
        let devices = daemon.running
        #expect(Set(devices.keys) == [a.backend, b.backend])
        #expect(devices[a.backend]?.counts.withLock { $0.connects } == [11])
        try await eventually("housekeeping ran") { devices.values.allSatisfy { $0.counts.withLock { $0.housekeeping } > 0 } }

        daemon.stop()
        try await run.value
        #expect(await state(toolstack, a.backend) == "6")
        #expect(await state(toolstack, b.backend) == "6")
        for device in devices.values {
            #expect(device.counts.withLock { $0.disconnects } == 1)
            #expect(device.counts.withLock { $0.releases } == 1)
        }
    }

    @Test func aReportedViolationRefusesOnlyThatDeviceUntilItsFrontendStartsOver() async throws {
        let daemon = try daemon()
        let run = Task { try await daemon.run() }
        let (a, guestA) = try await guestDevice("3")
        let (b, guestB) = try await guestDevice("4")
        try await handshake(a, guestA, ref: 33)
        try await handshake(b, guestB, ref: 44)
        let bad = try #require(daemon.running[a.backend])
        bad.report("queue 0: req_prod overran the ring")
        try await eventually("the reporting device is refused") { await state(toolstack, a.backend) == "5" }
        let error = try await toolstack.readString("/local/domain/0/error/backend/tst/\(a.frontendID)/3/error")
        #expect(error.hasPrefix("71 "), "error node: \(error)")
        #expect(await state(toolstack, b.backend) == "4", "the other device is untouched")
        // The same keys again are not a new start; Initialising is.
        try await guestA.write(a.frontend + "/state", "3")
        try await Task.sleep(for: .milliseconds(200))
        #expect(await state(toolstack, a.backend) == "5")
        try await guestA.write(a.frontend + "/state", "1")
        try await handshake(a, guestA, ref: 35)
        #expect(bad.counts.withLock { $0.connects } == [33, 35])
        daemon.stop()
        try await run.value
    }

    @Test func aNodeRemovedAndAddedAgainIsServedByOneDriver() async throws {
        let daemon = try daemon()
        let run = Task { try await daemon.run() }
        let (a, guestA) = try await guestDevice("5")
        try await handshake(a, guestA, ref: 55)
        let first = try #require(daemon.running[a.backend])
        try await toolstack.rm(a.backend)
        try await XenbusToolstack.addDevice(a, store: toolstack)
        try await guestA.write(a.frontend + "/state", "1")
        try await handshake(a, guestA, ref: 56)
        // Either the old driver saw the node replaced and serves it, or it stopped and a
        // new one does: never both.
        let now = try #require(daemon.running[a.backend])
        let served = [first, now].reduce(into: Set<ObjectIdentifier>()) { set, device in
            if device.counts.withLock({ $0.connects.contains(56) }) { set.insert(ObjectIdentifier(device)) }
        }
        #expect(served.count == 1)
        #expect(now.counts.withLock { $0.connects.last } == 56)
        if now !== first { #expect(first.counts.withLock { $0.releases } == 1) }
        daemon.stop()
        try await run.value
        #expect(now.counts.withLock { $0.releases } == 1)
    }
}
