/// The machine ABI whose struct layout a frontend uses on the ring (`io/blkif.h`: the
/// frontend's `protocol` node, values from `io/protocols.h`).
///
/// The blkif structs hold 64-bit fields after narrower ones, so i386 (4-byte alignment of
/// `uint64_t`) and x86_64 lay them out differently; a backend must decode the frontend's.
public enum BlkifABI: Sendable, Hashable, CaseIterable {
    /// The ABI of this host (x86_64 layout on x86_64 and arm64, x86_32 on i386).
    case native
    /// `io/protocols.h: XEN_IO_PROTO_ABI_X86_32` ("x86_32-abi").
    case x86_32
    /// `io/protocols.h: XEN_IO_PROTO_ABI_X86_64` ("x86_64-abi").
    case x86_64

    /// Parses the frontend's `protocol` node; an absent node means ``native`` (`io/blkif.h`).
    public init(protocol name: String?) throws(BlkifError) {
        switch name {
        case nil: self = .native
        case "x86_32-abi": self = .x86_32
        case "x86_64-abi": self = .x86_64
        case "arm-abi"?:
            // arm-abi shares the x86_64 layout, but only an arm host calls it native.
            #if arch(arm64) || arch(arm)
            self = .native
            #else
            throw .unknownABI("arm-abi")
            #endif
        case let other?: throw .unknownABI(other)
        }
    }

    /// The value of the `protocol` node naming this ABI.
    public var protocolName: String {
        switch self {
        case .x86_32: return "x86_32-abi"
        case .x86_64: return "x86_64-abi"
        case .native:
            #if arch(i386)
            return "x86_32-abi"
            #elseif arch(arm64) || arch(arm)
            return "arm-abi"
            #else
            return "x86_64-abi"
            #endif
        }
    }

    /// The `protocol` node values this host accepts, each named once (``native`` is one
    /// of the others under its own name), for messages that list them.
    public static var protocolNames: [String] {
        var names: [String] = []
        for abi in [BlkifABI.x86_32, .x86_64, .native] where !names.contains(abi.protocolName) {
            names.append(abi.protocolName)
        }
        return names
    }

    /// Field offsets and struct sizes for this ABI.
    @inlinable
    public var layout: BlkifLayout {
        switch self {
        case .x86_32: return .x86_32
        case .x86_64: return .x86_64
        case .native:
            #if arch(i386)
            return .x86_32
            #else
            return .x86_64
            #endif
        }
    }

    /// Bytes per ring slot: the size of the request/response union that
    /// `DEFINE_RING_TYPES(blkif, ...)` makes.
    @inlinable
    public var slotSize: Int { layout.slotSize }
}
