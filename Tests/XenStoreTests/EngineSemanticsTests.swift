import Testing
@testable import XenStore

/// A store with /local/domain/5 and /local/domain/6 owned by their domains, as a toolstack
/// sets them up.
private func twoDomains(quotas: XenStoreQuotas = XenStoreQuotas()) -> (XenStoreEngine, EnginePeer, EnginePeer, EnginePeer) {
    let engine = XenStoreEngine(quotas: quotas)
    var dom0 = EnginePeer(engine, .tool)
    for d in [5, 6] {
        #expect(dom0.mkdir("/local/domain/\(d)").isOK)
        #expect(dom0.setPerms("/local/domain/\(d)", "n\(d)").isOK)
    }
    return (engine, dom0, EnginePeer(engine, .domain(5)), EnginePeer(engine, .domain(6)))
}

@Suite struct PermissionTests {
    @Test func ownerAndDom0HaveFullAccess() {
        var (_, dom0, dom5, _) = twoDomains()
        #expect(dom5.write("name", "five").isOK)
        #expect(dom5.read("/local/domain/5/name") == .success("five"))
        #expect(dom0.read("/local/domain/5/name") == .success("five"))
        // Created by dom5 under its home: inherits the parent's list, owned by dom5.
        #expect(dom5.call(.getPerms(path: Array("name".utf8))) == .success(Array("n5\0".utf8)))
        // dom0 creates below dom5's home: the inherited list keeps dom5 as owner.
        #expect(dom0.write("/local/domain/5/by-dom0", "x").isOK)
        #expect(dom5.call(.getPerms(path: Array("by-dom0".utf8))) == .success(Array("n5\0".utf8)))
    }

    @Test func othersAreDeniedAndCannotProbe() {
        var (_, dom0, dom5, dom6) = twoDomains()
        #expect(dom6.write("secret", "s").isOK)
        #expect(dom5.read("/local/domain/6/secret") == .failure(.eacces))
        // A node that does not exist under an unreadable parent is EACCES, not ENOENT.
        #expect(dom5.read("/local/domain/6/missing") == .failure(.eacces))
        #expect(dom5.read("/local/domain/5/missing") == .failure(.enoent))
        #expect(dom5.write("/local/domain/6/secret", "x").isFailure(.eacces))
        #expect(dom5.write("/local/domain/6/new", "x").isFailure(.eacces))
        #expect(dom5.rm("/local/domain/6").isFailure(.eacces))
        #expect(dom5.directory("/local/domain/6") == .failure(.eacces))
        #expect(dom5.write("/top", "x").isFailure(.eacces))
        #expect(dom0.read("/local/domain/6/secret") == .success("s"))
    }

    @Test func aclEntriesGrantPerDomain() {
        var (_, dom0, dom5, dom6) = twoDomains()
        #expect(dom6.write("shared", "v").isOK)
        #expect(dom6.setPerms("shared", "n6", "r5").isOK)
        #expect(dom5.read("/local/domain/6/shared") == .success("v"))
        #expect(dom5.write("/local/domain/6/shared", "w").isFailure(.eacces))
        #expect(dom6.setPerms("shared", "n6", "b5").isOK)
        #expect(dom5.write("/local/domain/6/shared", "w").isOK)
        // Write access is not ownership: dom5 may not change the list.
        #expect(dom5.setPerms("/local/domain/6/shared", "n6", "b5", "r7").isFailure(.eacces))
        // The default entry applies to domains not listed.
        #expect(dom0.setPerms("/local/domain/6/shared", "r6").isOK)
        #expect(dom5.read("/local/domain/6/shared") == .success("w"))
    }

    @Test func onlyPrivilegedMayChangeOwnerOrUsePrivilegedOps() {
        var (_, dom0, dom5, _) = twoDomains()
        #expect(dom5.write("x", "1").isOK)
        #expect(dom5.setPerms("x", "n6").isFailure(.eperm))
        #expect(dom5.setPerms("x", "n5", "r6").isOK)
        #expect(dom0.setPerms("/local/domain/5/x", "n6").isOK)
        #expect(dom5.call(.introduce(domid: 9, mfn: 1, port: 1)).isFailure(.eacces))
        #expect(dom5.call(.release(domid: 6)).isFailure(.eacces))
        #expect(dom5.call(.isDomainIntroduced(domid: 6)).isFailure(.eacces))
        #expect(dom5.call(.control(arguments: [])).isFailure(.eacces))
        #expect(dom5.call(.getDomainPath(domid: 6)) == .success(Array("/local/domain/6\0".utf8)))
    }

    @Test func relativePaths() {
        var (_, dom0, dom5, _) = twoDomains()
        #expect(dom5.write("device/vbd/51712/state", "1").isOK)
        #expect(dom0.read("/local/domain/5/device/vbd/51712/state") == .success("1"))
        #expect(dom5.directory("device/vbd") == .success(["51712"]))
        // Socket tools resolve relative paths under dom0's home, as C xenstored does.
        #expect(dom0.write("/local/domain/0/backend/vif/5/0/state", "2").isOK)
        #expect(dom0.read("backend/vif/5/0/state") == .success("2"))
        #expect(dom0.read("backend//vif").isFailure(.einval))
        #expect(dom5.read("bad//path").isFailure(.einval))
        #expect(dom5.read("trailing/").isFailure(.einval))
        #expect(dom5.read("sp ace").isFailure(.einval))
    }

    @Test func rootCannotBeRemovedAndRmOfAbsentNeedsParent() {
        var (_, dom0, _, _) = twoDomains()
        #expect(dom0.rm("/").isFailure(.einval))
        #expect(dom0.rm("/local/missing").isOK)
        #expect(dom0.rm("/nope/missing").isFailure(.enoent))
    }
}

@Suite struct TransactionTests {
    @Test func conflictingCommitGetsEAGAIN() {
        let engine = XenStoreEngine()
        var a = EnginePeer(engine, .tool)
        var b = EnginePeer(engine, .tool)
        #expect(a.write("/counter", "0").isOK)
        let ta = a.start(), tb = b.start()
        #expect(ta != 0 && tb != 0)
        #expect(a.read("/counter", tx: ta) == .success("0"))
        #expect(b.read("/counter", tx: tb) == .success("0"))
        #expect(a.write("/counter", "1", tx: ta).isOK)
        #expect(b.write("/counter", "1", tx: tb).isOK)
        #expect(a.end(ta).isOK)
        #expect(b.end(tb).isFailure(.eagain))
        #expect(a.read("/counter") == .success("1"))
        // The failed transaction is gone.
        #expect(b.end(tb).isFailure(.enoent))
    }

    @Test func isolationUntilCommit() {
        let engine = XenStoreEngine()
        var a = EnginePeer(engine, .tool)
        var b = EnginePeer(engine, .tool)
        #expect(b.watch("/t", "w").isOK)
        _ = b.events()
        let tx = a.start()
        #expect(a.write("/t/x/y", "v", tx: tx).isOK)
        #expect(a.read("/t/x/y", tx: tx) == .success("v"))
        #expect(b.read("/t/x/y").isFailure(.enoent))
        #expect(b.events().isEmpty)
        #expect(a.end(tx).isOK)
        #expect(b.read("/t/x/y") == .success("v"))
        #expect(b.events() == [XenStoreWatchEvent(path: "/t/x/y", token: "w")])
        #expect(engine.checkInvariants() == nil)
    }

    @Test func abortLeavesNothing() {
        let engine = XenStoreEngine()
        var a = EnginePeer(engine, .tool)
        let before = engine.allPaths
        let tx = a.start()
        #expect(a.write("/x/y/z", "1", tx: tx).isOK)
        #expect(a.rm("/tool", tx: tx).isOK)
        #expect(a.end(tx, commit: false).isOK)
        #expect(engine.allPaths == before)
    }

    @Test func siblingCreationConflicts() {
        let engine = XenStoreEngine()
        var a = EnginePeer(engine, .tool)
        var b = EnginePeer(engine, .tool)
        #expect(a.mkdir("/dir").isOK)
        let tx = a.start()
        #expect(a.write("/dir/a", "1", tx: tx).isOK)
        #expect(b.write("/dir/b", "2").isOK)
        #expect(a.end(tx).isFailure(.eagain))
        #expect(a.directory("/dir") == .success(["b"]))
    }

    @Test func transactionIDErrors() {
        let engine = XenStoreEngine()
        var a = EnginePeer(engine, .tool)
        var b = EnginePeer(engine, .tool)
        let tx = a.start()
        #expect(a.call(.transactionStart, tx: tx).isFailure(.ebusy))
        #expect(a.read("/tool", tx: 999).isFailure(.enoent))
        #expect(b.read("/tool", tx: tx).isFailure(.enoent)) // ids are per connection
        #expect(a.end(0).isFailure(.enoent))
        #expect(a.call(.transactionEnd(commit: true), tx: 12345).isFailure(.enoent))
    }

    @Test func disconnectMidTransactionDiscardsIt() {
        let engine = XenStoreEngine()
        var a = EnginePeer(engine, .tool)
        var b = EnginePeer(engine, .tool)
        let before = engine.allPaths
        let tx = a.start()
        #expect(a.write("/half/applied", "1", tx: tx).isOK)
        engine.closeConnection(a.id)
        #expect(engine.allPaths == before)
        #expect(b.write("/after", "ok").isOK)
        #expect(engine.checkInvariants() == nil)
    }
}

@Suite struct WatchTests {
    @Test func initialEventThenNodeAndChildren() {
        let engine = XenStoreEngine()
        var a = EnginePeer(engine, .tool)
        var w = EnginePeer(engine, .tool)
        // The initial event comes right after the acknowledgement.
        let rid = w.nextRequest
        _ = w.sendBytes(XenStoreMessage(type: .watch, requestID: rid, payload: XenStoreRequest.watch(
            path: Array("/a".utf8), token: Array("tok".utf8)).payload()).encoded())
        let out = w.drain()
        #expect(out.map(\.type) == [.watch, .watchEvent])
        #expect(out[1].payload == Array("/a\0tok\0".utf8))
        #expect(a.write("/a", "1").isOK)
        #expect(a.write("/a/b/c", "2").isOK)
        #expect(a.write("/ab", "3").isOK)
        #expect(a.write("/", "4").isOK)
        #expect(w.events() == [.init(path: "/a", token: "tok"), .init(path: "/a/b/c", token: "tok")])
        // Removing a subtree reports its root to watches at or above it, and each removed
        // descendant only to watches set exactly on it.
        #expect(a.rm("/a").isOK)
        #expect(w.events() == [.init(path: "/a", token: "tok")])
    }

    @Test func watchAboveAndBelowRemoval() {
        let engine = XenStoreEngine()
        var a = EnginePeer(engine, .tool)
        var w = EnginePeer(engine, .tool)
        #expect(a.write("/p/q/r", "1").isOK)
        #expect(w.watch("/p/q/r", "deep").isOK)
        #expect(w.watch("/p/q/r/nonexistent", "absent").isOK)
        _ = w.events()
        #expect(a.rm("/p").isOK)
        #expect(w.events() == [.init(path: "/p/q/r", token: "deep")])
    }

    @Test func duplicatesAndUnwatch() {
        let engine = XenStoreEngine()
        var w = EnginePeer(engine, .tool)
        #expect(w.watch("/a", "t").isOK)
        #expect(w.watch("/a", "t").isFailure(.eexist))
        #expect(w.watch("/a", "u").isOK)
        #expect(w.call(.unwatch(path: Array("/a".utf8), token: Array("t".utf8))).isOK)
        #expect(w.call(.unwatch(path: Array("/a".utf8), token: Array("t".utf8))).isFailure(.enoent))
        #expect(w.watch("bad//", "t").isFailure(.einval))
        #expect(w.call(.resetWatches).isOK)
        #expect(engine.watchCount(w.id) == 0)
    }

    @Test func relativeWatchReportsRelativePaths() {
        var (_, dom0, dom5, _) = twoDomains()
        #expect(dom5.watch("device", "dev").isOK)
        #expect(dom5.events() == [.init(path: "device", token: "dev")])
        #expect(dom0.write("/local/domain/5/device/vif/0", "x").isOK)
        #expect(dom5.events() == [.init(path: "device/vif/0", token: "dev")])
        #expect(dom5.watch("/local/domain/5/device", "abs").isOK)
        _ = dom5.events()
        #expect(dom0.write("/local/domain/5/device/vif/1", "x").isOK)
        #expect(dom5.events() == [.init(path: "device/vif/1", token: "dev"), .init(path: "/local/domain/5/device/vif/1", token: "abs")])
    }

    @Test func eventsNeedReadPermission() {
        var (_, dom0, dom5, dom6) = twoDomains()
        #expect(dom5.watch("/local/domain/6", "spy").isOK)
        _ = dom5.events()
        #expect(dom6.write("private", "x").isOK)
        #expect(dom5.events().isEmpty)
        #expect(dom6.write("public", "y").isOK)
        #expect(dom6.setPerms("public", "n6", "r5").isOK)
        #expect(dom5.events() == [.init(path: "/local/domain/6/public", token: "spy")])
        // Losing read access still reports the change that removed it (old permissions).
        #expect(dom6.setPerms("public", "n6").isOK)
        #expect(dom5.events() == [.init(path: "/local/domain/6/public", token: "spy")])
        #expect(dom0.write("/local/domain/6/public", "z").isOK)
        #expect(dom5.events().isEmpty)
    }

    @Test func specialEvents() {
        var (engine, dom0, dom5, _) = twoDomains()
        #expect(dom0.watch("@introduceDomain", "in").isOK)
        #expect(dom0.watch("@releaseDomain", "out").isOK)
        #expect(dom5.watch("@releaseDomain", "out5").isOK)
        #expect(dom0.events() == [.init(path: "@introduceDomain", token: "in"), .init(path: "@releaseDomain", token: "out")])
        _ = dom5.events()
        #expect(dom0.call(.introduce(domid: 7, mfn: 99, port: 3)).isOK)
        #expect(dom0.call(.isDomainIntroduced(domid: 7)) == .success(Array("T\0".utf8)))
        #expect(dom0.events() == [.init(path: "@introduceDomain", token: "in")])
        #expect(dom0.call(.release(domid: 7)).isOK)
        #expect(dom0.call(.release(domid: 7)).isFailure(.enoent))
        #expect(dom0.call(.isDomainIntroduced(domid: 7)) == .success(Array("F\0".utf8)))
        #expect(dom0.events() == [.init(path: "@releaseDomain", token: "out")])
        // dom5 has no access to the special node until dom0 grants it.
        #expect(dom5.events().isEmpty)
        #expect(dom0.setPerms("@releaseDomain", "n0", "r5").isOK)
        #expect(dom0.call(.getPerms(path: Array("@releaseDomain".utf8))) == .success(Array("n0\0r5\0".utf8)))
        engine.introduceDomain(8)
        engine.releaseDomain(8)
        #expect(dom5.events() == [.init(path: "@releaseDomain", token: "out5")])
    }

    @Test func watchStormKeepsEveryEventInOrder() {
        let engine = XenStoreEngine()
        var writer = EnginePeer(engine, .tool)
        var watchers = (0 ..< 8).map { _ in EnginePeer(engine, .tool) }
        for i in watchers.indices {
            #expect(watchers[i].watch("/storm", "w\(i)").isOK)
            _ = watchers[i].events()
        }
        for n in 0 ..< 2000 { #expect(writer.write("/storm/n\(n % 50)", "\(n)").isOK) }
        for i in watchers.indices {
            let events = watchers[i].events()
            #expect(events.count == 2000)
            #expect(events.enumerated().allSatisfy { $0.element.path == "/storm/n\($0.offset % 50)" && $0.element.token == "w\(i)" })
        }
    }
}

extension Result where Success == [UInt8], Failure == XSDErrorCode {
    func isFailure(_ code: XSDErrorCode) -> Bool { self == .failure(code) }
}
extension Result where Success == String, Failure == XSDErrorCode {
    func isFailure(_ code: XSDErrorCode) -> Bool { self == .failure(code) }
}
