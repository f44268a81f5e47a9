import Foundation
import Synchronization
import SystemCalls
import Testing
@testable import XenStore

/// Runs a program with XENSTORED_PATH pointing at our server; returns (status, stdout).
@discardableResult
private func run(_ tool: String, _ arguments: [String], socket: String, runDirectory: Bool = false) throws -> (Int32, String) {
    var env = ProcessInfo.processInfo.environment
    if runDirectory {
        // libxenstore's other way to find the daemon: $XENSTORED_RUNDIR/socket.
        env["XENSTORED_PATH"] = nil
        env["XENSTORED_RUNDIR"] = (socket as NSString).deletingLastPathComponent
    } else {
        env["XENSTORED_PATH"] = socket
    }
    let p = try ChildProcess(tool, arguments, environment: env, standardOutput: .pipe, standardError: .null)
    let data = try p.collectOutput().standardOutput
    return (p.wait().code, String(decoding: data, as: UTF8.self))
}

final class Flag: Sendable {
    private let value = Atomic<Bool>(false)
    func set() { value.store(true, ordering: .releasing) }
    var isSet: Bool { value.load(ordering: .acquiring) }
}

@Suite struct XenToolsTests {
    @Test func xenstoreUtilsAgainstOurServer() async throws {
        try await withServer("utils") { server, socket in
            #expect(try run("/usr/bin/xenstore-write", ["/vm/a", "alpha", "/vm/b/c", "gamma"], socket: socket).0 == 0)
            #expect(try run("/usr/bin/xenstore-read", ["/vm/a"], socket: socket) == (0, "alpha\n"))
            #expect(try run("/usr/bin/xenstore-read", ["/vm/a"], socket: socket, runDirectory: true) == (0, "alpha\n"))
            #expect(try run("/usr/bin/xenstore-read", ["/vm/missing"], socket: socket).0 != 0)
            #expect(try run("/usr/bin/xenstore-exists", ["/vm/b/c"], socket: socket).0 == 0)
            #expect(try run("/usr/bin/xenstore-exists", ["/vm/nope"], socket: socket).0 != 0)
            #expect(try run("/usr/bin/xenstore-list", ["/vm"], socket: socket) == (0, "a\nb\n"))
            #expect(try run("/usr/bin/xenstore-ls", ["/vm"], socket: socket) == (0, "a = \"alpha\"\nb = \"\"\n c = \"gamma\"\n"))
            #expect(try run("/usr/bin/xenstore-chmod", ["/vm/a", "n3", "r5"], socket: socket).0 == 0)
            #expect(await server.withEngine { $0.permissions(at: "/vm/a") } == [.init(domid: 3, access: .none), .init(domid: 5, access: .read)])
            let (status, listing) = try run("/usr/bin/xenstore-ls", ["-p", "/vm"], socket: socket)
            #expect(status == 0 && listing.contains("(n3,r5)"))
            // Recursive chmod walks the tree with DIRECTORY and SET_PERMS.
            #expect(try run("/usr/bin/xenstore-chmod", ["-r", "/vm/b", "n0", "r9"], socket: socket).0 == 0)
            #expect(try run("/usr/bin/xenstore-ls", ["-fp", "/vm/b"], socket: socket) == (0, "/vm/b/c = \"gamma\"   (n0,r9)\n"))
            #expect(await server.withEngine { $0.permissions(at: "/vm/b") } == [.init(domid: 0, access: .none), .init(domid: 9, access: .read)])
            #expect(try run("/usr/bin/xenstore-rm", ["/vm/b"], socket: socket).0 == 0)
            #expect(await server.withEngine { $0.value(at: "/vm/b/c") } == nil)
            #expect(try run("/usr/bin/xenstore-list", ["/vm"], socket: socket) == (0, "a\n"))
            // A watch: the initial event, then writes until the tool has seen three events.
            // The tool runs on its own thread: blocking a Swift concurrency thread on it
            // while it waits for our async writes could starve the pool.
            let done = Flag()
            let watchResult = Mutex<(Int32, String)?>(nil)
            Thread {
                defer { done.set() }
                let r = try? run("/usr/bin/xenstore-watch", ["-n", "3", "/vm/w"], socket: socket)
                watchResult.withLock { $0 = r }
            }.start()
            let client = try XenStoreClient(socketPath: socket)
            defer { client.close() }
            var writes = 0
            while !done.isSet, writes < 100_000 {
                try await client.write("/vm/w/x", "\(writes)")
                writes += 1
                try await Task.sleep(nanoseconds: 1_000_000)
            }
            let (watchStatus, events) = try #require(watchResult.withLock { $0 })
            #expect(watchStatus == 0)
            let lines = events.split(separator: "\n").map(String.init)
            #expect(lines.count == 3)
            #expect(lines.first == "/vm/w")
            #expect(lines.dropFirst().allSatisfy { $0 == "/vm/w/x" })
        }
    }

    @Test func pyxsAgainstOurServer() async throws {
        try await withServer("pyxs") { _, socket in
            let script = """
            import sys
            from pyxs import Client, PyXSError
            out = []
            with Client(unix_socket_path=sys.argv[1]) as c:
                c.write(b"/py/a", b"1")
                c.mkdir(b"/py/dir")
                out.append(c.read(b"/py/a").decode())
                out.append(",".join(sorted(x.decode() for x in c.list(b"/py"))))
                out.append(str(c.exists(b"/py/dir")) + str(c.exists(b"/py/none")))
                c.set_perms(b"/py/a", [b"n0", b"r7"])
                out.append("|".join(p.decode() for p in c.get_perms(b"/py/a")))
                out.append(c.get_domain_path(7).decode())
                c.transaction()
                c.write(b"/py/t", b"in-tx")
                c.commit()
                out.append(c.read(b"/py/t").decode())
                try:
                    c.read(b"/py/none")
                except PyXSError as e:
                    out.append("error:" + str(e.args[0]))
                c.delete(b"/py/dir")
                out.append(str(c.exists(b"/py/dir")))
                with c.monitor() as m:
                    m.watch(b"/py/w", b"tok")
                    events = m.wait()
                    first = next(events)
                    c.write(b"/py/w/x", b"2")
                    second = next(events)
                    out.append(first[0].decode() + ":" + first[1].decode() + "," + second[0].decode())
            print(";".join(out))
            """
            let dir = temporaryDirectory("pyxs-script")
            try script.write(toFile: dir + "/t.py", atomically: true, encoding: .utf8)
            let (status, output) = try run("/usr/bin/python3", [dir + "/t.py", socket], socket: socket)
            #expect(status == 0)
            #expect(output.trimmingCharacters(in: .whitespacesAndNewlines) ==
                "1;a,dir;TrueFalse;n0|r7;/local/domain/7;in-tx;error:2;False;/py/w:tok,/py/w/x")
        }
    }
}
