import Testing
import XenTesting
@testable import XenStore

/// A plain model of the tree: values and ordered children, dom0 only.
private struct Model {
    var values: [String: String] = ["/": ""]
    var children: [String: [String]] = ["/": []]

    mutating func create(_ path: String) {
        if values[path] != nil { return }
        let parent = XenStorePath.parent(of: path)
        create(parent)
        values[path] = ""
        children[path] = []
        children[parent]!.append(XenStorePath.basename(of: path))
    }

    mutating func remove(_ path: String) {
        for child in children[path] ?? [] { remove(XenStorePath.join(path, child)) }
        values[path] = nil
        children[path] = nil
    }

    enum Op {
        case write(String, String), mkdir(String), rm(String), read(String), directory(String)
    }

    mutating func apply(_ op: Op) -> Result<[UInt8], XSDErrorCode> {
        let ok: Result<[UInt8], XSDErrorCode> = .success(Array("OK\0".utf8))
        switch op {
        case let .write(p, v):
            create(p)
            values[p] = v
            return ok
        case let .mkdir(p):
            create(p)
            return ok
        case let .rm(p):
            if values[p] != nil {
                remove(p)
                let parent = XenStorePath.parent(of: p)
                children[parent]!.removeAll { $0 == XenStorePath.basename(of: p) }
                return ok
            }
            return values[XenStorePath.parent(of: p)] != nil ? ok : .failure(.enoent)
        case let .read(p):
            return values[p].map { .success(Array($0.utf8)) } ?? .failure(.enoent)
        case let .directory(p):
            return children[p].map { .success(XenStoreStrings.join($0)) } ?? .failure(.enoent)
        }
    }
}

private func request(_ op: Model.Op) -> XenStoreRequest {
    switch op {
    case let .write(p, v): return .write(path: Array(p.utf8), value: Array(v.utf8))
    case let .mkdir(p): return .mkdir(path: Array(p.utf8))
    case let .rm(p): return .rm(path: Array(p.utf8))
    case let .read(p): return .read(path: Array(p.utf8))
    case let .directory(p): return .directory(path: Array(p.utf8))
    }
}

@Suite struct ModelCheckTests {
    @Test(arguments: [1, 2, 3, 42] as [UInt64])
    func randomOperationsFromSeveralClientsMatchTheModel(seed: UInt64) {
        var rng = SeededGenerator(seed: seed)
        let engine = XenStoreEngine()
        var peers = (0 ..< 3).map { _ in EnginePeer(engine, .tool) }
        var model = Model()
        // The engine's own initial nodes.
        model.create("/tool/xenstored")
        var open: [UInt32?] = [nil, nil, nil]
        var recorded: [[(Model.Op, Result<[UInt8], XSDErrorCode>)]] = [[], [], []]
        var commits = 0, conflicts = 0
        let names = ["a", "b", "c"]
        func randomPath() -> String {
            var p = "/m"
            for _ in 0 ..< Int.random(in: 0 ... 3, using: &rng) { p += "/" + names.randomElement(using: &rng)! }
            return p
        }
        for _ in 0 ..< 3000 {
            let c = Int.random(in: 0 ..< peers.count, using: &rng)
            let roll = Int.random(in: 0 ..< 100, using: &rng)
            if roll < 6 {
                if let tx = open[c] {
                    let commit = roll < 5
                    let reply = peers[c].end(tx, commit: commit)
                    if commit && reply.isOK {
                        commits += 1
                        // Serializable at commit: replaying the transaction's operations now
                        // gives the replies it saw.
                        for (op, seen) in recorded[c] { #expect(model.apply(op) == seen) }
                    } else if commit {
                        #expect(reply == .failure(.eagain))
                        conflicts += 1
                    }
                    open[c] = nil
                    recorded[c] = []
                } else {
                    open[c] = peers[c].start()
                }
                continue
            }
            let path = randomPath()
            let op: Model.Op
            switch roll % 5 {
            case 0: op = .write(path, "v\(Int.random(in: 0 ..< 1000, using: &rng))")
            case 1: op = .mkdir(path)
            case 2: op = .rm(path)
            case 3: op = .read(path)
            default: op = .directory(path)
            }
            let reply = peers[c].call(request(op), tx: open[c] ?? 0)
            if open[c] != nil {
                recorded[c].append((op, reply))
            } else {
                #expect(model.apply(op) == reply, "seed \(seed) \(op)")
            }
        }
        #expect(commits > 10 && conflicts > 0, "commits \(commits) conflicts \(conflicts)")
        #expect(engine.checkInvariants() == nil)
        #expect(engine.allPaths == model.values.keys.sorted())
        for path in engine.allPaths {
            #expect(engine.value(at: path) == Array(model.values[path]!.utf8), "\(path)")
            #expect(engine.children(at: path) == model.children[path], "\(path)")
        }
    }
}
