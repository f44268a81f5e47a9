import Foundation
import XenTesting
import SystemCalls
import Testing
@testable import XenStore

/// The request each golden request line must encode from and decode to.
private let goldenRequests: [String: XenStoreRequest] = [
    "directory": .directory(path: Array("/local/domain".utf8)),
    "directory-part": .directoryPart(path: Array("/local/domain".utf8), offset: 128),
    "read": .read(path: Array("/vm/name".utf8)),
    "read-in-transaction": .read(path: Array("device/vbd/51712/state".utf8)),
    "get-perms": .getPerms(path: Array("/local".utf8)),
    "watch": .watch(path: Array("backend/vbd".utf8), token: Array("tok1".utf8)),
    "unwatch": .unwatch(path: Array("backend/vbd".utf8), token: Array("tok1".utf8)),
    "transaction-start": .transactionStart,
    "transaction-commit": .transactionEnd(commit: true),
    "transaction-abort": .transactionEnd(commit: false),
    "introduce": .introduce(domid: 5, mfn: 1_048_576, port: 3),
    "release": .release(domid: 5),
    "get-domain-path": .getDomainPath(domid: 5),
    "write": .write(path: Array("/local/domain/5/name".utf8), value: Array("guest5".utf8)),
    "write-empty-value": .write(path: Array("/a".utf8), value: []),
    "mkdir": .mkdir(path: Array("/local/domain/5/device".utf8)),
    "rm": .rm(path: Array("/local/domain/5/device/vif/0".utf8)),
    "set-perms": .setPerms(path: Array("/local/domain/5".utf8), permissions: [
        XenStorePermission(domid: 5, access: .none), XenStorePermission(domid: 0, access: .read),
        XenStorePermission(domid: 7, access: .both),
    ]),
    "is-domain-introduced": .isDomainIntroduced(domid: 5),
    "reset-watches": .resetWatches,
]

private struct GoldenLine {
    var name: String
    var direction: String
    var typeName: String
    var requestID: UInt32
    var transactionID: UInt32
    var bytes: [UInt8]
}

private func goldenLines() throws -> [GoldenLine] {
    let text = try String(contentsOf: repositoryRoot.appendingPathComponent("Protocols/xenstore-golden.txt"), encoding: .utf8)
    return text.split(separator: "\n").filter { !$0.hasPrefix("#") }.map { line in
        let f = line.split(separator: " ").map(String.init)
        return GoldenLine(name: f[0], direction: f[1], typeName: f[2], requestID: UInt32(f[3])!,
                          transactionID: UInt32(f[4])!, bytes: hexBytes(f[5]))
    }
}

@Suite struct WireFormatTests {
    @Test func goldenRequestsEncodeAndDecode() throws {
        let lines = try goldenLines().filter { $0.direction == "request" }
        #expect(Set(lines.map(\.name)) == Set(goldenRequests.keys))
        for line in lines {
            let request = try #require(goldenRequests[line.name])
            #expect(request.type.description == line.typeName, "\(line.name)")
            let encoded = XenStoreMessage(type: request.type, requestID: line.requestID,
                                          transactionID: line.transactionID, payload: request.payload()).encoded()
            #expect(encoded == line.bytes, "\(line.name)")
            var framer = XenStoreMessageFramer()
            framer.append(line.bytes)
            let message = try #require(try framer.next())
            #expect(message.requestID == line.requestID && message.transactionID == line.transactionID)
            #expect(try XenStoreRequest.decode(type: message.rawType, payload: message.payload) == request, "\(line.name)")
        }
    }

    @Test func goldenRepliesMatchTheServer() throws {
        // Each reply line is what our engine sends for the matching request, byte for byte,
        // in a store set up to produce those values.
        let engine = XenStoreEngine()
        var dom0 = EnginePeer(engine, .tool)
        #expect(dom0.write("/local/domain/5/name", "guest5").isOK)
        #expect(dom0.mkdir("/local/domain/0").isOK)
        #expect(dom0.setPerms("/local", "n0", "r5").isOK)
        var replies: [String: [UInt8]] = [:]
        for line in try goldenLines() where line.direction == "reply" { replies[line.name] = line.bytes }

        func exchange(_ request: XenStoreRequest, _ rid: UInt32, _ tx: UInt32 = 0) -> [UInt8] {
            let m = XenStoreMessage(type: request.type, requestID: rid, transactionID: tx, payload: request.payload())
            _ = dom0.sendBytes(m.encoded())
            var out: [UInt8] = []
            while let b = dom0.engine.popOutput(dom0.id) { out += b }
            return out
        }
        #expect(exchange(.write(path: Array("/local/domain/5/name".utf8), value: Array("guest5".utf8)), 14) == replies["reply-ok"])
        #expect(exchange(.read(path: Array("/local/domain/5/name".utf8)), 3) == replies["reply-read"])
        #expect(exchange(.getPerms(path: Array("/local".utf8)), 5) == replies["reply-get-perms"])
        #expect(exchange(.getDomainPath(domid: 5), 13) == replies["reply-get-domain-path"])
        #expect(exchange(.read(path: Array("/nonexistent".utf8)), 3) == replies["error-enoent"])
        #expect(exchange(.introduce(domid: 5, mfn: 1, port: 1), 1).count > 16)
        #expect(exchange(.isDomainIntroduced(domid: 5), 19) == replies["reply-is-domain-introduced"])
        // The directory of /local/domain lists 5 then 0 in creation order; the golden line
        // lists "0\05\0", so rebuild in that order.
        let other = XenStoreEngine()
        var peer = EnginePeer(other, .tool)
        #expect(peer.mkdir("/local/domain/0").isOK)
        #expect(peer.mkdir("/local/domain/5").isOK)
        dom0 = peer
        #expect(exchange(.directory(path: Array("/local/domain".utf8)), 1) == replies["reply-directory"])

        // A relative watch by dom5 reports a relative path; events carry req_id 0, tx_id 0.
        let store = XenStoreEngine()
        var tool = EnginePeer(store, .tool)
        #expect(tool.mkdir("/local/domain/5").isOK)
        #expect(tool.setPerms("/local/domain/5", "n5").isOK)
        let dom5 = EnginePeer(store, .domain(5))
        _ = dom5.sendBytes(XenStoreMessage(type: .watch, requestID: 6, payload: XenStoreRequest.watch(
            path: Array("backend/vbd".utf8), token: Array("tok1".utf8)).payload()).encoded())
        _ = dom5.drain()
        #expect(tool.write("/local/domain/5/backend/vbd/5/51712", "x").isOK)
        var event: [UInt8] = []
        while let b = store.popOutput(dom5.id) { event += b }
        #expect(event == replies["watch-event"])
        // dom5 may not read /tool.
        _ = dom5.sendBytes(XenStoreMessage(type: .read, requestID: 3, payload: Array("/tool\0".utf8)).encoded())
        var denied: [UInt8] = []
        while let b = store.popOutput(dom5.id) { denied += b }
        #expect(denied == replies["error-eacces"])
        // The seventh transaction of a connection is id 7; a conflicting commit is EAGAIN
        // with the tx_id echoed.
        dom0 = tool
        var started: [[UInt8]] = []
        for rid in 1 ... 7 as ClosedRange<UInt32> { started.append(exchange(.transactionStart, rid == 7 ? 8 : rid)) }
        #expect(started.last == replies["reply-transaction-start"])
        #expect(exchange(.read(path: Array("/tool".utf8)), 100, 7).count == 16) // an empty value
        var other2 = EnginePeer(store, .tool)
        #expect(other2.write("/tool", "changed").isOK)
        #expect(exchange(.transactionEnd(commit: true), 9, 7) == replies["error-eagain"])
        // DIRECTORY_PART: generation, then the children and the closing empty string.
        #expect(tool.mkdir("/dp/backend").isOK)
        #expect(tool.mkdir("/dp/device").isOK)
        let part = exchange(.directoryPart(path: Array("/dp".utf8), offset: 0), 2)
        let golden = try #require(replies["reply-directory-part"])
        #expect(part.prefix(12) == golden.prefix(12)) // type, req_id, tx_id
        let body = part.dropFirst(16).drop { $0 != 0 }
        #expect(Array(body) == Array(golden.dropFirst(16).drop { $0 != 0 }))
    }

    @Test func constantsMatchXenHeaders() throws {
        // Compile a C program against the system's io/xs_wire.h and compare every value.
        let dir = temporaryDirectory("cheader")
        let source = """
        #include <stdio.h>
        #include <stdint.h>
        #include <errno.h>
        #include <xen/io/xs_wire.h>
        int main(void) {
            printf("XS_CONTROL %d\\nXS_DIRECTORY %d\\nXS_READ %d\\nXS_GET_PERMS %d\\nXS_WATCH %d\\n", XS_CONTROL, XS_DIRECTORY, XS_READ, XS_GET_PERMS, XS_WATCH);
            printf("XS_UNWATCH %d\\nXS_TRANSACTION_START %d\\nXS_TRANSACTION_END %d\\nXS_INTRODUCE %d\\n", XS_UNWATCH, XS_TRANSACTION_START, XS_TRANSACTION_END, XS_INTRODUCE);
            printf("XS_RELEASE %d\\nXS_GET_DOMAIN_PATH %d\\nXS_WRITE %d\\nXS_MKDIR %d\\nXS_RM %d\\n", XS_RELEASE, XS_GET_DOMAIN_PATH, XS_WRITE, XS_MKDIR, XS_RM);
            printf("XS_SET_PERMS %d\\nXS_WATCH_EVENT %d\\nXS_ERROR %d\\nXS_IS_DOMAIN_INTRODUCED %d\\n", XS_SET_PERMS, XS_WATCH_EVENT, XS_ERROR, XS_IS_DOMAIN_INTRODUCED);
            printf("XS_RESUME %d\\nXS_SET_TARGET %d\\nXS_RESET_WATCHES %d\\nXS_DIRECTORY_PART %d\\n", XS_RESUME, XS_SET_TARGET, XS_RESET_WATCHES, XS_DIRECTORY_PART);
            printf("XS_TYPE_COUNT %d\\nXS_INVALID %d\\n", XS_TYPE_COUNT, XS_INVALID);
            printf("XENSTORE_PAYLOAD_MAX %d\\nXENSTORE_ABS_PATH_MAX %d\\nXENSTORE_REL_PATH_MAX %d\\n", XENSTORE_PAYLOAD_MAX, XENSTORE_ABS_PATH_MAX, XENSTORE_REL_PATH_MAX);
            printf("sizeof_xsd_sockmsg %zu\\n", sizeof(struct xsd_sockmsg));
            for (unsigned i = 0; i < sizeof(xsd_errors) / sizeof(xsd_errors[0]); i++)
                printf("error %s %d\\n", xsd_errors[i].errstring, xsd_errors[i].errnum);
            return 0;
        }
        """
        try source.write(toFile: dir + "/check.c", atomically: true, encoding: .utf8)
        let cc = try ChildProcess("/usr/bin/gcc", ["-o", dir + "/check", dir + "/check.c"])
        #expect(cc.wait() == .exited(0))
        let run = try ChildProcess(dir + "/check", standardOutput: .pipe)
        let output = String(decoding: try run.collectOutput().standardOutput, as: UTF8.self)
        run.wait()
        var values: [String: Int] = [:]
        var errors: [(String, Int32)] = []
        for line in output.split(separator: "\n") {
            let f = line.split(separator: " ")
            if f[0] == "error" { errors.append((String(f[1]), Int32(f[2])!)) } else { values[String(f[0])] = Int(f[1])! }
        }
        for type in XSDSockmsgType.allCases {
            let cName = "XS_" + type.description
            #expect(values[cName] == Int(type.rawValue), "\(cName)")
        }
        #expect(values["XS_TYPE_COUNT"] == Int(XSDSockmsgType.typeCount))
        #expect(values["XS_INVALID"] == Int(XSDSockmsgType.invalid))
        #expect(values["XENSTORE_PAYLOAD_MAX"] == XenStoreLimits.payloadMax)
        #expect(values["XENSTORE_ABS_PATH_MAX"] == XenStoreLimits.absolutePathMax)
        #expect(values["XENSTORE_REL_PATH_MAX"] == XenStoreLimits.relativePathMax)
        #expect(values["sizeof_xsd_sockmsg"] == XSDSockmsgHeader.size)
        #expect(errors.map(\.0) == XSDErrorCode.allCases.map(\.rawValue))
        #expect(errors.map(\.1) == XSDErrorCode.allCases.map(\.errno))
    }

    @Test func protocolDocumentListsEveryType() throws {
        // Protocols/xenstore-wire.md's type table: "| value | NAME | ..." rows.
        let text = try String(contentsOf: repositoryRoot.appendingPathComponent("Protocols/xenstore-wire.md"), encoding: .utf8)
        var documented: [UInt32: String] = [:]
        for line in text.split(separator: "\n") where line.hasPrefix("|") {
            let cells = line.split(separator: "|").map { $0.trimmingCharacters(in: .whitespaces) }
            if cells.count > 2, let value = UInt32(cells[0]), cells[1].allSatisfy({ $0.isUppercase || $0 == "_" }) {
                documented[value] = cells[1]
            }
        }
        #expect(documented == Dictionary(uniqueKeysWithValues: XSDSockmsgType.allCases.map { ($0.rawValue, $0.description) }))
    }

    @Test func quotaDocumentMatchesDefaults() throws {
        // Protocols/xenstore-quotas.md: "| name | default | counted | when | reply | test |".
        let text = try String(contentsOf: repositoryRoot.appendingPathComponent("Protocols/xenstore-quotas.md"), encoding: .utf8)
        var rows: [String: (Int, String)] = [:]
        for line in text.split(separator: "\n") where line.hasPrefix("|") {
            let cells = line.split(separator: "|").map { $0.trimmingCharacters(in: .whitespaces) }
            if cells.count == 6, let value = Int(cells[1]) { rows[cells[0]] = (value, cells[4]) }
        }
        let q = XenStoreQuotas()
        let expected: [String: (Int, String)] = [
            "nodes per domain": (q.nodesPerDomain, "ENOSPC"),
            "entry size": (q.entrySize, "ENOSPC"),
            "watches per domain": (q.watchesPerDomain, "E2BIG"),
            "transactions per connection": (q.transactionsPerConnection, "ENOSPC"),
            "nodes per transaction": (q.transactionNodes, "ENOSPC"),
            "permissions per node": (q.permissionsPerNode, "ENOSPC"),
            "outstanding requests": (q.outstandingRequests, "none (back-pressure)"),
            "pending watch events": (q.pendingWatchEvents, "none"),
        ]
        #expect(Set(rows.keys) == Set(expected.keys))
        for (name, (value, reply)) in expected {
            #expect(rows[name]?.0 == value, "\(name)")
            #expect(rows[name]?.1 == reply, "\(name)")
        }
    }

    @Test func framerCutsAnyPieces() throws {
        var rng = SeededGenerator(seed: 7)
        var stream: [UInt8] = []
        var expected: [XenStoreMessage] = []
        for i in 0 ..< 200 {
            let payload = (0 ..< Int.random(in: 0 ... 300, using: &rng)).map { _ in UInt8.random(in: 0 ... 255, using: &rng) }
            let m = XenStoreMessage(type: .write, requestID: UInt32(i), transactionID: 0, payload: payload)
            expected.append(m)
            stream += m.encoded()
        }
        var framer = XenStoreMessageFramer()
        var got: [XenStoreMessage] = []
        var offset = 0
        while offset < stream.count {
            let n = min(Int.random(in: 1 ... 97, using: &rng), stream.count - offset)
            framer.append(Array(stream[offset ..< offset + n]))
            offset += n
            while let m = try framer.next() { got.append(m) }
        }
        #expect(got == expected)
        #expect(framer.bufferedCount == 0)
    }

    @Test func framerRefusesOversizedPayload() {
        var framer = XenStoreMessageFramer()
        var header: [UInt8] = []
        XSDSockmsgHeader(type: 2, requestID: 1, transactionID: 0, length: 4097).encode(into: &header)
        framer.append(header)
        #expect(throws: XenStoreError.payloadTooLong(length: 4097, limit: 4096)) { try framer.next() }
        var atLimit = XenStoreMessageFramer()
        atLimit.append(XenStoreMessage(type: .write, payload: [UInt8](repeating: 0x41, count: 4096)).encoded())
        #expect((try? atLimit.next())??.payload.count == 4096)
    }

    @Test func truncatedHeaderWaitsForMore() throws {
        var framer = XenStoreMessageFramer()
        framer.append([2, 0, 0, 0, 1, 0])
        #expect(try framer.next() == nil)
        #expect(throws: XenStoreError.self) { try XSDSockmsgHeader(decoding: [1, 2, 3][...]) }
    }

    @Test func requestDecodingErrors() {
        func code(_ type: XSDSockmsgType, _ payload: [UInt8]) -> XSDErrorCode? {
            do {
                _ = try XenStoreRequest.decode(type: type.rawValue, payload: payload)
                return nil
            } catch {
                return error.replyCode
            }
        }
        #expect(code(.read, Array("/a".utf8)) == .einval) // no NUL
        #expect(code(.read, Array("/a\0b\0".utf8)) == .einval) // two strings
        #expect(code(.read, []) == .einval)
        #expect(code(.write, Array("/a".utf8)) == .einval) // path without NUL
        #expect(code(.watch, Array("/a\0".utf8)) == .einval) // token missing
        #expect(code(.watch, Array("/a\0t".utf8)) == .einval) // token without NUL
        #expect(code(.transactionEnd, Array("X\0".utf8)) == .einval)
        #expect(code(.setPerms, Array("/a\0".utf8)) == .einval)
        #expect(code(.setPerms, Array("/a\0x5\0".utf8)) == .einval)
        #expect(code(.setPerms, Array("/a\0r\0".utf8)) == .einval)
        #expect(code(.setPerms, Array("/a\0r70000\0".utf8)) == .einval)
        #expect(code(.setPerms, Array("/a\0r-1\0".utf8)) == .einval)
        #expect(code(.getDomainPath, Array("abc\0".utf8)) == .einval)
        #expect(code(.introduce, Array("1\02\0".utf8)) == .einval)
        #expect(code(.directoryPart, Array("/a\0x\0".utf8)) == .einval)
        #expect(code(.watchEvent, Array("/a\0t\0".utf8)) == .enosys)
        #expect(code(.error, Array("EINVAL\0".utf8)) == .enosys)
        #expect((try? XenStoreRequest.decode(type: 20, payload: [])) == nil)
        #expect((try? XenStoreRequest.decode(type: 0xffff, payload: [])) == nil)
        #expect(code(.write, Array("/a\0with\0nul".utf8)) == nil)
    }

    @Test func paths() throws {
        #expect(try XenStorePath.validateAbsolute(Array("/".utf8)[...]) == "/")
        #expect(try XenStorePath.validateAbsolute(Array("/a-b/c_d/@e/9".utf8)[...]) == "/a-b/c_d/@e/9")
        for bad in ["", "a", "/a/", "/a//b", "/a b", "/a\u{1}", "/é"] {
            #expect(throws: XenStoreError.self, "\(bad)") { try XenStorePath.validateAbsolute(Array(bad.utf8)[...]) }
        }
        let longest = "/" + String(repeating: "a", count: XenStoreLimits.absolutePathMax - 1)
        #expect(try XenStorePath.validateAbsolute(Array(longest.utf8)[...]).count == 3072)
        #expect(throws: XenStoreError.self) { try XenStorePath.validateAbsolute(Array((longest + "a").utf8)[...]) }
        #expect(try XenStorePath.resolve(Array("device/vbd".utf8)[...], home: "/local/domain/5") == ("/local/domain/5/device/vbd", true))
        #expect(throws: XenStoreError.self) { try XenStorePath.resolve(Array("device".utf8)[...], home: nil) }
        let longRelative = String(repeating: "a", count: XenStoreLimits.relativePathMax + 1)
        #expect(throws: XenStoreError.self) { try XenStorePath.resolve(Array(longRelative.utf8)[...], home: "/local/domain/5") }
        #expect(XenStorePath.parent(of: "/a/b") == "/a")
        #expect(XenStorePath.parent(of: "/a") == "/")
        #expect(XenStorePath.isSelfOrDescendant("/a/b", of: "/a"))
        #expect(!XenStorePath.isSelfOrDescendant("/ab", of: "/a"))
        #expect(XenStorePath.isSelfOrDescendant("/ab", of: "/"))
    }

    @Test func permissionStrings() throws {
        #expect(try XenStorePermission.parseList(Array("n0\0r5\0w7\0b65535\0".utf8)[...]) == [
            .init(domid: 0, access: .none), .init(domid: 5, access: .read),
            .init(domid: 7, access: .write), .init(domid: 65535, access: .both),
        ])
        for bad in ["x0\0", "r\0", "r65536\0", "R5\0", "r5", "r 5\0", "\0"] {
            #expect(throws: XenStoreError.self, "\(bad)") { try XenStorePermission.parseList(Array(bad.utf8)[...]) }
        }
        #expect(XenStorePermission.encodeList([.init(domid: 3, access: .both)]) == Array("b3\0".utf8))
    }

    @Test func errorNames() {
        for code in XSDErrorCode.allCases {
            #expect(XSDErrorCode(payload: code.payload) == code)
        }
        #expect(XSDErrorCode(payload: Array("EWHAT\0".utf8)) == nil)
    }
}
