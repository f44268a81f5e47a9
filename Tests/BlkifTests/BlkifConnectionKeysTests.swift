import Testing
@testable import Blkif

@Suite("blkif connection keys: ring-ref(N), event-channel, queue-N/")
struct BlkifConnectionKeysTests {
    @Test("one one-page ring: ring-ref and event-channel at the top level, and back")
    func onePageOneQueue() throws {
        let keys = BlkifConnectionKeys(ringPageOrder: 0, queues: [.init(ringRefs: [8], eventChannel: 5)])
        #expect(keys.xenstoreEntries == ["ring-ref": "8", "event-channel": "5"])
        #expect(try BlkifConnectionKeys(xenstore: keys.xenstoreEntries, ringPageOrder: 0, queueCount: 1) == keys)
        // Linux's blkback also takes ring-ref0 for a one-page ring.
        let alias = try BlkifConnectionKeys(xenstore: ["ring-ref0": "8", "event-channel": "5"], ringPageOrder: 0, queueCount: 1)
        #expect(alias == keys)
    }

    @Test("several queues of four pages: queue-N/ring-refP, round trip")
    func multiPageMultiQueue() throws {
        let keys = BlkifConnectionKeys(ringPageOrder: 2, queues: [
            .init(ringRefs: [10, 11, 12, 13], eventChannel: 3), .init(ringRefs: [20, 21, 22, 23], eventChannel: 4)])
        let entries = keys.xenstoreEntries
        #expect(entries["queue-1/ring-ref3"] == "23")
        #expect(entries["queue-0/event-channel"] == "3")
        #expect(entries["ring-ref"] == nil)
        #expect(entries.count == 10)
        #expect(try BlkifConnectionKeys(xenstore: entries, ringPageOrder: 2, queueCount: 2) == keys)
        #expect(Set(entries.keys).isSubset(of: Set(BlkifConnectionKeys.keys(ringPageOrder: 2, queueCount: 2))))
    }

    @Test("a missing or malformed node is named")
    func errors() {
        #expect(throws: BlkifError.missingKey("queue-1/event-channel")) {
            try BlkifConnectionKeys(xenstore: ["queue-0/ring-ref": "1", "queue-0/event-channel": "2", "queue-1/ring-ref": "3"],
                                    ringPageOrder: 0, queueCount: 2)
        }
        #expect(throws: BlkifError.missingKey("ring-ref1")) {
            try BlkifConnectionKeys(xenstore: ["ring-ref0": "1", "event-channel": "2"], ringPageOrder: 1, queueCount: 1)
        }
        #expect(throws: BlkifError.featureValue(key: "ring-ref", value: "0x8", expected: "a decimal number")) {
            try BlkifConnectionKeys(xenstore: ["ring-ref": "0x8", "event-channel": "2"], ringPageOrder: 0, queueCount: 1)
        }
        #expect(throws: BlkifError.featureRange(key: "event-channel", value: 1 << 32, limit: 0...UInt64(UInt32.max))) {
            try BlkifConnectionKeys(xenstore: ["ring-ref": "8", "event-channel": "4294967296"], ringPageOrder: 0, queueCount: 1)
        }
        #expect(throws: BlkifError.self) {
            try BlkifConnectionKeys(xenstore: [:], ringPageOrder: 0, queueCount: 0)
        }
    }
}
