import Foundation
import XenTesting
import Testing
@testable import XenStore
import FuzzTargets

@Suite struct FuzzTests {
    /// Seeded mutations of valid request streams (bit flips, truncations, length and type
    /// words rewritten, splices) from several identities. After each stream: the tree's
    /// invariants hold, all output frames, and an honest connection is served.
    @Test(arguments: [11, 12, 13] as [UInt64])
    func seededMutationsOfRequestStreams(seed: UInt64) {
        var rng = SeededGenerator(seed: seed)
        let seeds: [XenStoreRequest] = [
            .write(path: Array("/a/b".utf8), value: Array("v".utf8)), .read(path: Array("/a/b".utf8)),
            .mkdir(path: Array("rel/dir".utf8)), .rm(path: Array("/a".utf8)), .directory(path: Array("/".utf8)),
            .directoryPart(path: Array("/".utf8), offset: 0), .getPerms(path: Array("/a".utf8)),
            .setPerms(path: Array("/a/b".utf8), permissions: [.init(domid: 1, access: .read)]),
            .watch(path: Array("/a".utf8), token: Array("t".utf8)), .unwatch(path: Array("/a".utf8), token: Array("t".utf8)),
            .transactionStart, .transactionEnd(commit: true), .introduce(domid: 3, mfn: 1, port: 2),
            .release(domid: 3), .getDomainPath(domid: 2), .isDomainIntroduced(domid: 3), .resetWatches,
        ]
        var quotas = XenStoreQuotas()
        quotas.nodesPerDomain = 40
        for round in 0 ..< 400 {
            let engine = XenStoreEngine(quotas: quotas)
            let identity: XenStoreIdentity = round % 3 == 0 ? .tool : .domain(UInt16(round % 4 + 1))
            let fuzzed = engine.openConnection(identity: identity)
            var honest = EnginePeer(engine, .tool)
            var stream: [UInt8] = []
            for _ in 0 ..< Int.random(in: 1 ... 12, using: &rng) {
                let r = seeds.randomElement(using: &rng)!
                stream += XenStoreMessage(type: r.type, requestID: UInt32.random(in: 0 ... 9, using: &rng),
                                          transactionID: UInt32.random(in: 0 ... 2, using: &rng), payload: r.payload()).encoded()
            }
            for _ in 0 ..< Int.random(in: 0 ... 6, using: &rng) where !stream.isEmpty {
                let i = Int.random(in: 0 ..< stream.count, using: &rng)
                switch Int.random(in: 0 ..< 5, using: &rng) {
                case 0: stream[i] ^= UInt8(1) << UInt8.random(in: 0 ... 7, using: &rng)
                case 1: stream.removeSubrange(i...)
                case 2: stream[i] = [0, 0xff, 0x2f, 0x40].randomElement(using: &rng)!
                case 3: stream.insert(contentsOf: stream[i...].prefix(Int.random(in: 1 ... 40, using: &rng)), at: i)
                default: stream.insert(UInt8.random(in: 0 ... 255, using: &rng), at: i)
                }
            }
            var offset = 0
            var open = true
            while offset < stream.count, open {
                let n = min(stream.count - offset, Int.random(in: 1 ... 64, using: &rng))
                engine.receive(fuzzed, Array(stream[offset ..< offset + n]))
                offset += n
                loop: while true {
                    switch engine.process(fuzzed, limit: 8) {
                    case .idle: break loop
                    case .more: _ = drainFraming(engine, fuzzed)
                    case .close:
                        engine.closeConnection(fuzzed)
                        open = false
                        break loop
                    }
                }
                #expect(engine.checkInvariants() == nil, "seed \(seed) round \(round)")
            }
            if open { _ = drainFraming(engine, fuzzed) }
            #expect(honest.write("/honest", "\(round)").isOK)
            #expect(honest.read("/honest") == .success("\(round)"))
        }
    }

    private func drainFraming(_ engine: XenStoreEngine, _ id: XenStoreConnectionID) -> [XenStoreMessage] {
        var framer = XenStoreMessageFramer()
        while let out = engine.popOutput(id) { framer.append(out) }
        var messages: [XenStoreMessage] = []
        while let m = try? framer.next() { messages.append(m) }
        #expect(framer.bufferedCount == 0)
        #expect(messages.allSatisfy { $0.type != nil })
        return messages
    }

    /// The libFuzzer target's entry (scripts/fuzz.sh xenstore) on seeded random streams
    /// built from the golden requests, so its own checks run in every test build.
    @Test func fuzzTargetReplaysGoldenSeededStreams() async throws {
        let golden = try String(contentsOf: repositoryRoot.appendingPathComponent("Protocols/xenstore-golden.txt"), encoding: .utf8)
        let messages = golden.split(separator: "\n").filter { !$0.hasPrefix("#") }.map { hexBytes(String($0.split(separator: " ").last!)) }
        // Off the pool: the targets take one lock, which other suites' fuzz replays hold too.
        try await offThePool {
            var rng = SeededGenerator(seed: 5)
            for round in 0 ..< 300 {
                var input: [UInt8] = [UInt8(round % 5), UInt8.random(in: 0 ... 255, using: &rng)]
                for _ in 0 ..< Int.random(in: 1 ... 6, using: &rng) { input += messages.randomElement(using: &rng)! }
                if !input.isEmpty, round % 2 == 1 { input[Int.random(in: 2 ..< input.count, using: &rng)] ^= 0x40 }
                input.withUnsafeBytes { FuzzTarget.xenstore.run($0) }
            }
        }
    }
}
