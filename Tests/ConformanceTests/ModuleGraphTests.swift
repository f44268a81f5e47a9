import Foundation
import Testing

/// The suite plays the other end on the wire modules and the platform, never on our
/// devices: a peer built on BlockFrontend could not tell our blkback's bugs from its own.
@Suite struct ModuleGraphTests {
    /// Tap and CTap: the vif's host side (a packet socket in a namespace), no device.
    static let allowed: Set<String> = ["Blkif", "Netif", "XenRing", "XenBus", "XenStore", "XenPlatform", "SharedMemory",
                                       "Tap", "CTap", "Foundation", "Glibc", "Synchronization", "Dispatch"]

    @Test func conformanceImportsOnlyWireModulesAndThePlatform() throws {
        // #filePath is <repo>/Tests/ConformanceTests/<this file>.
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let sources = root.appendingPathComponent("Sources/Conformance")
        let files = try FileManager.default.contentsOfDirectory(atPath: sources.path).filter { $0.hasSuffix(".swift") }
        #expect(!files.isEmpty)
        var imported = Set<String>()
        for file in files {
            let text = try String(contentsOf: sources.appendingPathComponent(file), encoding: .utf8)
            for line in text.split(separator: "\n") where line.hasPrefix("import ") || line.hasPrefix("@testable import ") {
                imported.insert(String(line.split(separator: " ").last!))
            }
        }
        #expect(imported.isSubset(of: Self.allowed), "imports outside the wire modules: \(imported.subtracting(Self.allowed).sorted())")
        // The manifest says the same: the target lists no device module.
        let manifest = try String(contentsOf: root.appendingPathComponent("Package.swift"), encoding: .utf8)
        let start = try #require(manifest.range(of: "name: \"Conformance\","))
        let target = manifest[start.upperBound...].prefix { $0 != ")" }
        for device in ["BlockBackend", "BlockFrontend", "NetBackend", "NetFrontend", "XenDevice", "XenTesting", "XenLocal", "XenLinux"] {
            #expect(!target.contains("\"\(device)\""), "Conformance depends on \(device)")
        }
    }
}
