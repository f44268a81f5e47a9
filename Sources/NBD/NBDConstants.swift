// Values from the NBD protocol description (NetworkBlockDevice/nbd, doc/proto.md).
// Peer-supplied codes are kept as raw-value structs, not enums, so an unknown value
// decodes to something the server can answer ("unsupported") instead of failing.

/// The magic numbers of the NBD wire protocol (proto.md: "Handshake", "Transmission").
public enum NBDMagic {
    /// proto.md: `NBDMAGIC`, the first eight bytes the server sends.
    public static let initPassword: UInt64 = 0x4E42_444D_4147_4943
    /// proto.md: `IHAVEOPT`, sent by the server after `NBDMAGIC` and by the client before every option.
    public static let option: UInt64 = 0x4948_4156_454F_5054
    /// proto.md: the magic that starts every option reply.
    public static let optionReply: UInt64 = 0x0003_E889_0455_65A9
    /// proto.md: `NBD_REQUEST_MAGIC`.
    public static let request: UInt32 = 0x2560_9513
    /// proto.md: `NBD_SIMPLE_REPLY_MAGIC`.
    public static let simpleReply: UInt32 = 0x6744_6698
}

/// Handshake flags the server sends after the magic numbers (proto.md: "Handshake flags").
public struct NBDHandshakeFlags: OptionSet, Sendable, Hashable {
    public let rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }
    /// proto.md: `NBD_FLAG_FIXED_NEWSTYLE`.
    public static let fixedNewstyle = NBDHandshakeFlags(rawValue: 1 << 0)
    /// proto.md: `NBD_FLAG_NO_ZEROES`.
    public static let noZeroes = NBDHandshakeFlags(rawValue: 1 << 1)
}

/// Flags the client answers the handshake with (proto.md: "Client flags").
public struct NBDClientFlags: OptionSet, Sendable, Hashable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    /// proto.md: `NBD_FLAG_C_FIXED_NEWSTYLE`.
    public static let fixedNewstyle = NBDClientFlags(rawValue: 1 << 0)
    /// proto.md: `NBD_FLAG_C_NO_ZEROES`.
    public static let noZeroes = NBDClientFlags(rawValue: 1 << 1)
}

/// Per-export flags sent when transmission starts (proto.md: "Transmission flags").
public struct NBDTransmissionFlags: OptionSet, Sendable, Hashable {
    public let rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }
    /// proto.md: `NBD_FLAG_HAS_FLAGS`, always set.
    public static let hasFlags = NBDTransmissionFlags(rawValue: 1 << 0)
    /// proto.md: `NBD_FLAG_READ_ONLY`.
    public static let readOnly = NBDTransmissionFlags(rawValue: 1 << 1)
    /// proto.md: `NBD_FLAG_SEND_FLUSH`.
    public static let sendFlush = NBDTransmissionFlags(rawValue: 1 << 2)
    /// proto.md: `NBD_FLAG_SEND_FUA`.
    public static let sendFUA = NBDTransmissionFlags(rawValue: 1 << 3)
    /// proto.md: `NBD_FLAG_ROTATIONAL`.
    public static let rotational = NBDTransmissionFlags(rawValue: 1 << 4)
    /// proto.md: `NBD_FLAG_SEND_TRIM`.
    public static let sendTrim = NBDTransmissionFlags(rawValue: 1 << 5)
    /// proto.md: `NBD_FLAG_SEND_WRITE_ZEROES`.
    public static let sendWriteZeroes = NBDTransmissionFlags(rawValue: 1 << 6)
    /// proto.md: `NBD_FLAG_SEND_DF`.
    public static let sendDF = NBDTransmissionFlags(rawValue: 1 << 7)
    /// proto.md: `NBD_FLAG_CAN_MULTI_CONN`.
    public static let canMultiConn = NBDTransmissionFlags(rawValue: 1 << 8)
}

/// An option code from the option-haggling phase (proto.md: "Option types").
public struct NBDOption: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    /// proto.md: `NBD_OPT_EXPORT_NAME`.
    public static let exportName = NBDOption(rawValue: 1)
    /// proto.md: `NBD_OPT_ABORT`.
    public static let abort = NBDOption(rawValue: 2)
    /// proto.md: `NBD_OPT_LIST`.
    public static let list = NBDOption(rawValue: 3)
    /// proto.md: `NBD_OPT_STARTTLS`.
    public static let startTLS = NBDOption(rawValue: 5)
    /// proto.md: `NBD_OPT_INFO`.
    public static let info = NBDOption(rawValue: 6)
    /// proto.md: `NBD_OPT_GO`.
    public static let go = NBDOption(rawValue: 7)
    /// proto.md: `NBD_OPT_STRUCTURED_REPLY`.
    public static let structuredReply = NBDOption(rawValue: 8)
    /// proto.md: `NBD_OPT_LIST_META_CONTEXT`.
    public static let listMetaContext = NBDOption(rawValue: 9)
    /// proto.md: `NBD_OPT_SET_META_CONTEXT`.
    public static let setMetaContext = NBDOption(rawValue: 10)

    public var description: String {
        switch self {
        case .exportName: "NBD_OPT_EXPORT_NAME"
        case .abort: "NBD_OPT_ABORT"
        case .list: "NBD_OPT_LIST"
        case .startTLS: "NBD_OPT_STARTTLS"
        case .info: "NBD_OPT_INFO"
        case .go: "NBD_OPT_GO"
        case .structuredReply: "NBD_OPT_STRUCTURED_REPLY"
        case .listMetaContext: "NBD_OPT_LIST_META_CONTEXT"
        case .setMetaContext: "NBD_OPT_SET_META_CONTEXT"
        default: "option \(rawValue)"
        }
    }
}

/// The type of an option reply (proto.md: "Option reply types"); errors have bit 31 set.
public struct NBDOptionReplyType: RawRepresentable, Sendable, Hashable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    /// proto.md: `NBD_REP_ACK`.
    public static let ack = NBDOptionReplyType(rawValue: 1)
    /// proto.md: `NBD_REP_SERVER`.
    public static let server = NBDOptionReplyType(rawValue: 2)
    /// proto.md: `NBD_REP_INFO`.
    public static let info = NBDOptionReplyType(rawValue: 3)
    /// proto.md: `NBD_REP_ERR_UNSUP`.
    public static let errUnsupported = NBDOptionReplyType(rawValue: 0x8000_0001)
    /// proto.md: `NBD_REP_ERR_POLICY`.
    public static let errPolicy = NBDOptionReplyType(rawValue: 0x8000_0002)
    /// proto.md: `NBD_REP_ERR_INVALID`.
    public static let errInvalid = NBDOptionReplyType(rawValue: 0x8000_0003)
    /// proto.md: `NBD_REP_ERR_PLATFORM`.
    public static let errPlatform = NBDOptionReplyType(rawValue: 0x8000_0004)
    /// proto.md: `NBD_REP_ERR_TLS_REQD`.
    public static let errTLSRequired = NBDOptionReplyType(rawValue: 0x8000_0005)
    /// proto.md: `NBD_REP_ERR_UNKNOWN`.
    public static let errUnknown = NBDOptionReplyType(rawValue: 0x8000_0006)
    /// proto.md: `NBD_REP_ERR_SHUTDOWN`.
    public static let errShutdown = NBDOptionReplyType(rawValue: 0x8000_0007)
    /// proto.md: `NBD_REP_ERR_BLOCK_SIZE_REQD`.
    public static let errBlockSizeRequired = NBDOptionReplyType(rawValue: 0x8000_0008)
    /// proto.md: `NBD_REP_ERR_TOO_BIG`.
    public static let errTooBig = NBDOptionReplyType(rawValue: 0x8000_0009)

    /// Whether this reply type reports an error (bit 31).
    public var isError: Bool { rawValue & 0x8000_0000 != 0 }
}

/// An information item of `NBD_OPT_INFO` / `NBD_OPT_GO` (proto.md: "NBD_REP_INFO").
public struct NBDInfoType: RawRepresentable, Sendable, Hashable {
    public let rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }
    /// proto.md: `NBD_INFO_EXPORT`.
    public static let export = NBDInfoType(rawValue: 0)
    /// proto.md: `NBD_INFO_NAME`.
    public static let name = NBDInfoType(rawValue: 1)
    /// proto.md: `NBD_INFO_DESCRIPTION`.
    public static let description = NBDInfoType(rawValue: 2)
    /// proto.md: `NBD_INFO_BLOCK_SIZE`.
    public static let blockSize = NBDInfoType(rawValue: 3)
}

/// A transmission-phase command (proto.md: "Request types").
public struct NBDCommand: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
    public let rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }
    /// proto.md: `NBD_CMD_READ`.
    public static let read = NBDCommand(rawValue: 0)
    /// proto.md: `NBD_CMD_WRITE`.
    public static let write = NBDCommand(rawValue: 1)
    /// proto.md: `NBD_CMD_DISC`.
    public static let disconnect = NBDCommand(rawValue: 2)
    /// proto.md: `NBD_CMD_FLUSH`.
    public static let flush = NBDCommand(rawValue: 3)
    /// proto.md: `NBD_CMD_TRIM`.
    public static let trim = NBDCommand(rawValue: 4)
    /// proto.md: `NBD_CMD_CACHE`.
    public static let cache = NBDCommand(rawValue: 5)
    /// proto.md: `NBD_CMD_WRITE_ZEROES`.
    public static let writeZeroes = NBDCommand(rawValue: 6)
    /// proto.md: `NBD_CMD_BLOCK_STATUS`.
    public static let blockStatus = NBDCommand(rawValue: 7)

    public var description: String {
        switch self {
        case .read: "NBD_CMD_READ"
        case .write: "NBD_CMD_WRITE"
        case .disconnect: "NBD_CMD_DISC"
        case .flush: "NBD_CMD_FLUSH"
        case .trim: "NBD_CMD_TRIM"
        case .cache: "NBD_CMD_CACHE"
        case .writeZeroes: "NBD_CMD_WRITE_ZEROES"
        case .blockStatus: "NBD_CMD_BLOCK_STATUS"
        default: "command \(rawValue)"
        }
    }
}

/// Flags on a transmission request (proto.md: "Command flags").
public struct NBDCommandFlags: OptionSet, Sendable, Hashable {
    public let rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }
    /// proto.md: `NBD_CMD_FLAG_FUA`.
    public static let fua = NBDCommandFlags(rawValue: 1 << 0)
    /// proto.md: `NBD_CMD_FLAG_NO_HOLE`.
    public static let noHole = NBDCommandFlags(rawValue: 1 << 1)
    /// proto.md: `NBD_CMD_FLAG_DF`.
    public static let doNotFragment = NBDCommandFlags(rawValue: 1 << 2)
    /// proto.md: `NBD_CMD_FLAG_REQ_ONE`.
    public static let requestOne = NBDCommandFlags(rawValue: 1 << 3)
    /// proto.md: `NBD_CMD_FLAG_FAST_ZERO`.
    public static let fastZero = NBDCommandFlags(rawValue: 1 << 4)
}

/// The error field of a reply (proto.md: "Error values"); zero is success.
public struct NBDErrno: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    /// No error.
    public static let success = NBDErrno(rawValue: 0)
    /// proto.md: `NBD_EPERM`.
    public static let permission = NBDErrno(rawValue: 1)
    /// proto.md: `NBD_EIO`.
    public static let io = NBDErrno(rawValue: 5)
    /// proto.md: `NBD_ENOMEM`.
    public static let noMemory = NBDErrno(rawValue: 12)
    /// proto.md: `NBD_EINVAL`.
    public static let invalid = NBDErrno(rawValue: 22)
    /// proto.md: `NBD_ENOSPC`.
    public static let noSpace = NBDErrno(rawValue: 28)
    /// proto.md: `NBD_EOVERFLOW`.
    public static let overflow = NBDErrno(rawValue: 75)
    /// proto.md: `NBD_ENOTSUP`.
    public static let notSupported = NBDErrno(rawValue: 95)
    /// proto.md: `NBD_ESHUTDOWN`.
    public static let shutdown = NBDErrno(rawValue: 108)

    public var description: String {
        switch self {
        case .success: "0"
        case .permission: "NBD_EPERM"
        case .io: "NBD_EIO"
        case .noMemory: "NBD_ENOMEM"
        case .invalid: "NBD_EINVAL"
        case .noSpace: "NBD_ENOSPC"
        case .overflow: "NBD_EOVERFLOW"
        case .notSupported: "NBD_ENOTSUP"
        case .shutdown: "NBD_ESHUTDOWN"
        default: "error \(rawValue)"
        }
    }
}
