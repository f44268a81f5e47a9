import Netif
import SharedMemory
import XenBus
import XenPlatform

extension NetifBackendSuite {
    /// A handshake that lies: the backend must not read Connected, and must serve the vif
    /// after a start over.
    static func badHandshake(_ id: String, what: String,
                             _ make: @escaping @Sendable (NetfrontPeer) -> NetfrontPeer.Handshake) -> Check {
        Check(id) { peer in
            try await peer.startOver()
            try await peer.publish(make(peer))
            let states = try await peer.watchBackend()
            var seen = "\(what): backend read \(states.joined(separator: " -> "))"
            if let error = await peer.errorNode() { seen += ", error node '\(error)'" }
            guard !states.contains("Connected") else { return .fail(seen) }
            if let problem = await peer.servedAfterStartOver() { return .fail("\(seen); \(problem)") }
            return .pass("\(seen); served again after a start over")
        }
    }

    static func tampered(controlRing: Bool = false, _ body: @escaping @Sendable (inout [String: String]) -> Void) -> NetfrontPeer.Handshake {
        var handshake = NetfrontPeer.Handshake()
        handshake.controlRing = controlRing
        handshake.tamper = body
        return handshake
    }

    static let badHandshakes: [Check] = {
        typealias Key = NetifConnectionKeys.Key
        typealias Feature = NetifFrontendFeatures.Key
        return [
            badHandshake("NETIF-BE-050", what: "no tx-ring-ref") { _ in tampered { $0[Key.txRingRef] = nil } },
            badHandshake("NETIF-BE-051", what: "no rx-ring-ref") { _ in tampered { $0[Key.rxRingRef] = nil } },
            badHandshake("NETIF-BE-052", what: "no event-channel") { _ in tampered { $0[Key.eventChannel] = nil } },
            badHandshake("NETIF-BE-053", what: "tx-ring-ref never granted") { _ in tampered { $0[Key.txRingRef] = String(neverGranted) } },
            badHandshake("NETIF-BE-054", what: "one queue more than multi-queue-max-queues") { peer in
                var handshake = NetfrontPeer.Handshake()
                handshake.queues = (Int(peer.atInitWait[NetifBackendFeatures.Key.maxQueues] ?? "") ?? 1) + 1
                return handshake
            },
            badHandshake("NETIF-BE-055", what: "multi-queue-num-queues 0") { _ in tampered { $0[Feature.queueCount] = "0" } },
            badHandshake("NETIF-BE-056", what: "request-rx-copy 0") { _ in tampered { $0[Feature.requestRxCopy] = "0" } },
            badHandshake("NETIF-BE-057", what: "ctrl-ring-ref without event-channel-ctrl") { _ in
                tampered(controlRing: true) { $0[Key.eventChannelCtrl] = nil }
            },
            badHandshake("NETIF-BE-058", what: "event-channel never allocated") { _ in tampered { $0[Key.eventChannel] = "4093" } },
        ]
    }()

    // MARK: queues and split channels

    static let queues: [Check] = [
        Check("NETIF-BE-060") { peer in
            try await peer.startOver(force: true)
            var handshake = NetfrontPeer.Handshake()
            handshake.queues = 2
            try await peer.connect(handshake)
            var seen: [String] = []
            var ok = true
            for queue in 0 ..< 2 {
                let frame = peer.frame()
                let id = try peer.sendFrame(frame, page: queue, queue: queue)
                let responses = try peer.txResponses(1, queue: queue)
                let arrived = try peer.seenOnHost(frame) == frame
                ok = ok && responses == [NetifTxResponse(id: id, status: .okay)] && arrived
                seen.append("queue \(queue): answered \(describe(responses)), \(arrived ? "on the host" : "not on the host")")
            }
            return .expect(ok, seen.joined(separator: "; "))
        },
        Check("NETIF-BE-061") { peer in
            try await peer.startOver(force: true)
            var handshake = NetfrontPeer.Handshake()
            handshake.splitEventChannels = true
            try await peer.connect(handshake)
            if let problem = await peer.probe() { return .fail("with event-channel-tx and -rx: \(problem)") }
            return .pass("with event-channel-tx and event-channel-rx: a frame crossed each way")
        },
    ]
}
