import Netif
import Tap

/// What one handshake settled (`io/netif.h`, "Feature and Parameter Negotiation"): the
/// backend's features, the guest interface's address and MTU from the toolstack, and what
/// follows from them for the TAP device.
public struct NetFrontendLink: Sendable, Hashable {
    /// The backend's feature nodes.
    public var backend: NetifBackendFeatures
    /// The frontend node's `mac` and `mtu`.
    public var vif: NetifVifSettings
    /// Queue pairs in use: at most what the backend offers (`multi-queue-max-queues`).
    public var queues: Int

    public init(backend: NetifBackendFeatures, vif: NetifVifSettings, queues: Int = 1) {
        self.backend = backend
        self.vif = vif
        self.queues = queues
    }

    /// What the backend offers in `multi-queue-max-queues` (1 when it offers none).
    public var offeredQueues: Int { Int(backend.maxQueues ?? 1) }

    /// The offloads to let the TAP device hand us (TUNSETOFFLOAD): exactly what the
    /// backend takes, so the kernel never gives a frame the backend would refuse. A
    /// partial checksum is always taken (IPv4 checksum offload is on unless the frontend
    /// turns it off; an IPv6 one the backend does not take is finished here). TSO needs
    /// scatter-gather, as a GSO packet spans pages.
    public var tapOffloads: TapOffloads {
        var offloads: TapOffloads = .checksum
        if backend.scatterGather, backend.gsoTCPv4 { offloads.insert(.tso4) }
        if backend.scatterGather, backend.gsoTCPv6, backend.ipv6ChecksumOffload { offloads.insert(.tso6) }
        return offloads
    }

    /// The MTU for the guest interface: the toolstack's, at most what fits one page
    /// without `feature-sg` (Ethernet's 1500, as Linux's netfront caps it).
    public var mtu: Int {
        backend.scatterGather ? Int(vif.mtu) : min(Int(vif.mtu), Int(NetifVifSettings.defaultMTU))
    }

    /// The guest interface's address.
    public var macAddress: EthernetAddress {
        EthernetAddress(vif.mac[0], vif.mac[1], vif.mac[2], vif.mac[3], vif.mac[4], vif.mac[5])
    }

    /// The features this frontend publishes: grant-copy receive with notifications,
    /// scatter-gather, both GSO types and checksum offload both ways. The queue count
    /// (`multi-queue-num-queues`) is the connection's, written only for more than one pair.
    public static var frontendFeatures: NetifFrontendFeatures {
        var features = NetifFrontendFeatures()
        features.requestRxCopy = true
        features.rxNotify = true
        features.scatterGather = true
        features.gsoTCPv4 = true
        features.gsoTCPv6 = true
        features.noChecksumOffload = false
        features.ipv6ChecksumOffload = true
        return features
    }
}
