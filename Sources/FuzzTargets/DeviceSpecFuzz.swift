import XenLocal

/// A fuzz target for the toolstack's DISKSPEC parser (``DiskSpec``) and its vdev names
/// (``DiskSpec/VirtualDevice``): the bytes are a spec as a user or config file gives it.
/// Parsing must not trap; a refusal must describe itself; an accepted spec must name an
/// absolute target, a vdev whose number the vdev parser gives alone too, and a
/// cdrom must be read-only.
public enum DiskSpecFuzz {
    public static func run(_ input: UnsafeRawBufferPointer) {
        let text = String(decoding: input, as: UTF8.self)
        // The name alone, as `xl block-attach` may give it.
        if let device = try? DiskSpec.VirtualDevice(text) {
            precondition(device.name == text, "vdev \(text) recorded as \(device.name)")
        }
        let spec: DiskSpec
        do { spec = try DiskSpec(parsing: text) } catch {
            precondition(!"\(error)".isEmpty, "a refusal with no description")
            return
        }
        // "/" itself is a path like any other (opening it fails later, not parsing).
        precondition(spec.target.hasPrefix("/"), "target '\(spec.target)' accepted")
        let alone = try? DiskSpec.VirtualDevice(spec.vdev.name)
        precondition(alone?.number == spec.vdev.number,
                     "vdev \(spec.vdev) numbered \(String(describing: alone?.number)) when parsed alone")
        if spec.deviceType == .cdrom { precondition(!spec.readWrite && spec.removable, "a writable cdrom") }
    }
}

/// A fuzz target for the VIFSPEC parser (``VifSpec``): the bytes are a spec. Parsing must
/// not trap; a refusal must describe itself; an accepted MAC has six octets and reads back
/// the same from its own formatting; an accepted rate grants some bytes over a non-zero interval.
public enum VifSpecFuzz {
    public static func run(_ input: UnsafeRawBufferPointer) {
        let text = String(decoding: input, as: UTF8.self)
        let spec: VifSpec
        do { spec = try VifSpec(parsing: text) } catch {
            precondition(!"\(error)".isEmpty, "a refusal with no description")
            return
        }
        if let mac = spec.mac {
            precondition(mac.count == 6, "a MAC of \(mac.count) octets")
            let again = try? VifSpec(parsing: "mac=" + VifSpec.format(mac: mac))
            precondition(again?.mac == mac, "MAC \(VifSpec.format(mac: mac)) does not read back")
        }
        if let rate = spec.rate {
            precondition(rate.intervalMicroseconds > 0 && rate.bytesPerInterval > 0, "a rate of \(rate.xenstoreValue)")
        }
        precondition(!spec.bridge.isEmpty || text.contains("bridge="), "an empty bridge from no bridge= parameter")
    }
}
