import Foundation
import Glibc
import SystemCalls
import Testing
@testable import NBD

/// Whether `tool` is an executable on PATH (Debian: libnbd-bin, qemu-utils, fio).
func toolExists(_ tool: String) -> Bool {
    let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
    return path.split(separator: ":").contains { access("\($0)/\(tool)", X_OK) == 0 }
}

/// Runs `arguments` to completion; returns its status and combined output.
func runTool(_ arguments: [String]) throws -> (status: Int32, output: String) {
    let run = try ChildProcess.run("/usr/bin/env", arguments, combined: true)
    return (run.status.code, run.standardOutput)
}

/// Creates `path` holding `bytes`.
func writeFile(_ path: String, _ bytes: [UInt8]) throws {
    try Data(bytes).write(to: URL(fileURLWithPath: path))
}

func readFile(_ path: String) throws -> [UInt8] {
    [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
}

/// The real NBD clients from Debian against our server, each on its own socket.
@Suite struct NBDToolTests {
    static let exportSize = 16 << 20

    /// A file-backed export in `directory` filled with `contents` (zero-extended).
    static func fileExport(in directory: TemporaryDirectory, contents: [UInt8] = []) throws -> NBDFileExport {
        let path = directory.path + "/export.img"
        try writeFile(path, contents + [UInt8](repeating: 0, count: exportSize - contents.count))
        return try NBDFileExport(path: path, blockSizes: try NBDBlockSizes(minimum: 512, preferred: 4096, maximum: 32 << 20))
    }

    static func withFileServer(contents: [UInt8] = [], _ body: (NBDAddress, TemporaryDirectory) throws -> Void) throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let server = NBDServer(export: try fileExport(in: directory, contents: contents))
        let address = try server.start(listeningOn: .unix(path: directory.path + "/nbd.sock"))
        defer { server.stop() }
        try body(address, directory)
    }

    @Test(.enabled(if: toolExists("nbdinfo"), "nbdinfo (libnbd-bin) is not installed"))
    func nbdinfoShowsSizeAndBlockSizes() throws {
        try Self.withFileServer { address, _ in
            let (status, output) = try runTool(["nbdinfo", "--json", address.uri])
            #expect(status == 0, "\(output)")
            let json = try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Any]
            let export = (json?["exports"] as? [[String: Any]])?.first
            #expect(export?["export-size"] as? Int == Self.exportSize, "\(output)")
            #expect(export?["block_size_minimum"] as? Int == 512, "\(output)")
            #expect(export?["block_size_preferred"] as? Int == 4096, "\(output)")
            #expect(export?["block_size_maximum"] as? Int == 32 << 20, "\(output)")
            #expect(export?["can_flush"] as? Bool == true && export?["can_trim"] as? Bool == true, "\(output)")
            #expect(export?["can_zero"] as? Bool == true && export?["can_fua"] as? Bool == true, "\(output)")
            #expect(json?["structured"] as? Bool == false, "\(output)")
        }
    }

    @Test(.enabled(if: toolExists("nbdinfo"), "nbdinfo (libnbd-bin) is not installed"))
    func nbdinfoOverTCPLoopback() throws {
        let server = NBDServer(export: NBDMemoryExport(size: 1 << 20), name: "mem")
        let address = try server.start(listeningOn: .tcp(host: NBDAddress.defaultHost, port: 0))
        defer { server.stop() }
        let (status, output) = try runTool(["nbdinfo", "--size", address.uri])
        #expect(status == 0 && output.trimmingCharacters(in: .whitespacesAndNewlines) == "1048576", "\(output)")
        let list = try runTool(["nbdinfo", "--list", "--json", address.uri])
        #expect(list.status == 0 && list.output.contains("\"mem\""), "\(list.output)")
    }

    @Test(.enabled(if: toolExists("qemu-img") && toolExists("qemu-io"), "qemu-utils is not installed"))
    func qemuImgConvertAndCompare() throws {
        try Self.withFileServer { address, directory in
            let image = directory.path + "/source.qcow2"
            #expect(try runTool(["qemu-img", "create", "-q", "-f", "qcow2", image, "\(Self.exportSize)"]).status == 0)
            let fill = try runTool(["qemu-io", "-f", "qcow2",
                                    "-c", "write -P 0x5a 0 1M", "-c", "write -P 0xc3 3M 512k",
                                    "-c", "write -P 0x01 15M 1M", image])
            #expect(fill.status == 0, "\(fill.output)")
            let convert = try runTool(["qemu-img", "convert", "-n", "-f", "qcow2", "-O", "raw", image, address.uri])
            #expect(convert.status == 0, "\(convert.output)")
            let compare = try runTool(["qemu-img", "compare", "-f", "qcow2", "-F", "raw", image, address.uri])
            #expect(compare.status == 0 && compare.output.contains("identical"), "\(compare.output)")
            // And the bytes really landed in the backing file.
            let backing = try readFile(directory.path + "/export.img")
            #expect(backing[0..<(1 << 20)].allSatisfy { $0 == 0x5A })
            #expect(backing[(3 << 20)..<((3 << 20) + (512 << 10))].allSatisfy { $0 == 0xC3 })
            #expect(backing[(15 << 20)...].allSatisfy { $0 == 0x01 })
        }
    }

    @Test(.enabled(if: toolExists("nbdcopy"), "nbdcopy (libnbd-bin) is not installed"))
    func nbdcopyBothWays() throws {
        var random = SeededBytes(seed: 1234)
        let source = random.next(Self.exportSize)
        try Self.withFileServer { address, directory in
            let input = directory.path + "/in.raw"
            let output = directory.path + "/out.raw"
            try writeFile(input, source)
            let upload = try runTool(["nbdcopy", input, address.uri])
            #expect(upload.status == 0, "\(upload.output)")
            let download = try runTool(["nbdcopy", address.uri, output])
            #expect(download.status == 0, "\(download.output)")
            let sums = try runTool(["sha256sum", input, output, directory.path + "/export.img"])
            let digests = Set(sums.output.split(separator: "\n").map { $0.split(separator: " ")[0] })
            #expect(sums.status == 0 && digests.count == 1, "\(sums.output)")
            #expect(try readFile(output) == source)
        }
    }

    @Test(.enabled(if: toolExists("qemu-io"), "qemu-io (qemu-utils) is not installed"))
    func qemuIoWriteReadDiscardZero() throws {
        try Self.withFileServer { address, directory in
            let result = try runTool(["qemu-io", "-f", "raw",
                                      "-c", "write -P 0xab 0 1M", "-c", "read -P 0xab 0 1M",
                                      "-c", "write -P 0xcd -f 1M 64k", "-c", "read -P 0xcd 1M 64k",
                                      "-c", "discard 0 64k",
                                      "-c", "write -z 64k 64k", "-c", "read -P 0 64k 64k",
                                      "-c", "write -z -u 128k 64k", "-c", "read -P 0 128k 64k",
                                      "-c", "read -P 0xab 192k 64k",
                                      "-c", "flush", address.uri])
            #expect(result.status == 0, "\(result.output)")
            #expect(!result.output.contains("failed") && !result.output.contains("error"), "\(result.output)")
            #expect(result.output.components(separatedBy: "wrote ").count - 1 == 4, "\(result.output)")
            let backing = try readFile(directory.path + "/export.img")
            #expect(backing[(64 << 10)..<(192 << 10)].allSatisfy { $0 == 0 })
            #expect(backing[(192 << 10)..<(1 << 20)].allSatisfy { $0 == 0xAB })
            #expect(backing[(1 << 20)..<((1 << 20) + (64 << 10))].allSatisfy { $0 == 0xCD })
        }
    }

    @Test(.enabled(if: toolExists("fio"), "fio is not installed"))
    func fioNbdEngineVerifies() throws {
        let engines = try runTool(["fio", "--enghelp"])
        try #require(engines.output.split(separator: "\n").contains { $0.trimmingCharacters(in: .whitespaces) == "nbd" },
                     "this fio has no nbd engine")
        try Self.withFileServer { address, _ in
            let result = try runTool(["fio", "--name=nbd-verify", "--ioengine=nbd", "--uri=\(address.uri)",
                                      "--rw=randwrite", "--bs=4k", "--size=8M", "--iodepth=8",
                                      "--verify=crc32c", "--do_verify=1", "--verify_fatal=1", "--verify_state_save=0",
                                      "--randseed=2026", "--output-format=terse", "--terse-version=3"])
            #expect(result.status == 0, "\(result.output)")
            // Terse v3: field 5 is the job's error code; 0 means every verify passed.
            let fields = result.output.split(separator: "\n").last { $0.hasPrefix("3;") }?.split(separator: ";", omittingEmptySubsequences: false)
            #expect(fields.map { $0.count > 5 && $0[4] == "0" } == true, "\(result.output)")
        }
    }
}
