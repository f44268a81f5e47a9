import Foundation
import Glibc
import Testing
import XenLinux
import XenPlatform

@Suite struct LinuxPlatformTests {
    private func scratchDirectory(_ name: String, files: [String]) -> String {
        let path = "/tmp/xenlinux-tests-\(getpid())-\(name)"
        try? FileManager.default.removeItem(atPath: path)
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        for file in files { #expect(FileManager.default.createFile(atPath: path + "/" + file, contents: nil)) }
        return path
    }

    @Test func availabilityNeedsPrivcmdOrGntdev() {
        let cases: [(String, [String], Bool)] = [
            ("none", [], false), ("evtchn", ["evtchn", "xenbus"], false), ("privcmd", ["privcmd"], true), ("gntdev", ["gntdev"], true),
        ]
        for (name, files, expected) in cases {
            let directory = scratchDirectory(name, files: files)
            defer { try? FileManager.default.removeItem(atPath: directory) }
            #expect(LinuxPlatform.isAvailable(deviceDirectory: directory) == expected, "\(files)")
        }
        #expect(!LinuxPlatform.isAvailable(deviceDirectory: "/nonexistent/dev/xen"))
    }

    // Runs only without Xen: checks that every open names its device and errno.
    @Test(.enabled(if: !xenPresent, "runs only where /dev/xen is absent"))
    func withoutXenEveryOpenFailsNamingItsDevice() {
        #expect(!LinuxPlatform.isAvailable)
        #expect(throws: PlatformError.system("xengnttab_open (/dev/xen/gntdev)", errno: ENOENT)) { try LinuxGrantMapper() }
        #expect(throws: PlatformError.system("xengntshr_open (/dev/xen/gntalloc)", errno: ENOENT)) { try LinuxGrantTable() }
        #expect(throws: PlatformError.eventChannel("xenevtchn_open (/dev/xen/evtchn) failed", errno: ENOENT)) {
            try LinuxEventChannel()
        }
        do {
            _ = try LinuxPlatform(domainID: 0)
            Issue.record("a platform opened without /dev/xen")
        } catch {
            guard case let .unsupported(text) = error else { Issue.record("unexpected \(error)"); return }
            #expect(text.contains("/dev/xen/gntdev") && text.contains("/dev/xen/gntalloc"))
        }
    }

    @Test(arguments: [DomainID.domidSelf, 0x7FF0, 0x7FF1, 0xFFFF])
    func reservedDomainIDsAreRefusedBeforeAnyDeviceOpens(domid: DomainID) {
        do {
            _ = try LinuxPlatform(domainID: domid)
            Issue.record("d\(domid) accepted")
        } catch {
            guard case .invalidArgument = error else { Issue.record("unexpected \(error)"); return }
        }
    }

    @Test func xenStoreEndpointFollowsTheEnvironmentThenTheSocketThenTheDevice() {
        #expect(XenStoreEndpoint.choose(environment: ["XENSTORED_PATH": "/tmp/xs.sock"], exists: { _ in false })
            == .socket("/tmp/xs.sock"))
        #expect(XenStoreEndpoint.choose(environment: [:], exists: { $0 == "/var/run/xenstored/socket" })
            == .socket("/var/run/xenstored/socket"))
        #expect(XenStoreEndpoint.choose(environment: ["XENSTORED_RUNDIR": "/run/xs"], exists: { $0 == "/run/xs/socket" })
            == .socket("/run/xs/socket"))
        #expect(XenStoreEndpoint.choose(environment: ["XENSTORED_PATH": ""], exists: { _ in false })
            == .device("/dev/xen/xenbus"))
        #expect(XenStoreEndpoint.choose(environment: [:], exists: { _ in false }) == .device("/dev/xen/xenbus"))
    }

    @Test func domainIDsParseOnlyAsPlainDecimalsBelowTheReservedRange() throws {
        #expect(try LinuxPlatform.parseDomainID(Array("0".utf8)) == 0)
        #expect(try LinuxPlatform.parseDomainID(Array("17".utf8)) == 17)
        #expect(try LinuxPlatform.parseDomainID(Array("32751".utf8)) == 32751)
        for bad in ["", "32752", "65535", "99999", "123456", "-1", "+1", " 1", "1 ", "1\0", "0x10", "abc"] {
            #expect(throws: PlatformError.self, "'\(bad)'") { try LinuxPlatform.parseDomainID(Array(bad.utf8)) }
        }
    }

    @Test func aXenStoreConnectionFailureNamesTheEndpointAndErrno() {
        #expect(throws: PlatformError.system("xenstore via device /nonexistent/xenbus: open(/nonexistent/xenbus)", errno: ENOENT)) {
            try LinuxPlatform.connectXenStore(at: .device("/nonexistent/xenbus"))
        }
    }
}
