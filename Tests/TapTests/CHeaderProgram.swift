import Foundation
import XenTesting

/// Tests/TapTests/C/vnet_header_check.c built with the system C compiler against the
/// installed linux headers and run once per test run; its output split into fields.
struct CHeaderOutput: Sendable {
    /// Each line's tab-separated fields.
    var lines: [[String]]

    static let shared = Result { try CHeaderOutput() }

    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    /// The lines whose first field is `kind`, without it.
    func rows(_ kind: String) -> [[String]] { lines.filter { $0.first == kind }.map { Array($0.dropFirst()) } }

    init() throws {
        let source = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("C").appendingPathComponent("vnet_header_check.c")
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("xensplit-vnet-\(getpid())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let binary = directory.appendingPathComponent("vnet_header_check").path
        let compile = try TestCommand.run("/usr/bin/env", ["cc", "-std=c11", "-Wall", "-Wextra", "-Werror", "-o", binary, source.path])
        guard compile.status == 0 else { throw Failure(description: "cc failed (\(compile.status)):\n\(compile.stderr)") }
        let run = try TestCommand.run(binary, [])
        guard run.status == 0 else { throw Failure(description: "vnet_header_check exited \(run.status): \(run.stderr)") }
        lines = run.stdout.split(separator: "\n").map { $0.split(separator: "\t").map(String.init) }
    }
}
