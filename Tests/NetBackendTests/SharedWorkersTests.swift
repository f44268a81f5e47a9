import Blkif
import BlockBackend
import Foundation
import Glibc
import NetBackend
import Netif
import Tap
import Testing
import URing
import XenDevice
import XenLocal
import XenPlatform
import XenTesting

/// `xensplit backend --devices vbd,vif` as a library: blkback and netback on one worker.
@Suite("block and net devices on one set of workers", .serialized)
struct SharedWorkersTests {
    @Test("a guest's disk and vif are served by the same worker: the disk's data and the vif's echo both go through")
    func diskAndVifOnOneWorker() async throws {
        let capacity = max(BlkbackDaemon.engineCapacity(.init()), NetbackDaemon.engineCapacity(.init()))
        let factory = try BlockIOEngineFactory(kind: .uring, configuration: .init(queueDepth: 64, capacity: capacity))
        let shared = try BackendPlacement(starting: 1, factory: factory, threadName: "backend-worker", logger: netLogger)
        defer { shared.stopAll() }
        let world = try NetWorld(sharedWorkers: shared)
        let blkback = try BlkbackDaemon(platform: world.dom0, configuration: .init(workers: 1), sharing: shared,
                                        logger: netLogger)
        let blkTask = Task { try await blkback.run() }
        do {
            let image = world.directory + "/disk.img"
            let fd = open(image, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
            #expect(fd >= 0 && ftruncate(fd, 4 << 20) == 0)
            close(fd)
            let domain = try await world.toolstack.createDomain(
                name: "g", disks: [try DiskSpec(parsing: "vdev=xvda,access=rw,target=\(image)")],
                nics: [try VifSpec(parsing: "mac=\(NetbackDataTests.guestMAC),bridge=none")], hotplug: .none)
            let guest = try LocalPlatform(stateDirectory: world.directory, domain: "g")

            // The vif: an echo through dom0's kernel.
            let net = try RawNetfront(guest, domain: domain)
            try await world.plug(domain: domain, address: "198.18.5.1", guestAddress: "198.18.5.2",
                                 guestMAC: NetbackDataTests.guestMAC)
            var features = NetifFrontendFeatures()
            features.requestRxCopy = true
            try await net.connect(features: features)
            // The kernel sends to the vif only once its link watch saw the carrier.
            try await world.waitUntilUp(domain)

            // The disk: a write read back.
            let disk = try BlkifRingDriver(platform: guest,
                                           frontendPath: LocalToolstack.frontendPath(kind: "vbd", frontend: domain, device: 51712),
                                           logger: netLogger)
            _ = try await disk.connected()
            #expect(shared.counts == [2], "one vbd queue and one vif queue on the one worker")
            let written = (0..<4096).map { UInt8(truncatingIfNeeded: $0 &* 13) }
            #expect(try await offThePool { try disk.write(written, sector: 8) } == .okay)
            let (status, read) = try await offThePool { try disk.read(sector: 8, count: 4096) }
            #expect(status == .okay && read == written)

            let icmp = TestFrames.echoRequest(identifier: 7, sequence: 1, payload: Array(repeating: 0x42, count: 32))
            let frame = EthernetAddress.netbackVif.octets + NetbackDataTests.guestMACBytes + TestFrames.etherTypeIPv4
                + TestFrames.ipv4(from: NetbackDataTests.guestAddress, to: NetbackDataTests.dom0Address, protocol: 1,
                                  payloadLength: icmp.count) + icmp
            try net.send(frame, id: 1)
            #expect(try await net.txResponses(1) == [NetifTxResponse(id: 1, status: .okay)])
            var replied = false
            for _ in 0..<16 where !replied {
                let (_, bytes) = try await net.receive()
                replied = bytes.count == frame.count && bytes[23] == 1 && bytes[34] == 0
            }
            #expect(replied, "dom0's kernel answered the echo")
            #expect(await disk.close(grantWaitSeconds: 20) == 0)
        } catch {
            blkback.stop()
            _ = await blkTask.result
            await world.stop()
            throw error
        }
        blkback.stop()
        _ = await blkTask.result
        await world.stop()
    }
}
