import Testing
@testable import Netif

@Suite("netif connection keys: tx/rx-ring-ref, event channels, queue-N/, the control ring")
struct NetifConnectionKeysTests {
    @Test("one queue pair with one event channel, at the top level, and back")
    func oneQueueShared() throws {
        let keys = NetifConnectionKeys(queues: [.init(txRingRef: 8, rxRingRef: 9, eventChannels: .shared(4))])
        #expect(keys.xenstoreEntries == ["tx-ring-ref": "8", "rx-ring-ref": "9", "event-channel": "4"])
        #expect(try NetifConnectionKeys(xenstore: keys.xenstoreEntries, queueCount: 1, splitEventChannels: true,
                                        controlRing: true) == keys)
    }

    @Test("split event channels, two queue pairs and a control ring: round trip")
    func splitMultiQueueControl() throws {
        let keys = NetifConnectionKeys(queues: [
            .init(txRingRef: 10, rxRingRef: 11, eventChannels: .split(tx: 5, rx: 6)),
            .init(txRingRef: 20, rxRingRef: 21, eventChannels: .split(tx: 7, rx: 8)),
        ], control: .init(ringRef: 30, eventChannel: 9))
        let entries = keys.xenstoreEntries
        #expect(entries["queue-1/event-channel-rx"] == "8")
        #expect(entries["ctrl-ring-ref"] == "30")
        #expect(entries["tx-ring-ref"] == nil)
        #expect(try NetifConnectionKeys(xenstore: entries, queueCount: 2, splitEventChannels: true, controlRing: true) == keys)
        #expect(Set(entries.keys).isSubset(of: Set(NetifConnectionKeys.keys(queueCount: 2))))
    }

    @Test("split channels the backend did not offer, or a control ring it did not offer, are not taken")
    func notOffered() throws {
        let entries = ["tx-ring-ref": "1", "rx-ring-ref": "2", "event-channel": "3", "event-channel-tx": "4",
                       "event-channel-rx": "5", "ctrl-ring-ref": "6", "event-channel-ctrl": "7"]
        let keys = try NetifConnectionKeys(xenstore: entries, queueCount: 1, splitEventChannels: false, controlRing: false)
        #expect(keys.queues[0].eventChannels == .shared(3))
        #expect(keys.control == nil)
        #expect(throws: NetifError.missingKey("event-channel")) {
            try NetifConnectionKeys(xenstore: ["tx-ring-ref": "1", "rx-ring-ref": "2", "event-channel-tx": "4",
                                               "event-channel-rx": "5"], queueCount: 1, splitEventChannels: false,
                                    controlRing: false)
        }
    }

    @Test("a missing or malformed node is named")
    func errors() {
        #expect(throws: NetifError.missingKey("queue-1/rx-ring-ref")) {
            try NetifConnectionKeys(xenstore: ["queue-0/tx-ring-ref": "1", "queue-0/rx-ring-ref": "2",
                                               "queue-0/event-channel": "3", "queue-1/tx-ring-ref": "4"],
                                    queueCount: 2, splitEventChannels: false, controlRing: false)
        }
        #expect(throws: NetifError.missingKey("event-channel-ctrl")) {
            try NetifConnectionKeys(xenstore: ["tx-ring-ref": "1", "rx-ring-ref": "2", "event-channel": "3",
                                               "ctrl-ring-ref": "6"], queueCount: 1, splitEventChannels: false,
                                    controlRing: true)
        }
        #expect(throws: NetifError.featureValue(key: "tx-ring-ref", value: "-1", expected: "a decimal number")) {
            try NetifConnectionKeys(xenstore: ["tx-ring-ref": "-1", "rx-ring-ref": "2", "event-channel": "3"],
                                    queueCount: 1, splitEventChannels: false, controlRing: false)
        }
    }
}
