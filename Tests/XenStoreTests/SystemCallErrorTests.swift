import Glibc
import Testing
import XenStore

/// XenStore's system-call errors name the call and the errno, by name.
@Suite struct SystemCallErrorTests {
    @Test func aSystemCallErrorNamesTheCallAndTheErrno() {
        #expect(XenStoreError.systemCall("connect(/nonexistent/xenstored.socket)", errno: ECONNREFUSED).description
            == "connect(/nonexistent/xenstored.socket) failed: ECONNREFUSED (Connection refused)")
        #expect(XenStoreError.systemCall("recv", errno: 4000).description.hasPrefix("recv failed: errno 4000 ("))
    }

    @Test func aClientThatCannotConnectSaysWhereAndWhy() throws {
        let path = "/nonexistent-\(getpid())/xenstored.socket"
        #expect(throws: XenStoreError.systemCall("connect(\(path))", errno: ENOENT)) {
            _ = try XenStoreClient(socketPath: path)
        }
    }
}
