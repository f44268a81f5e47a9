// A virtual disk from end to end with the public library API, no CLI: a local hypervisor,
// a domain with one disk, the block backend serving it, and the frontend writing to it
// and reading back. Run: swift run block-disk-example
import BlockBackend
import BlockFrontend
import Foundation
import Logging
import URing
import XenLocal

var logger = Logger(label: "block-disk-example")
logger.logLevel = .warning

// The local hypervisor (grants, event channels, xenstore) on a thread of this process,
// with its sockets in a fresh directory. LocalPlatform(stateDirectory:) below would join
// a hypervisor started by `xensplit hypervisor --state-dir DIR` just the same.
var template = Array("/tmp/block-disk-example-XXXXXX".utf8CString)
guard let made = mkdtemp(&template) else { fatalError("mkdtemp: errno \(errno)") }
let directory = String(cString: made)
let hypervisor = try LocalHypervisor(configuration: .init(stateDirectory: directory), logger: logger)
hypervisor.start()
let dom0 = try LocalPlatform(stateDirectory: directory)

// The block backend, acting as dom0: it serves every vbd the toolstack gives it.
let backend = try BlkbackDaemon(platform: dom0, factory: try BlockIOEngineFactory(logger: logger), logger: logger)
let backendTask = Task { try await backend.run() }

// A 4 MiB raw image, and a domain "guest" whose xvda it is (xl's disk syntax).
let image = directory + "/xvda.img"
let fd = open(image, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
guard fd >= 0, ftruncate(fd, 4 << 20) == 0 else { fatalError("cannot make \(image): errno \(errno)") }
close(fd)
let toolstack = LocalToolstack(platform: dom0)
let xvda = try DiskSpec(parsing: "vdev=xvda, access=rw, target=\(image)")
_ = try await toolstack.createDomain(name: "guest", disks: [xvda])

// Inside the guest: attach the frontend of xvda and wait for the backend to connect.
let guest = try LocalPlatform(stateDirectory: directory, domain: "guest")
let disk = try BlockFrontend(platform: guest, devid: "\(xvda.vdev.number)", logger: logger)
let info = try await disk.connected()
print("xvda: \(info.sectors512 / 2048) MiB, \(1 << info.ringPageOrder) ring pages, \(info.segmentsPerRequest) segments per request")

// 256 KiB from sector 64 (512-byte sectors, as on the ring): written, flushed, read back.
let data = (0 ..< 256 * 1024).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 >> 9) }
try await disk.write(sector: 64, data: data)
try await disk.flush()
let back = try await disk.read(sector: 64, count: UInt64(data.count / 512))
print(back == data ? "read back the \(data.count) bytes written" : "read back different bytes")

// Tear down in reverse: frontend (grants ended), domain, backend, hypervisor, files.
let stillMapped = await disk.close()
try await toolstack.destroy(name: "guest")
backend.stop()
try await backendTask.value
hypervisor.stopAndWait()
try FileManager.default.removeItem(atPath: directory)
exit(back == data && stillMapped == 0 ? 0 : 1)
