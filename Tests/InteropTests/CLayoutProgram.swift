import Foundation
import XenTesting

/// Tests/InteropTests/C/layout_check.c built for one ABI with the system C compiler and
/// run; its output parsed. Built once per ABI per test run.
struct CLayoutOutput: Sendable {
    /// (family, abi, struct, field, offset, size)
    var layouts: [[String]] = []
    /// (family, name, value)
    var constants: [[String]] = []
    /// (family, abi, name, hex)
    var goldens: [[String]] = []

    static let m32 = Result { try CLayoutOutput(flag: "-m32") }
    static let m64 = Result { try CLayoutOutput(flag: "-m64") }

    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    init(flag: String) throws {
        let source = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("C").appendingPathComponent("layout_check.c")
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("xensplit-layout-\(getpid())-\(flag)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let binary = directory.appendingPathComponent("layout_check").path

        let compile = try TestCommand.run("/usr/bin/env", ["cc", "-std=c11", "-Wall", "-Wextra", "-Werror", flag,
                                                       "-o", binary, source.path])
        if compile.status == 127 {
            throw Failure(description: "no C compiler: `cc` is not on PATH (scripts/setup.sh installs gcc and gcc-multilib)")
        }
        guard compile.status == 0 else {
            let hint = flag == "-m32" ? " (-m32 needs gcc-multilib, which scripts/setup.sh installs)" : ""
            throw Failure(description: "cc \(flag) failed\(hint):\n\(compile.stderr)")
        }
        let run = try TestCommand.run(binary, [])
        guard run.status == 0 else { throw Failure(description: "layout_check \(flag) exited \(run.status): \(run.stderr)") }
        for line in run.stdout.split(separator: "\n") {
            let fields = line.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
            switch fields.first {
            case "layout": layouts.append(Array(fields.dropFirst()))
            case "const": constants.append(Array(fields.dropFirst()))
            case "golden": goldens.append(Array(fields.dropFirst()))
            default: throw Failure(description: "unexpected line from layout_check: \(line)")
            }
        }
    }
}
