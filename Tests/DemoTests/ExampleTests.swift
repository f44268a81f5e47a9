import Foundation
import Testing

/// The programs in Examples/ run and succeed: they are documentation, so they must work.
@Suite("Examples")
struct ExampleTests {
    @Test("block-disk-example writes and reads back a disk through the public API")
    func blockDiskExample() async throws {
        let binary = URL(fileURLWithPath: xensplitBinary).deletingLastPathComponent()
            .appendingPathComponent("block-disk-example").path
        let log = try makeTemporaryDirectory("xensplit-example-log")
        defer { try? FileManager.default.removeItem(atPath: log) }
        let before = Set(try FileManager.default.contentsOfDirectory(atPath: "/tmp").filter { $0.hasPrefix("block-disk-example-") })
        let example = try Child(binary, [], outputPath: log + "/out.log")
        let status = await example.wait()
        #expect(status == 0, "\(example.output)")
        #expect(example.output.contains("xvda: 4 MiB, "), "\(example.output)")
        #expect(example.output.contains("read back the 262144 bytes written"), "\(example.output)")
        let after = Set(try FileManager.default.contentsOfDirectory(atPath: "/tmp").filter { $0.hasPrefix("block-disk-example-") })
        #expect(after.subtracting(before).isEmpty, "the example removed its directory")
    }
}
