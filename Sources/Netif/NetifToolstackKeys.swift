/// The vif nodes the toolstack and its hotplug script write for the backend
/// (Protocols/netif-xenstore.tsv), named in one place.
public enum NetifToolstackKeys {
    /// Backend and frontend `mtu`: the MTU the frontend may use (1500 when absent).
    public static let mtu = "mtu"
    /// Backend `vifname`: the backend interface's name when not vifDOMID.DEVID.
    public static let vifName = "vifname"
    /// Backend `bridge`: the bridge the hotplug script puts the interface on.
    public static let bridge = "bridge"
    /// Backend `rate`: "BYTES,MICROSECONDS", the guest's transmit credit per interval.
    public static let rate = "rate"
    /// Frontend `mac`: the guest's MAC address.
    public static let mac = "mac"
    /// Backend `hotplug-status`: `connected` once the script set the interface up, `error`
    /// if it failed.
    public static let hotplugStatus = "hotplug-status"
    /// Backend `hotplug-error`: why the script failed.
    public static let hotplugError = "hotplug-error"
    /// The `hotplug-status` value that lets the backend connect.
    public static let hotplugConnected = "connected"
    /// The MTU assumed when `mtu` is absent.
    public static let defaultMTU = 1500
}
