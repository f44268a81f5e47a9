import Testing
@testable import XenStore

private func domainStore(_ quotas: XenStoreQuotas) -> (XenStoreEngine, EnginePeer, EnginePeer) {
    let engine = XenStoreEngine(quotas: quotas)
    var dom0 = EnginePeer(engine, .tool)
    #expect(dom0.mkdir("/local/domain/5").isOK)
    #expect(dom0.setPerms("/local/domain/5", "n5").isOK)
    return (engine, dom0, EnginePeer(engine, .domain(5)))
}

@Suite struct QuotaTests {
    @Test func nodesPerDomainIsENOSPCAndAllOrNothing() {
        var quotas = XenStoreQuotas()
        quotas.nodesPerDomain = 6
        var (engine, dom0, dom5) = domainStore(quotas)
        #expect(engine.ownedNodes(5) == 1) // its home
        for i in 0 ..< 3 { #expect(dom5.write("n\(i)", "x").isOK) }
        // Three more nodes (a, a/b, a/b/c) would make 7: nothing is created.
        let before = engine.allPaths
        #expect(dom5.write("a/b/c", "x").isFailure(.enospc))
        #expect(engine.allPaths == before)
        #expect(dom5.write("a/b", "x").isOK)
        #expect(dom5.write("one-more", "x").isFailure(.enospc))
        #expect(dom5.rm("a").isOK)
        #expect(dom5.write("one-more", "x").isOK)
        // In a transaction the same count applies.
        let tx = dom5.start()
        #expect(dom5.write("t1", "x", tx: tx).isOK)
        #expect(dom5.write("t2", "x", tx: tx).isFailure(.enospc))
        #expect(dom5.end(tx, commit: false).isOK)
        // dom0 is not bound.
        for i in 0 ..< 10 { #expect(dom0.write("/local/domain/5/dom0-\(i)", "x").isOK) }
        #expect(engine.checkInvariants() == nil)
    }

    @Test func entrySizeIsENOSPC() {
        var (_, dom0, dom5) = domainStore(XenStoreQuotas())
        // A record is 24 bytes + 8 per permission + value + child names.
        let fits = String(repeating: "v", count: 2048 - 24 - 8 - 1)
        #expect(dom5.write("big", fits).isOK)
        #expect(dom5.write("big", fits + "v").isFailure(.enospc))
        #expect(dom5.read("big") == .success(fits))
        #expect(dom0.write("/local/domain/5/big", fits + "vvvv").isOK)
    }

    @Test func watchesPerDomainIsE2BIG() {
        var quotas = XenStoreQuotas()
        quotas.watchesPerDomain = 4
        let engine = XenStoreEngine(quotas: quotas)
        var first = EnginePeer(engine, .domain(5))
        var second = EnginePeer(engine, .domain(5))
        var other = EnginePeer(engine, .domain(6))
        for i in 0 ..< 3 { #expect(first.watch("w\(i)", "t").isOK) }
        #expect(second.watch("x", "t").isOK)
        #expect(second.watch("y", "t").isFailure(.e2big))
        #expect(first.watch("z", "t").isFailure(.e2big))
        #expect(other.watch("z", "t").isOK)
        #expect(first.call(.unwatch(path: Array("w0".utf8), token: Array("t".utf8))).isOK)
        #expect(second.watch("y", "t").isOK)
    }

    @Test func transactionsPerConnectionIsENOSPC() {
        var quotas = XenStoreQuotas()
        quotas.transactionsPerConnection = 3
        var (_, dom0, dom5) = domainStore(quotas)
        let ids = (0 ..< 3).map { _ in dom5.start() }
        #expect(!ids.contains(0) && Set(ids).count == 3)
        #expect(dom5.call(.transactionStart).isFailure(.enospc))
        #expect(dom5.end(ids[0], commit: false).isOK)
        #expect(dom5.start() != 0)
        for _ in 0 ..< 5 { #expect(dom0.start() != 0) }
    }

    @Test func transactionNodesIsENOSPC() {
        var quotas = XenStoreQuotas()
        quotas.transactionNodes = 10
        var (_, dom0, dom5) = domainStore(quotas)
        let tx = dom5.start()
        // Each read of an absent node records it and the ancestors consulted.
        var answers: [Result<String, XSDErrorCode>] = []
        for i in 0 ..< 12 { answers.append(dom5.read("missing\(i)", tx: tx)) }
        #expect(answers.prefix(8).allSatisfy { $0 == .failure(.enoent) })
        #expect(answers.last == .failure(.enospc))
        #expect(dom5.end(tx, commit: false).isOK)
        let t0 = dom0.start()
        for i in 0 ..< 30 { #expect(dom0.read("/missing\(i)", tx: t0) == .failure(.enoent)) }
    }

    @Test func permissionsPerNodeIsENOSPC() {
        var (_, dom0, dom5) = domainStore(XenStoreQuotas())
        #expect(dom5.write("p", "x").isOK)
        #expect(dom5.setPerms("p", "n5", "r1", "r2", "r3", "r4").isOK)
        #expect(dom5.setPerms("p", "n5", "r1", "r2", "r3", "r4", "r6").isFailure(.enospc))
        #expect(dom0.setPerms("/local/domain/5/p", "n5", "r1", "r2", "r3", "r4", "r6").isOK)
    }

    @Test func outstandingRequestsStopReading() {
        var quotas = XenStoreQuotas()
        quotas.outstandingRequests = 20
        let (engine, _, dom5) = domainStore(quotas)
        var flood: [UInt8] = []
        for i in 0 ..< 50 {
            flood += XenStoreMessage(type: .read, requestID: UInt32(i), payload: Array("missing\0".utf8)).encoded()
        }
        engine.receive(dom5.id, flood)
        #expect(engine.process(dom5.id, limit: .max) == .more)
        #expect(!engine.canReceive(dom5.id))
        // A privileged connection is still served while dom5 waits.
        var dom0 = EnginePeer(engine, .tool)
        #expect(dom0.write("/still/served", "yes").isOK)
        var replies = dom5.drain()
        #expect(replies.count == 20)
        #expect(engine.process(dom5.id, limit: .max) == .more)
        replies += dom5.drain()
        #expect(engine.process(dom5.id, limit: .max) == .idle)
        replies += dom5.drain()
        #expect(replies.map(\.requestID) == (0 ..< 50).map(UInt32.init))
        #expect(replies.allSatisfy { $0.payload == XSDErrorCode.enoent.payload })
    }

    @Test func bufferedInputIsBounded() {
        let engine = XenStoreEngine()
        let flooder = EnginePeer(engine, .tool)
        let one = XenStoreMessage(type: .read, requestID: 1, payload: Array("/tool\0".utf8)).encoded()
        #expect(engine.wantsInput(flooder.id))
        engine.receive(flooder.id, Array([[UInt8]](repeating: one, count: XenStoreEngine.inputHighWater / one.count + 1).joined()))
        #expect(!engine.wantsInput(flooder.id))
        while engine.process(flooder.id, limit: 64) == .more { _ = flooder.drain() }
        #expect(engine.wantsInput(flooder.id))
    }

    @Test func privilegedPeerThatNeverReadsIsDropped() {
        let engine = XenStoreEngine(outputHighWater: 1024)
        var writer = EnginePeer(engine, .tool)
        var sleeper = EnginePeer(engine, .tool)
        #expect(sleeper.watch("/busy", "t").isOK)
        for i in 0 ..< 3000 { #expect(writer.write("/busy/k", "\(i)").isOK) }
        guard case .close(.peerNotReading) = engine.process(sleeper.id, limit: 1) else {
            Issue.record("expected the non-reading peer to be dropped")
            return
        }
        #expect(engine.isOverflowed(sleeper.id))
        #expect(writer.read("/busy/k") == .success("2999"))
    }

    @Test func pendingWatchEventsAreBounded() {
        var quotas = XenStoreQuotas()
        quotas.pendingWatchEvents = 3
        var (engine, dom0, dom5) = domainStore(quotas)
        #expect(dom5.watch("w", "t").isOK)
        // The reply and the initial event were taken off the queue with the reply.
        for i in 0 ..< 5 { #expect(dom0.write("/local/domain/5/w", "\(i)").isOK) }
        let events = dom5.events()
        #expect(events.count == 1 + 3)
        #expect(events.last == XenStoreWatchEvent(path: "w", token: "t"))
        #expect(engine.droppedEvents(dom5.id) == 2)
    }
}

@Suite struct MalformedInputTests {
    @Test func unknownTypesGetENOSYS() {
        let engine = XenStoreEngine()
        let peer = EnginePeer(engine, .tool)
        for type: UInt32 in [20, 23, 99, 0xffff, 0xffff_ffff, XSDSockmsgType.watchEvent.rawValue, XSDSockmsgType.error.rawValue] {
            _ = peer.sendBytes(XenStoreMessage(rawType: type, requestID: 77, transactionID: 0, payload: [0]).encoded())
            let out = peer.drain()
            #expect(out.count == 1)
            #expect(out.first?.type == .error && out.first?.requestID == 77)
            #expect(out.first?.payload == XSDErrorCode.enosys.payload)
        }
    }

    @Test func oversizedLengthClosesTheConnection() {
        let engine = XenStoreEngine()
        let bad = EnginePeer(engine, .tool)
        var good = EnginePeer(engine, .tool)
        var header: [UInt8] = []
        XSDSockmsgHeader(type: 2, requestID: 1, transactionID: 0, length: 4097).encode(into: &header)
        guard case .close(.payloadTooLong(4097, 4096)) = bad.sendBytes(header) else {
            Issue.record("expected close")
            return
        }
        #expect(good.write("/fine", "1").isOK)
    }

    @Test func stringsWithoutNulAndBadPathsGetEINVAL() {
        let engine = XenStoreEngine()
        var peer = EnginePeer(engine, .tool)
        let cases: [(XSDSockmsgType, [UInt8])] = [
            (.read, Array("/a".utf8)), (.write, Array("/a".utf8)), (.mkdir, Array("/a\0/b\0".utf8)),
            (.watch, Array("/a\0tok".utf8)), (.setPerms, Array("/a\0q1\0".utf8)), (.setPerms, Array("/a\0r\0".utf8)),
            (.read, Array("/a//b\0".utf8)), (.write, Array("/a/\0v".utf8)), (.write, Array("/a b\0v".utf8)),
            (.rm, Array("rel//ative\0".utf8)), (.directoryPart, Array("/\0".utf8)), (.transactionEnd, Array("yes\0".utf8)),
            (.getDomainPath, Array("-1\0".utf8)), (.read, [0x2f, 0xff, 0]),
        ]
        let before = engine.allPaths
        for (i, (type, payload)) in cases.enumerated() {
            _ = peer.sendBytes(XenStoreMessage(type: type, requestID: UInt32(i), payload: payload).encoded())
            let out = peer.drain()
            #expect(out.count == 1 && out[0].type == .error && out[0].requestID == UInt32(i), "\(type)")
            #expect(out.first?.payload == XSDErrorCode.einval.payload, "\(type) \(payload)")
        }
        #expect(engine.allPaths == before)
        #expect(peer.write("/still/works", "1").isOK)
    }

    @Test func repliesOverThePayloadLimitAreE2BIG() {
        let engine = XenStoreEngine()
        var peer = EnginePeer(engine, .tool)
        let name = String(repeating: "n", count: 200)
        for i in 0 ..< 30 { #expect(peer.mkdir("/big/\(name)\(i)").isOK) }
        #expect(peer.directory("/big") == .failure(.e2big))
        // DIRECTORY_PART pages through the same list.
        var names: [String] = []
        var offset: UInt32 = 0
        while true {
            guard case let .success(reply) = peer.call(.directoryPart(path: Array("/big".utf8), offset: offset)) else {
                Issue.record("DIRECTORY_PART failed")
                return
            }
            let body = reply.drop { $0 != 0 }.dropFirst()
            let finished = body.count >= 1 && body.last == 0 && (body.count == 1 || body[body.endIndex - 2] == 0)
            let part = finished ? body.dropLast() : body
            names += XenStoreClient.names(part)
            offset += UInt32(part.count)
            if finished { break }
        }
        #expect(names == (0 ..< 30).map { "\(name)\($0)" })
    }
}
