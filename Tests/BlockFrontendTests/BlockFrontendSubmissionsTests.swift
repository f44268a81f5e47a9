import Foundation
import Synchronization
import Testing
@testable import BlockFrontend

/// ``BlockFrontendSubmissions``, the lock-free stack submitters push operations to.
@Suite struct BlockFrontendSubmissionsTests {
    /// An operation whose sector records who pushed it and in which order.
    static func operation(pusher: Int, index: Int) -> BlockFrontendOperation {
        BlockFrontendOperation(kind: .flush, sector: UInt64(pusher << 32 | index), count: 0, data: [], completion: { _ in })
    }

    @Test func takesInTheOrderPushed() {
        let submissions = BlockFrontendSubmissions()
        var batch: [BlockFrontendOperation] = []
        submissions.takeAll(into: &batch)
        #expect(batch.isEmpty)
        for index in 0..<5 { submissions.push(Self.operation(pusher: 0, index: index)) }
        submissions.takeAll(into: &batch)
        for index in 5..<8 { submissions.push(Self.operation(pusher: 0, index: index)) }
        submissions.takeAll(into: &batch)
        #expect(batch.map(\.sector) == (0..<8).map { UInt64($0) })
        #expect(batch.allSatisfy { $0.nextSubmitted == nil })
        submissions.takeAll(into: &batch)
        #expect(batch.count == 8, "a second take finds nothing")
    }

    /// Pushers on their own threads race a taker: every operation comes out exactly
    /// once, and each pusher's in the order it pushed them.
    @Test func concurrentPushersLoseNothing() async {
        let submissions = BlockFrontendSubmissions()
        let pushers = 4
        let each = 20_000
        let finished = Atomic<Int>(0)
        for pusher in 0..<pushers {
            Thread {
                for index in 0..<each { submissions.push(Self.operation(pusher: pusher, index: index)) }
                finished.add(1, ordering: .sequentiallyConsistent)
            }.start()
        }
        var taken: [BlockFrontendOperation] = []
        var batch: [BlockFrontendOperation] = []
        while true {
            let done = finished.load(ordering: .sequentiallyConsistent) == pushers
            submissions.takeAll(into: &batch)
            taken += batch
            batch.removeAll(keepingCapacity: true)
            if done { break }
            await Task.yield()
        }
        #expect(taken.count == pushers * each)
        var next = [Int](repeating: 0, count: pushers)
        var outOfOrder = 0
        for operation in taken {
            let pusher = Int(operation.sector >> 32)
            let index = Int(operation.sector & 0xFFFF_FFFF)
            if index != next[pusher] { outOfOrder += 1 }
            next[pusher] = index + 1
        }
        #expect(outOfOrder == 0)
        #expect(next == [Int](repeating: each, count: pushers))
    }

    /// Operations still pushed when the stack goes away are released (not leaked).
    @Test func dropsWhatIsLeftWhenFreed() {
        weak var left: BlockFrontendOperation?
        do {
            let submissions = BlockFrontendSubmissions()
            let operation = Self.operation(pusher: 0, index: 0)
            left = operation
            submissions.push(operation)
        }
        #expect(left == nil)
    }
}
