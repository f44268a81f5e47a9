import Foundation
import Glibc
import Testing

/// Real NBD clients moving data through the blkfront export to our backend and back:
/// nbdcopy (4 connections, many requests each), fio verify jobs at several queue depths
/// and block-size mixes, qemu-io trim, qemu-img convert of a qcow2.
@Suite("NBD clients through a blkfront disk", .serialized)
struct NBDBlockFrontendToolTests {
    static let diskBytes = NBDBlockFrontendExportTests.diskBytes

    @Test(.enabled(if: toolExists("nbdcopy"), "nbdcopy (libnbd-bin) is not installed"))
    func nbdcopyOntoTheDiskAndBack() async throws {
        try await NBDBlockFrontendExportTests.withExports([("xvda", "rw")]) { world, exports in
            let source = pattern(Self.diskBytes, seed: 0xC0B1)
            let input = world.directory + "/in.raw"
            let output = world.directory + "/out.raw"
            try Data(source).write(to: URL(fileURLWithPath: input))
            let uri = exports[0].address.uri
            let upload = try await runTool(["nbdcopy", "--flush", input, uri], in: world.directory)
            #expect(upload.status == 0, "\(upload.output)")
            let download = try await runTool(["nbdcopy", uri, output], in: world.directory)
            #expect(download.status == 0, "\(download.output)")
            #expect([UInt8](try Data(contentsOf: URL(fileURLWithPath: output))) == source, "the disk read back as written")
            #expect([UInt8](try Data(contentsOf: URL(fileURLWithPath: exports[0].image))) == source,
                    "the backend's image file holds it")
        }
    }

    /// fio writes with crc32c checksums in every block, then reads everything back and
    /// verifies it, at queue depths 1, 8 and 32, sequential and random, with a mix of
    /// block sizes from 512 bytes to 1 MiB (larger than one blkif request, so split).
    @Test(.enabled(if: toolExists("fio"), "fio is not installed"))
    func fioVerifiesMixedBlockSizesAndQueueDepths() async throws {
        let engines = try await runTool(["fio", "--enghelp"], in: "/tmp")
        try #require(engines.output.split(separator: "\n").contains { $0.trimmingCharacters(in: .whitespaces) == "nbd" },
                     "this fio has no nbd engine")
        try await NBDBlockFrontendExportTests.withExports([("xvda", "rw")]) { world, exports in
            let jobs: [(rw: String, depth: Int, bssplit: String)] = [
                ("write", 1, "512/10:4k/50:64k/30:1m/10"),
                ("randwrite", 8, "4k/40:8k/20:32k/20:128k/10:1m/10"),
                ("randwrite", 32, "512/5:4k/60:16k/15:44k/10:256k/10"),
            ]
            for (index, job) in jobs.enumerated() {
                let result = try await runTool(["fio", "--name=verify-\(index)", "--ioengine=nbd", "--uri=\(exports[0].address.uri)",
                                                "--rw=\(job.rw)", "--bssplit=\(job.bssplit)", "--blockalign=512",
                                                "--size=\(Self.diskBytes)", "--iodepth=\(job.depth)",
                                                "--verify=crc32c", "--do_verify=1", "--verify_fatal=1",
                                                "--verify_state_save=0", "--randseed=\(2026 + index)",
                                                "--output-format=terse", "--terse-version=3"], in: world.directory)
                #expect(result.status == 0, "\(job): \(result.output)")
                // Terse v3: field 5 is the job's error code; 0 means every verify passed.
                let fields = result.output.split(separator: "\n").last { $0.hasPrefix("3;") }?
                    .split(separator: ";", omittingEmptySubsequences: false)
                #expect(fields.map { $0.count > 5 && $0[4] == "0" } == true, "\(job): \(result.output)")
            }
        }
    }

    /// A trimmed range reads back as zeroes through the export (our backend punches a
    /// hole for BLKIF_OP_DISCARD), and the data around it stays.
    @Test(.enabled(if: toolExists("qemu-io"), "qemu-io (qemu-utils) is not installed"))
    func trimThenReadZeroes() async throws {
        try await NBDBlockFrontendExportTests.withExports([("xvda", "rw")]) { world, exports in
            #expect(exports[0].export.features.contains(.trim))
            let io = try await runTool(["qemu-io", "-f", "raw",
                                        "-c", "write -P 0x77 0 1m",
                                        "-c", "discard 256k 512k",
                                        "-c", "read -P 0 256k 512k",
                                        "-c", "read -P 0x77 0 256k",
                                        "-c", "read -P 0x77 768k 256k",
                                        exports[0].address.uri], in: world.directory)
            #expect(io.status == 0, "\(io.output)")
            #expect(!io.output.contains("Pattern verification failed") && !io.output.contains("error"), "\(io.output)")
            #expect(io.output.components(separatedBy: "read ").count - 1 == 3, "three reads done: \(io.output)")
        }
    }

    /// A qcow2 image made here (data, a zeroed cluster, unallocated space) converted onto
    /// the disk, then compared back by qemu-img.
    @Test(.enabled(if: toolExists("qemu-img") && toolExists("qemu-io"), "qemu-utils is not installed"))
    func qemuImgConvertsAQcow2OntoTheDisk() async throws {
        try await NBDBlockFrontendExportTests.withExports([("xvda", "rw")]) { world, exports in
            // Old data everywhere, so the unallocated parts must really be zeroed.
            try overwrite(exports[0].image, with: pattern(Self.diskBytes, seed: 0x0C0))
            let image = world.directory + "/source.qcow2"
            let create = try await runTool(["qemu-img", "create", "-q", "-f", "qcow2", image, "\(Self.diskBytes)"],
                                           in: world.directory)
            #expect(create.status == 0, "\(create.output)")
            let fill = try await runTool(["qemu-io", "-f", "qcow2",
                                          "-c", "write -P 0x5a 0 1m", "-c", "write -P 0xc3 3m 320k",
                                          "-c", "write -z 4m 64k", "-c", "write -P 0x01 7m 1m", image],
                                         in: world.directory)
            #expect(fill.status == 0, "\(fill.output)")
            let uri = exports[0].address.uri
            let convert = try await runTool(["qemu-img", "convert", "-n", "-f", "qcow2", "-O", "raw", image, uri],
                                            in: world.directory)
            #expect(convert.status == 0, "\(convert.output)")
            let compare = try await runTool(["qemu-img", "compare", "-f", "qcow2", "-F", "raw", image, uri],
                                            in: world.directory)
            #expect(compare.status == 0 && compare.output.contains("identical"), "\(compare.output)")
            var expected = [UInt8](repeating: 0, count: Self.diskBytes)
            expected.replaceSubrange(0 ..< (1 << 20), with: [UInt8](repeating: 0x5A, count: 1 << 20))
            expected.replaceSubrange((3 << 20) ..< ((3 << 20) + (320 << 10)), with: [UInt8](repeating: 0xC3, count: 320 << 10))
            expected.replaceSubrange((7 << 20) ..< (8 << 20), with: [UInt8](repeating: 0x01, count: 1 << 20))
            #expect([UInt8](try Data(contentsOf: URL(fileURLWithPath: exports[0].image))) == expected)
        }
    }
}
