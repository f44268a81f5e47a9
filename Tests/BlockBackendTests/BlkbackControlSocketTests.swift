import Foundation
import Glibc
import Synchronization
import Testing
import XenTesting
@testable import BlockBackend

/// The control socket's exchange (Protocols/blkback-restart.md, "Upgrade"), in one
/// process: the serving side's hand-over and exit are stand-ins the test watches. The
/// client's blocking calls run off the cooperative pool: the server's hand-over needs a
/// thread of it, and a client blocking one of two there once deadlocked a CI run.
@Suite("BlkbackControlSocket")
struct BlkbackControlSocketTests {
    static func directory() throws -> String {
        var template = Array("/tmp/xensplit-control-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw TestFailure("mkdtemp: errno \(errno)") }
        return String(cString: made)
    }

    @Test("take-over runs the hand-over, answers what is left in flight, then exits; the client waits for that")
    func takeOver() async throws {
        let dir = try Self.directory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = BlkbackControlSocket.path(restartDirectory: dir)
        let events = Mutex<[String]>([])
        let server = try BlkbackControlSocket(path: path, handOver: {
            events.withLock { $0.append("hand-over") }
            return 3
        }, exit: {
            events.withLock { $0.append("exit") }
        })
        // The file is the socket, private to its owner.
        var st = stat()
        #expect(stat(path, &st) == 0 && st.st_mode & 0o777 == 0o600)
        #expect(try await offThePool { try BlkbackControlSocket.requestTakeOver(path: path) } == 3)
        #expect(events.withLock { $0 } == ["hand-over", "exit"])
        server.close()
        #expect(access(path, F_OK) != 0, "the socket file is removed on close")
    }

    @Test("with nothing listening there is nothing to take over from")
    func nobodyListens() throws {
        let dir = try Self.directory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        #expect(try BlkbackControlSocket.requestTakeOver(path: BlkbackControlSocket.path(restartDirectory: dir)) == nil)
    }

    @Test("another line is answered with an error and changes nothing")
    func unknownCommand() async throws {
        let dir = try Self.directory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = BlkbackControlSocket.path(restartDirectory: dir)
        let handedOver = Mutex(false)
        let server = try BlkbackControlSocket(path: path, handOver: {
            handedOver.withLock { $0 = true }
            return 0
        }, exit: {})
        defer { server.close() }
        let fd = try BlkbackControlSocket.socket(path)
        defer { Glibc.close(fd) }
        #expect(BlkbackControlSocket.withAddress(path) { connect(fd, $0, $1) } == 0)
        BlkbackControlSocket.write(fd, "stop\n")
        #expect(try await offThePool { BlkbackControlSocket.readLine(fd) } == "error unknown command")
        #expect(!handedOver.withLock { $0 })
    }
}
