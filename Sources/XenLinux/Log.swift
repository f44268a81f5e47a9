import Logging

/// XenLinux's logger, for what cannot be thrown: the release of a mapping or a share
/// that was dropped without an explicit unmap or end of access.
let log = Logger(label: "xensplit.xenlinux")
