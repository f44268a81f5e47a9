import Foundation
import XenTesting
import Testing
@testable import XenStore

/// The repository root, found from this file's path.
let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

/// A fresh temporary directory for sockets.
func temporaryDirectory(_ name: String) -> String {
    let path = "/tmp/xenstore-tests-\(getpid())-\(name)"
    try? FileManager.default.removeItem(atPath: path)
    try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

/// One connection to an in-process engine: sends requests, collects replies and events.
struct EnginePeer {
    let engine: XenStoreEngine
    let id: XenStoreConnectionID
    var nextRequest: UInt32 = 1

    init(_ engine: XenStoreEngine, _ identity: XenStoreIdentity) {
        self.engine = engine
        id = engine.openConnection(identity: identity)
    }

    /// Sends raw bytes and processes them.
    func sendBytes(_ bytes: [UInt8]) -> XenStoreEngine.ProcessResult {
        engine.receive(id, bytes)
        return engine.process(id, limit: Int.max)
    }

    /// Every queued output message, in order.
    func drain() -> [XenStoreMessage] {
        var framer = XenStoreMessageFramer()
        while let bytes = engine.popOutput(id) { framer.append(bytes) }
        var out: [XenStoreMessage] = []
        while let m = try? framer.next() { out.append(m) }
        return out
    }

    /// Sends a request; returns the reply payload or the XS_ERROR code. Watch events that
    /// were queued for this peer are left in place.
    @discardableResult
    mutating func call(_ request: XenStoreRequest, tx: UInt32 = 0) -> Result<[UInt8], XSDErrorCode> {
        let rid = nextRequest
        nextRequest += 1
        let message = XenStoreMessage(type: request.type, requestID: rid, transactionID: tx, payload: request.payload())
        _ = sendBytes(message.encoded())
        return takeReply(rid)
    }

    var pendingEvents: [XenStoreWatchEvent] = []

    mutating func takeReply(_ rid: UInt32) -> Result<[UInt8], XSDErrorCode> {
        var reply: Result<[UInt8], XSDErrorCode>?
        for m in drain() {
            if m.type == .watchEvent {
                let f = m.payload.split(separator: 0, omittingEmptySubsequences: false)
                pendingEvents.append(XenStoreWatchEvent(path: String(decoding: f[0], as: UTF8.self),
                                                        token: String(decoding: f[1], as: UTF8.self)))
            } else if m.requestID == rid {
                reply = m.type == .error ? .failure(XSDErrorCode(payload: m.payload) ?? .eio) : .success(m.payload)
            }
        }
        return reply ?? .failure(.eio)
    }

    /// Events received so far, then forgets them.
    mutating func events() -> [XenStoreWatchEvent] {
        for m in drain() where m.type == .watchEvent {
            let f = m.payload.split(separator: 0, omittingEmptySubsequences: false)
            pendingEvents.append(XenStoreWatchEvent(path: String(decoding: f[0], as: UTF8.self),
                                                    token: String(decoding: f[1], as: UTF8.self)))
        }
        defer { pendingEvents = [] }
        return pendingEvents
    }

    // Shorthands.
    mutating func write(_ path: String, _ value: String, tx: UInt32 = 0) -> Result<[UInt8], XSDErrorCode> {
        call(.write(path: Array(path.utf8), value: Array(value.utf8)), tx: tx)
    }
    mutating func read(_ path: String, tx: UInt32 = 0) -> Result<String, XSDErrorCode> {
        call(.read(path: Array(path.utf8)), tx: tx).map { String(decoding: $0, as: UTF8.self) }
    }
    mutating func mkdir(_ path: String, tx: UInt32 = 0) -> Result<[UInt8], XSDErrorCode> { call(.mkdir(path: Array(path.utf8)), tx: tx) }
    mutating func rm(_ path: String, tx: UInt32 = 0) -> Result<[UInt8], XSDErrorCode> { call(.rm(path: Array(path.utf8)), tx: tx) }
    mutating func directory(_ path: String, tx: UInt32 = 0) -> Result<[String], XSDErrorCode> {
        call(.directory(path: Array(path.utf8)), tx: tx).map { XenStoreClient.names($0[...]) }
    }
    mutating func watch(_ path: String, _ token: String) -> Result<[UInt8], XSDErrorCode> {
        call(.watch(path: Array(path.utf8), token: Array(token.utf8)))
    }
    mutating func setPerms(_ path: String, _ perms: String...) -> Result<[UInt8], XSDErrorCode> {
        call(.setPerms(path: Array(path.utf8), permissions: perms.map { try! XenStorePermission(parsing: Array($0.utf8)[...]) }))
    }
    mutating func start() -> UInt32 {
        guard case let .success(p) = call(.transactionStart) else { return 0 }
        return UInt32(String(decoding: p.prefix { $0 != 0 }, as: UTF8.self)) ?? 0
    }
    mutating func end(_ tx: UInt32, commit: Bool = true) -> Result<[UInt8], XSDErrorCode> {
        call(.transactionEnd(commit: commit), tx: tx)
    }
}

let okReply: Result<[UInt8], XSDErrorCode> = .success(Array("OK".utf8) + [0])

extension Result where Success == [UInt8], Failure == XSDErrorCode {
    var isOK: Bool { self == okReply }
}
