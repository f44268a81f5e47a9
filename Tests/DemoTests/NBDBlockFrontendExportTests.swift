import BlockFrontend
import Foundation
import Glibc
@testable import NBD
import Testing
import XenLocal
import XenPlatform

/// NBDBlockFrontendExport over a BlockFrontend attached, through the local hypervisor,
/// to our block backend; driven by the real NBD clients (nbdinfo, qemu-img, qemu-io).
@Suite("NBD export of a blkfront disk", .serialized)
struct NBDBlockFrontendExportTests {
    static let diskBytes = 8 << 20

    /// A world with domain `guest` holding `disks` (vdev, access) images of `diskBytes`,
    /// each attached as a frontend and exported on its own Unix socket.
    static func withExports(_ disks: [(vdev: String, access: String)],
                            _ body: (BlockWorld, [(image: String, address: NBDAddress, export: NBDBlockFrontendExport)]) async throws -> Void) async throws {
        let world = try BlockWorld()
        var frontends: [BlockFrontend] = []
        var servers: [NBDServer<NBDBlockFrontendExport>] = []
        do {
            var specs: [DiskSpec] = []
            var images: [String] = []
            for disk in disks {
                let image = try world.image("\(disk.vdev).img", bytes: diskBytes)
                images.append(image)
                specs.append(try DiskSpec(parsing: "format=raw, vdev=\(disk.vdev), access=\(disk.access), target=\(image)"))
            }
            _ = try await world.toolstack.createDomain(name: "guest", disks: specs)
            let guest = try LocalPlatform(stateDirectory: world.directory, domain: "guest")
            var exports: [(String, NBDAddress, NBDBlockFrontendExport)] = []
            for (spec, image) in zip(specs, images) {
                let frontend = try BlockFrontend(platform: guest, devid: "\(spec.vdev.number)", logger: quietLogger)
                frontends.append(frontend)
                let export = try await NBDBlockFrontendExport.connecting(frontend, logger: quietLogger)
                let server = NBDServer(export: export)
                servers.append(server)
                let address = try server.start(listeningOn: .unix(path: world.directory + "/\(spec.vdev.name).sock"))
                exports.append((image, address, export))
            }
            try await body(world, exports)
        } catch {
            for server in servers { server.stop() }
            for frontend in frontends { await frontend.close() }
            try? await world.stop()
            throw error
        }
        for server in servers { server.stop() }
        for frontend in frontends { #expect(await frontend.close() == 0, "every grant given back") }
        try await world.toolstack.destroy(name: "guest")
        try await world.stop()
    }

    @Test(.enabled(if: toolExists("nbdinfo"), "nbdinfo (libnbd-bin) is not installed"))
    func nbdinfoSeesTheDiskTheBackendDescribed() async throws {
        try await Self.withExports([("xvda", "rw"), ("xvdb", "ro")]) { world, exports in
            let rw = try await runTool(["nbdinfo", "--json", exports[0].address.uri], in: world.directory)
            #expect(rw.status == 0, "\(rw.output)")
            let json = try JSONSerialization.jsonObject(with: Data(rw.output.utf8)) as? [String: Any]
            let export = (json?["exports"] as? [[String: Any]])?.first
            #expect(export?["export-size"] as? Int == Self.diskBytes, "\(rw.output)")
            #expect(export?["block_size_minimum"] as? Int == 512, "\(rw.output)")
            #expect(export?["block_size_preferred"] as? Int == 4096, "\(rw.output)")
            #expect(export?["is_read_only"] as? Bool == false, "\(rw.output)")
            #expect(export?["can_flush"] as? Bool == true && export?["can_fua"] as? Bool == true, "\(rw.output)")
            #expect(export?["can_trim"] as? Bool == exports[0].export.disk.backend.discard, "\(rw.output)")
            #expect(export?["can_zero"] as? Bool == true && export?["can_multi_conn"] as? Bool == true, "\(rw.output)")

            let ro = try await runTool(["nbdinfo", "--json", exports[1].address.uri], in: world.directory)
            #expect(ro.status == 0, "\(ro.output)")
            let roJSON = try JSONSerialization.jsonObject(with: Data(ro.output.utf8)) as? [String: Any]
            let roExport = (roJSON?["exports"] as? [[String: Any]])?.first
            #expect(roExport?["is_read_only"] as? Bool == true, "access=ro reaches NBD as read-only: \(ro.output)")
        }
    }

    @Test(.enabled(if: toolExists("qemu-img"), "qemu-img (qemu-utils) is not installed"))
    func qemuImgConvertsOntoTheDiskAndComparesBack() async throws {
        try await Self.withExports([("xvda", "rw")]) { world, exports in
            let source = world.directory + "/source.raw"
            // Data, a hole and data again, so convert writes both payloads and zeroes.
            var bytes = pattern(Self.diskBytes, seed: 0xB1F)
            bytes.replaceSubrange((2 << 20)..<(3 << 20), with: [UInt8](repeating: 0, count: 1 << 20))
            try Data(bytes).write(to: URL(fileURLWithPath: source))
            // Something to overwrite: convert must really zero the hole on the disk.
            try overwrite(exports[0].image, with: pattern(Self.diskBytes, seed: 0xDEAD))

            let uri = exports[0].address.uri
            let convert = try await runTool(["qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", source, uri],
                                            in: world.directory)
            #expect(convert.status == 0, "\(convert.output)")
            let compare = try await runTool(["qemu-img", "compare", "-f", "raw", "-F", "raw", source, uri],
                                            in: world.directory)
            #expect(compare.status == 0, "\(compare.output)")
            // And the backend's image file holds it too.
            #expect([UInt8](try Data(contentsOf: URL(fileURLWithPath: exports[0].image))) == bytes)
        }
    }

    @Test(.enabled(if: toolExists("qemu-io"), "qemu-io (qemu-utils) is not installed"))
    func writeZeroesFUAAndTrimReachTheImage() async throws {
        try await Self.withExports([("xvda", "rw")]) { world, exports in
            let before = pattern(Self.diskBytes, seed: 0x2E20)
            try overwrite(exports[0].image, with: before)
            let io = try await runTool(["qemu-io", "-f", "raw",
                                        "-c", "write -z 1m 2m",
                                        "-c", "write -f -P 0x5a 4m 64k",
                                        "-c", "write -z -u 5m 1m",
                                        "-c", "discard 6m 1m",
                                        "-c", "flush",
                                        exports[0].address.uri], in: world.directory)
            #expect(io.status == 0, "\(io.output)")
            var expected = before
            expected.replaceSubrange((1 << 20)..<(3 << 20), with: [UInt8](repeating: 0, count: 2 << 20))
            expected.replaceSubrange((4 << 20)..<((4 << 20) + 65536), with: [UInt8](repeating: 0x5a, count: 65536))
            expected.replaceSubrange((5 << 20)..<(6 << 20), with: [UInt8](repeating: 0, count: 1 << 20))
            // NBD leaves trimmed bytes unspecified; our backend punches a hole, so they read as zero.
            #expect(exports[0].export.features.contains(.trim), "a file-backed vbd offers feature-discard")
            expected.replaceSubrange((6 << 20)..<(7 << 20), with: [UInt8](repeating: 0, count: 1 << 20))
            #expect([UInt8](try Data(contentsOf: URL(fileURLWithPath: exports[0].image))) == expected)
        }
    }

    @Test(.enabled(if: toolExists("qemu-io"), "qemu-io (qemu-utils) is not installed"))
    func aClosedFrontendFailsRequestsWithEIORatherThanHanging() async throws {
        try await Self.withExports([("xvda", "rw")]) { world, exports in
            #expect(await exports[0].export.frontend.close() == 0)
            let io = try await runTool(["qemu-io", "-f", "raw", "-c", "read 0 64k", exports[0].address.uri],
                                       in: world.directory)
            #expect(io.output.contains("Input/output error"), "\(io.output)")
        }
    }

    @Test func frontendErrorsMapOntoTheErrnoNBDClientsUnderstand() {
        #expect(NBDBlockFrontendExport.errno(for: BlockFrontendError.readOnly(operation: "write", sector: 0, count: 1)) == EPERM)
        #expect(NBDBlockFrontendExport.errno(for: BlockFrontendError.invalidRange(
            operation: "read", sector: 9, count: 1, diskSectors: 8, alignment: 1)) == EINVAL)
        #expect(NBDBlockFrontendExport.errno(for: BlockFrontendError.notSupported(operation: "discard", sector: 0, count: 8)) == EOPNOTSUPP)
        #expect(NBDBlockFrontendExport.errno(for: BlockFrontendError.featureNotOffered(operation: "flush", feature: "feature-flush-cache")) == EOPNOTSUPP)
        #expect(NBDBlockFrontendExport.errno(for: BlockFrontendError.ioError(operation: "read", sector: 0, count: 8)) == EIO)
        #expect(NBDBlockFrontendExport.errno(for: BlockFrontendError.closed) == EIO)
    }
}
