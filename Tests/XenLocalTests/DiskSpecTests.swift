import Foundation
import Testing
import XenLocal

/// xl's DISKSPEC syntax and its vdev numbering (`man 5 xl-disk-configuration`).
@Suite struct DiskSpecTests {
    struct Good: CustomStringConvertible, Sendable {
        let spec: String
        let target: String
        let vdev: String
        let number: UInt32
        var readWrite = true
        var cdrom = false
        var discard = true
        var directIOSafe = false
        var trusted = true
        var backend: String? = nil
        var description: String { spec }
    }

    static let good: [Good] = [
        // The man page's two sets of equivalent specs.
        Good(spec: "/dev/vg/guest-volume,,hda", target: "/dev/vg/guest-volume", vdev: "hda", number: 768),
        Good(spec: "/dev/vg/guest-volume,raw,hda,rw", target: "/dev/vg/guest-volume", vdev: "hda", number: 768),
        Good(spec: "format=raw, vdev=hda, access=rw, target=/dev/vg/guest-volume", target: "/dev/vg/guest-volume", vdev: "hda", number: 768),
        Good(spec: "raw:/dev/vg/guest-volume,hda,w", target: "/dev/vg/guest-volume", vdev: "hda", number: 768),
        Good(spec: "/root/image.iso,,hdc,cdrom", target: "/root/image.iso", vdev: "hdc", number: 5632, readWrite: false, cdrom: true),
        Good(spec: "/root/image.iso,,hdc,,cdrom", target: "/root/image.iso", vdev: "hdc", number: 5632, readWrite: false, cdrom: true),
        Good(spec: "/root/image.iso,raw,hdc,devtype=cdrom", target: "/root/image.iso", vdev: "hdc", number: 5632, readWrite: false, cdrom: true),
        Good(spec: "format=raw, vdev=hdc, access=ro, devtype=cdrom, target=/root/image.iso", target: "/root/image.iso", vdev: "hdc", number: 5632, readWrite: false, cdrom: true),
        Good(spec: "raw:/root/image.iso,hdc:cdrom,ro", target: "/root/image.iso", vdev: "hdc", number: 5632, readWrite: false, cdrom: true),
        // A cdrom is read-only whatever access says, as xl makes it.
        Good(spec: "/img,,hdc,rw,cdrom", target: "/img", vdev: "hdc", number: 5632, readWrite: false, cdrom: true),
        // "/" is a path like any other: parsing takes it, opening it fails later (the fuzzer's
        // input Fuzz/regressions/diskspec/root-directory-target).
        Good(spec: "/,,hdc,rw,cdrom", target: "/", vdev: "hdc", number: 5632, readWrite: false, cdrom: true),
        // target= takes the rest, commas and trailing blanks included.
        Good(spec: "vdev=xvdb, target=/srv/a,b c ", target: "/srv/a,b c ", vdev: "xvdb", number: 51728),
        // ... and may follow an empty positional target.
        Good(spec: ",,xvda,target=/srv/x", target: "/srv/x", vdev: "xvda", number: 51712),
        // A relative target is under /dev.
        Good(spec: "vg/lv,,xvda", target: "/dev/vg/lv", vdev: "xvda", number: 51712),
        // Deprecated prefixes: after one, no format is expected positionally.
        Good(spec: "phy:/dev/sdb,xvdb,r", target: "/dev/sdb", vdev: "xvdb", number: 51728, readWrite: false),
        Good(spec: "tap:aio:/img,xvdc,w", target: "/img", vdev: "xvdc", number: 51744),
        Good(spec: "file:/img,xvda1", target: "/img", vdev: "xvda1", number: 51713),
        // A word, a colon and a letter or digit is a path, not a prefix.
        Good(spec: "backup:2024.img,,xvda:disk", target: "/dev/backup:2024.img", vdev: "xvda", number: 51712),
        // target= loses one final comma.
        Good(spec: "vdev=xvda,no-colo,target=/img,", target: "/img", vdev: "xvda", number: 51712),
        // An empty vdev= may be given again.
        Good(spec: "vdev=,/img,,,vdev=xvdc", target: "/img", vdev: "xvdc", number: 51744),
        // Flags anywhere; positional values fill the slots left.
        Good(spec: "no-discard,direct-io-safe,untrusted,/img,,xvdq", target: "/img", vdev: "xvdq", number: 268_439_552,
             discard: false, directIOSafe: true, trusted: false),
        Good(spec: "vdev=xvde,/img,raw,ro", target: "/img", vdev: "xvde", number: 51776, readWrite: false),
        Good(spec: "backendtype=phy,specification=xen,backend=Domain-0,/img,,xvda", target: "/img", vdev: "xvda", number: 51712, backend: "Domain-0"),
        Good(spec: "/img, ,sdb, access=r", target: "/img", vdev: "sdb", number: 2064, readWrite: false),
        Good(spec: "/img,,51712", target: "/img", vdev: "51712", number: 51712),
        Good(spec: "/img,,d1p2,discard,trusted,", target: "/img", vdev: "d1p2", number: 51730),
    ]

    @Test(arguments: good) func parsesGoodSpec(_ g: Good) throws {
        let d = try DiskSpec(parsing: g.spec)
        #expect(d.target == g.target)
        #expect(d.vdev.name == g.vdev)
        #expect(d.vdev.number == g.number)
        #expect(d.readWrite == g.readWrite)
        #expect(d.deviceType == (g.cdrom ? .cdrom : .disk))
        #expect(d.removable == g.cdrom)
        #expect(d.discard == g.discard)
        #expect(d.directIOSafe == g.directIOSafe)
        #expect(d.trusted == g.trusted)
        #expect(d.backendDomain == g.backend)
    }

    /// Each bad spec and the whole message it earns: the parameter number, its text, its
    /// offset and what was expected.
    static let bad: [(String, String)] = [
        ("/img,qcow2,xvda",
         #"DISKSPEC parameter 2 "qcow2" (offset 5): format qcow2 is not supported: the local backend serves raw images only (format=raw)"#),
        ("vdev=xvda, format=vhd, target=/img",
         #"DISKSPEC parameter 2 "format=vhd" (offset 11): format vhd is not supported: the local backend serves raw images only (format=raw)"#),
        ("qcow2:/img,xvda,w",
         #"DISKSPEC parameter 1 "qcow2:/img" (offset 0): format qcow2 is not supported: the local backend serves raw images only (format=raw)"#),
        ("/img,xvda,w",
         #"DISKSPEC parameter 2 "xvda" (offset 5): bad format, expected raw (qcow, qcow2, vhd and qed are xl formats the local backend cannot serve)"#),
        ("/img,,xvda,rx",
         #"DISKSPEC parameter 4 "rx" (offset 11): bad access, expected ro, r, rw or w"#),
        ("/img,,xvda,rw,extra",
         #"DISKSPEC parameter 5 "extra" (offset 14): too many positional parameters, expected at most target,format,vdev,access"#),
        ("/img,,xvda,colour=red",
         #"DISKSPEC parameter 4 "colour=red" (offset 11): unknown parameter 'colour='"#),
        ("/img,,xvda,script=block-iscsi",
         #"DISKSPEC parameter 4 "script=block-iscsi" (offset 11): script= is not supported: the local toolstack runs no hotplug scripts; give the file or block device as target"#),
        ("/img,,xvda0",
         #"DISKSPEC parameter 3 "xvda0" (offset 6): bad vdev: partition of xvda0 has a leading zero"#),
        ("/img,,hde",
         #"DISKSPEC parameter 3 "hde" (offset 6): bad vdev: disk letters of hde go past the largest disk, 3"#),
        ("/img,,vda",
         #"DISKSPEC parameter 3 "vda" (offset 6): bad vdev: vda is not xvdX[N], hdX[N], sdX[N], dDISKpPART or a number"#),
        ("vdev=xvd7,target=/img",
         #"DISKSPEC parameter 1 "vdev=xvd7" (offset 0): bad vdev: xvd7 has no disk letter after 'xvd'"#),
        ("/img,raw",
         #"DISKSPEC "/img,raw": no vdev, expected vdev=NAME or a third positional parameter (xvda, hdc, sdb, ...)"#),
        // target= is last: here it swallows the vdev.
        ("target=/img,vdev=xvda",
         #"DISKSPEC "target=/img,vdev=xvda": no vdev, expected vdev=NAME or a third positional parameter (xvda, hdc, sdb, ...); 'vdev=xvda' is read as part of the target path, because target= takes the rest of the DISKSPEC: put target= last"#),
        ("format=raw, target=/img, vdev=xvda, access=ro",
         #"DISKSPEC "format=raw, target=/img, vdev=xvda, access=ro": no vdev, expected vdev=NAME or a third positional parameter (xvda, hdc, sdb, ...); 'vdev=xvda' is read as part of the target path, because target= takes the rest of the DISKSPEC: put target= last"#),
        ("vdev=xvda",
         #"DISKSPEC "vdev=xvda": no target, expected a first positional parameter or target=PATH last"#),
        (",hdc:cdrom,r",
         #"DISKSPEC ",hdc:cdrom,r": no target: an empty cdrom drive is not supported by the local backend"#),
        ("/img,,xvda,vdev=xvdb",
         #"DISKSPEC parameter 4 "vdev=xvdb" (offset 11): vdev given more than once"#),
        ("/img,,xvda,target=/other",
         #"DISKSPEC parameter 4 "target=/other" (offset 11): target given more than once"#),
        ("/img,,xvda,discard,no-discard",
         #"DISKSPEC parameter 5 "no-discard" (offset 19): discard/no-discard given more than once"#),
        ("/a=b,,xvda",
         #"DISKSPEC parameter 1 "/a=b" (offset 0): a positional parameter cannot contain '=': give a target with '=' or ',' as target=PATH, last"#),
        ("nbd:host:1234,xvda,w",
         #"DISKSPEC parameter 1 "nbd:host:1234" (offset 0): the nbd: prefix is not supported: it names the block-nbd hotplug script and the local toolstack runs none"#),
        ("foo:/img,xvda",
         #"DISKSPEC parameter 1 "foo:/img" (offset 0): bad target prefix 'foo:', expected raw:, phy:, file:, aio:, tap:, tapdisk:, tap2: or ioemu: (a path containing ':' goes in target=PATH, last)"#),
        ("access=ro,/img,,xvda,rw",
         #"DISKSPEC parameter 5 "rw" (offset 21): access given more than once"#),
        ("/img,,xvda,specification=virtio",
         #"DISKSPEC parameter 4 "specification=virtio" (offset 11): specification=virtio is not supported: the local backend speaks io/blkif.h (specification=xen) only"#),
        ("/img,,xvda,backendtype=qdisk",
         #"DISKSPEC parameter 4 "backendtype=qdisk" (offset 11): backendtype=qdisk is not supported: the local backend is a phy-type backend; leave backendtype out or say phy"#),
        ("/img,,xvda,devtype=floppy",
         #"DISKSPEC parameter 4 "devtype=floppy" (offset 11): bad devtype, expected cdrom"#),
        ("/img,,xvda:floppy",
         #"DISKSPEC parameter 3 "xvda:floppy" (offset 6): bad vdev suffix, expected ':cdrom', ':disk' or none"#),
        ("/img,,xvda,colo",
         #"DISKSPEC parameter 4 "colo" (offset 11): colo is not supported: COLO block replication needs the qdisk backend"#),
    ]

    @Test func refusesBadSpecsPointingAtTheBadPart() {
        for (spec, message) in Self.bad {
            do {
                let d = try DiskSpec(parsing: spec)
                Issue.record("\(spec) parsed as \(d)")
            } catch {
                #expect(error.description == message, "\(spec)")
            }
        }
    }

    /// A target that cannot be found says when a parameter written after target= became
    /// part of its path, and only then.
    @Test func aMissingTargetNamesTheParameterItSwallowed() throws {
        let spec = try DiskSpec(parsing: "vdev=xvda, target=/img,access=ro")
        #expect(spec.target == "/img,access=ro")
        #expect(DeviceSpecError.targetUnavailable(path: spec.target, errno: ENOENT).description
            == "disk target /img,access=ro: cannot stat it (errno 2); 'access=ro' is read as part of the target path,"
            + " because target= takes the rest of the DISKSPEC: put target= last")
        #expect(DeviceSpecError.targetUnavailable(path: "/images/a,b.img", errno: ENOENT).description
            == "disk target /images/a,b.img: cannot stat it (errno 2)")
    }

    /// The token an error points at, if it has one.
    static func token(of error: DeviceSpecError) -> DeviceSpecToken? {
        switch error {
        case let .unknownKey(t, _), let .badValue(t, _, _), let .unsupportedFormat(t, _), let .unsupported(t, _, _),
             let .repeated(t, _), let .tooManyPositional(t), let .malformed(t, _), let .badVirtualDevice(t, _):
            return t
        default:
            return nil
        }
    }

    /// Seeded random specs from DISKSPEC's vocabulary: each parses, or its error's token is
    /// exactly the text at its offset in the spec.
    @Test func errorsPointAtTheirTextInRandomSpecs() {
        let words = ["/img", "", "raw", "qcow2", "xvda", "hdc:cdrom", "xvdq7", "sdz", "ro", "rw", "x", "cdrom", "vdev=xvdb",
                     "target=/x,y", "format=raw", "access=r", "phy:/dev/sdb", "foo:/bar", "discard", "no-discard",
                     "devtype=cdrom", " vdev=hda", "a=b", "=", ":", "script=s", "d3p4", "0x10", "xvda0"]
        var rng = VifSpecTests.Seeded(state: 7)
        var parsed = 0, refused = 0
        for _ in 0..<3000 {
            // Half start from a good spec, so that the random tail is what goes wrong or not.
            let count = Int.random(in: 0...4, using: &rng)
            let head = Bool.random(using: &rng) ? ["/img", "", "xvda"] : []
            let spec = (head + (0..<count).map { _ in words.randomElement(using: &rng)! }).joined(separator: ",")
            do {
                let d = try DiskSpec(parsing: spec)
                #expect(d.target.hasPrefix("/") && !d.vdev.name.isEmpty, "\(spec)")
                parsed += 1
            } catch {
                refused += 1
                #expect(error.description.hasPrefix("DISKSPEC"), "\(spec)")
                if let t = Self.token(of: error) {
                    let chars = Array(spec)
                    let end = t.offset + t.text.count
                    #expect(end <= chars.count && String(chars[t.offset..<end]) == t.text, "\(spec): \(error)")
                }
            }
        }
        #expect(parsed > 100 && refused > 100)
    }

    /// Every row of Protocols/xl-vdev.tsv: the number, its hex spelling, or a refusal.
    @Test func vdevNumbersMatchProtocols() throws {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Protocols/xl-vdev.tsv")
        let lines = try String(contentsOf: url, encoding: .utf8).split(separator: "\n").filter { !$0.hasPrefix("#") }
        #expect(lines.first == "vdev\tnumber\thex\tdisk\tpartition\trule")
        var accepted = 0, refused = 0
        for line in lines.dropFirst() {
            let f = line.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
            try #require(f.count == 6, "\(line)")
            if f[1] == "-" {
                #expect(throws: DeviceSpecError.self, "\(f[0]): \(f[5])") { _ = try DiskSpec.VirtualDevice(f[0]) }
                refused += 1
            } else {
                let n = try #require(UInt32(f[1]))
                #expect(UInt32(f[2].dropFirst(2), radix: 16) == n, "\(f[0]) hex")
                #expect(try DiskSpec.VirtualDevice(f[0]).number == n, "\(f[0])")
                if let disk = Int(f[3]), let partition = Int(f[4]), f[5] == "xvd" {
                    // The xvd formula by hand, as a second opinion on the table.
                    let expected = disk <= 15 && partition <= 15 ? 202 << 8 | disk << 4 | partition : 1 << 28 | disk << 8 | partition
                    #expect(Int(n) == expected, "\(f[0])")
                }
                accepted += 1
            }
        }
        #expect(accepted >= 40 && refused >= 20)
    }

    /// The values everyone knows: Linux's xvd, ide and scsi majors.
    @Test func wellKnownNumbers() throws {
        let known: [(String, UInt32)] = [("xvda", 51712), ("xvdb", 51728), ("xvda1", 51713), ("xvdp", 51952),
                                         ("xvdq", (1 << 28) | (16 << 8)), ("xvdq3", (1 << 28) | (16 << 8) | 3),
                                         ("xvdaa", (1 << 28) | (26 << 8)), ("hda", 3 << 8), ("hdb", 3 << 8 | 64),
                                         ("hdc", 22 << 8), ("sda", 8 << 8), ("sdb1", 8 << 8 | 17)]
        for (name, number) in known { #expect(try DiskSpec.VirtualDevice(name).number == number, "\(name)") }
    }
}
