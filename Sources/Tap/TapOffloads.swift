import CTap

/// What the program reading and writing a TAP device can take from the kernel in place
/// of finished packets: the TUN_F_* flags of TUNSETOFFLOAD (linux/if_tun.h). With none
/// set, every packet read from the device is checksummed and no larger than the MTU.
///
/// Only the flags the installed linux/if_tun.h defines are offered; its values are the
/// header's own, through CTap.
public struct TapOffloads: OptionSet, Sendable, Hashable {
    public let rawValue: UInt32

    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// TUN_F_CSUM: packets may come with a partial checksum (virtio NEEDS_CSUM).
    public static let checksum = TapOffloads(rawValue: ctap_tun_f_csum)
    /// TUN_F_TSO4: TCP over IPv4 may come unsegmented (needs ``checksum``).
    public static let tso4 = TapOffloads(rawValue: ctap_tun_f_tso4)
    /// TUN_F_TSO6: TCP over IPv6 may come unsegmented (needs ``checksum``).
    public static let tso6 = TapOffloads(rawValue: ctap_tun_f_tso6)
    /// TUN_F_TSO_ECN: unsegmented TCP may carry the ECN (CWR) bit.
    public static let tsoECN = TapOffloads(rawValue: ctap_tun_f_tso_ecn)
    /// TUN_F_UFO: UDP may come unfragmented (Linux stopped producing UFO in 4.14).
    public static let ufo = TapOffloads(rawValue: ctap_tun_f_ufo)
}
