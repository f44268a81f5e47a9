/// Limits of the wire protocol (io/xs_wire.h).
public enum XenStoreLimits {
    /// io/xs_wire.h: XENSTORE_PAYLOAD_MAX. A header announcing more is a protocol
    /// violation: xenstored drops the connection.
    public static let payloadMax = 4096
    /// io/xs_wire.h: XENSTORE_ABS_PATH_MAX. Longer absolute paths get EINVAL.
    public static let absolutePathMax = 3072
    /// io/xs_wire.h: XENSTORE_REL_PATH_MAX. Longer relative paths get EINVAL.
    public static let relativePathMax = 2048
}
