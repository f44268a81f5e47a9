// swift-tools-version:6.1
import PackageDescription

// Module graph: see ../shared/DESIGN.md. Dependencies point up the table only.
let package = Package(
    name: "XenSplit",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "SharedMemory", targets: ["SharedMemory"]),
        .library(name: "XenRing", targets: ["XenRing"]),
        .library(name: "Blkif", targets: ["Blkif"]),
        .library(name: "Netif", targets: ["Netif"]),
        .library(name: "Tap", targets: ["Tap"]),
        .library(name: "XenStore", targets: ["XenStore"]),
        .library(name: "XenTesting", targets: ["XenTesting"]),
        .library(name: "XenPlatform", targets: ["XenPlatform"]),
        .library(name: "XenLocal", targets: ["XenLocal"]),
        .library(name: "XenLinux", targets: ["XenLinux"]),
        .library(name: "URing", targets: ["URing"]),
        .library(name: "XenBus", targets: ["XenBus"]),
        .library(name: "XenDevice", targets: ["XenDevice"]),
        .library(name: "BlockBackend", targets: ["BlockBackend"]),
        .library(name: "NBD", targets: ["NBD"]),
        .library(name: "BlockFrontend", targets: ["BlockFrontend"]),
        .library(name: "NetBackend", targets: ["NetBackend"]),
        .library(name: "NetFrontend", targets: ["NetFrontend"]),
        .library(name: "Conformance", targets: ["Conformance"]),
        .executable(name: "xensplit", targets: ["xensplit"]),
        .executable(name: "xensplit-bench", targets: ["xensplit-bench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
    ],
    targets: [
        // Errno with its names, the one EINTR-retrying system-call loop, and ChildProcess
        // (posix_spawn), below every module that makes system calls (URing, XenStore,
        // XenLinux) and under the tests and tools that start programs.
        .target(name: "SystemCalls"),
        // The only raw access to shared pages: C11 atomics and fences behind a tiny shim.
        .target(name: "CSharedMemory"),
        .target(name: "SharedMemory", dependencies: ["CSharedMemory"]),
        .target(name: "XenRing", dependencies: ["SharedMemory"]),
        .target(name: "Blkif", dependencies: ["XenRing", "SharedMemory"]),
        .target(name: "Netif", dependencies: ["XenRing", "SharedMemory"]),
        // Host networking for the net devices: TAP devices with virtio-net headers, and
        // network namespaces. Not Xen. The ioctls go through a small C shim.
        .target(name: "CTap"),
        .target(name: "Tap", dependencies: ["CTap", "SystemCalls"]),
        .target(
            name: "XenStore",
            dependencies: ["XenRing", "SharedMemory", "SystemCalls", .product(name: "Logging", package: "swift-log")]
        ),
        // Grants, event channels and xenstore as protocols; no system calls.
        .target(name: "XenPlatform", dependencies: ["SharedMemory", "XenStore", "SystemCalls"]),
        // The local hypervisor: daemon and client, over Unix sockets, memfds and eventfds.
        .target(name: "CXenLocal"),
        .target(
            name: "XenLocal",
            dependencies: ["CXenLocal", "XenPlatform", "XenStore", "SharedMemory",
                           .product(name: "Logging", package: "swift-log")]
        ),
        // Real Xen: libxengnttab (gnttab and gntshr) and libxenevtchn, linked at build time.
        .target(name: "CXen", linkerSettings: [.linkedLibrary("xengnttab"), .linkedLibrary("xenevtchn")]),
        .target(
            name: "XenLinux",
            dependencies: ["CXen", "XenPlatform", "XenStore", "SharedMemory", "SystemCalls",
                           .product(name: "Logging", package: "swift-log")]
        ),
        // Test doubles and peers, shipped so device tests need no hypervisor.
        .target(name: "XenTesting", dependencies: ["Netif", "Tap", "SystemCalls", "XenRing", "SharedMemory", "XenPlatform", "XenStore", "CXenLocal", "Blkif", "XenBus",
                                                  .product(name: "Logging", package: "swift-log")]),
        // Fuzz targets as plain functions: libFuzzer runs them (scripts/fuzz.sh) and the
        // tests replay seeded inputs through them.
        .target(name: "FuzzTargets", dependencies: ["XenRing", "SharedMemory", "XenStore", "Blkif", "Netif", "BlockBackend", "URing",
                                                    "XenPlatform", "XenTesting", "XenLocal", "NBD", "NetBackend",
                                                    "BlockFrontend", "NetFrontend",
                                                    .product(name: "Logging", package: "swift-log")]),
        .executableTarget(name: "xensplit-fuzz", dependencies: ["FuzzTargets"]),
        // liburing's helpers are static inline, so they are wrapped by a C target.
        .target(name: "CURing", linkerSettings: [.linkedLibrary("uring")]),
        .target(name: "URing", dependencies: ["CURing", "SystemCalls", .product(name: "Logging", package: "swift-log")]),
        // The xenbus state machine of io/xenbus.h for both roles, device-type agnostic.
        .target(name: "XenBus", dependencies: ["XenPlatform", "XenStore", .product(name: "Logging", package: "swift-log")]),
        // Device-neutral machinery: backend workers, the xenbus backend daemon any device
        // type runs, the frontend's I/O thread.
        .target(name: "XenDevice", dependencies: ["XenBus", "XenPlatform", "XenStore", "URing",
                                                  .product(name: "Logging", package: "swift-log")]),
        // The block backend's request engine, workers and backing stores (xenstore comes later).
        .target(
            name: "BlockBackend",
            dependencies: ["Blkif", "XenRing", "SharedMemory", "XenPlatform", "URing", "XenBus", "XenDevice", "XenStore",
                           "SystemCalls", .product(name: "Logging", package: "swift-log")]
        ),
        // An NBD server (fixed newstyle, simple replies) for any disk behind its NBDExport protocol.
        .target(name: "NBD", dependencies: ["BlockFrontend", "XenDevice", "XenPlatform", .product(name: "Logging", package: "swift-log")]),
        // The userspace blkfront: xenbus handshake, rings, persistent grants, reconnect.
        .target(
            name: "BlockFrontend",
            dependencies: ["XenBus", "XenDevice", "Blkif", "XenRing", "SharedMemory", "XenPlatform", "XenStore",
                           .product(name: "Logging", package: "swift-log")]
        ),
        // The net backend: vifs over TAP devices, served by the XenDevice workers.
        .target(
            name: "NetBackend",
            dependencies: ["Netif", "Tap", "XenDevice", "XenBus", "XenRing", "SharedMemory", "XenPlatform", "XenStore", "URing",
                           "SystemCalls", .product(name: "Logging", package: "swift-log")]
        ),
        // The userspace netfront: xenbus handshake, tx/rx rings, the guest side as a TAP device.
        .target(
            name: "NetFrontend",
            dependencies: ["XenBus", "XenDevice", "Netif", "Tap", "XenRing", "SharedMemory", "XenPlatform", "XenStore",
                           .product(name: "Logging", package: "swift-log")]
        ),
        // Ring-protocol conformance: clauses from Protocols/conformance, a scripted peer in
        // either role on the wire modules and the platform (never on the devices), reports.
        .target(
            name: "Conformance",
            // Tap and CTap for the vif's host side (a packet socket, the link up): no device module.
            dependencies: ["Blkif", "Netif", "XenRing", "XenBus", "XenStore", "XenPlatform", "SharedMemory", "Tap", "CTap"]
        ),
        // The C reference: Xen's own io/ring.h macros, for interop tests and benchmarks.
        .target(name: "CRingReference"),

        .executableTarget(
            name: "xensplit",
            dependencies: [
                "SystemCalls", "XenStore", "XenLocal", "XenPlatform", "XenLinux", "XenTesting", "BlockBackend", "URing",
                "BlockFrontend", "NBD", "Blkif", "NetBackend", "NetFrontend", "Netif", "Tap", "XenBus", "Conformance",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // A scripted second process for the local hypervisor's multi-process tests.
        .executableTarget(name: "xensplit-peer", dependencies: ["XenLocal", "XenPlatform", "XenRing", "XenTesting", "SharedMemory", "XenStore"]),
        .executableTarget(
            name: "xensplit-bench",
            dependencies: [
                "SystemCalls", "SharedMemory", "XenRing", "Blkif", "CRingReference", "URing", "XenStore", "XenTesting", "XenLocal", "XenPlatform",
                "BlockBackend", "BlockFrontend", "NBD", "XenBus", "NetBackend", "NetFrontend", "Netif", "Tap",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),

        // A deliberate heap overflow or data race that scripts/sanitize.sh runs first, to
        // prove the sanitizer it built with reports (see the script).
        .executableTarget(name: "sanitizer-canary"),
        // The user side of a kernel frontend for the conformance suite (C, built static for a
        // domU's initramfs by scripts/realxen; here for the tests that drive it over a pty).
        .executableTarget(name: "xensplit-agent"),
        .executableTarget(name: "ring-ping-pong", dependencies: ["XenRing", "SharedMemory"], path: "Examples/RingPingPong"),
        .executableTarget(name: "block-disk-example",
                          dependencies: ["BlockFrontend", "BlockBackend", "XenLocal", "URing", .product(name: "Logging", package: "swift-log")],
                          path: "Examples/BlockDisk"),
        .executableTarget(name: "net-echo-example",
                          dependencies: ["NetFrontend", "Netif", "Tap", "XenBus", "XenLocal", "XenPlatform", "XenRing",
                                         "SharedMemory", "SystemCalls", .product(name: "Logging", package: "swift-log")],
                          path: "Examples/NetEcho"),

        .testTarget(name: "SharedMemoryTests", dependencies: ["SharedMemory"]),
        .testTarget(name: "FuzzTargetsTests", dependencies: ["FuzzTargets", "XenTesting"]),
        .testTarget(name: "XenRingTests", dependencies: ["XenRing", "SharedMemory", "CRingReference", "XenTesting", "FuzzTargets"]),
        .testTarget(name: "BlkifTests", dependencies: ["XenTesting", "Blkif", "XenRing", "SharedMemory"]),
        .testTarget(name: "NetifTests", dependencies: ["XenTesting", "Netif", "XenRing", "SharedMemory", "FuzzTargets", "CRingReference"]),
        .testTarget(name: "TapTests", dependencies: ["Tap", "Netif", "SystemCalls", "XenTesting"], exclude: ["C"]),
        .testTarget(name: "InteropTests", dependencies: ["XenTesting", "Blkif", "Netif", "XenRing", "SharedMemory"],
                    exclude: ["C"]),
        .testTarget(name: "XenStoreTests", dependencies: ["SystemCalls", "XenTesting", "XenStore", "XenRing", "SharedMemory", "FuzzTargets"]),
        .testTarget(name: "XenLocalTests", dependencies: ["SystemCalls", "XenLocal", "XenPlatform", "XenStore", "XenRing", "SharedMemory", "CXenLocal", "XenTesting"]),
        .testTarget(name: "URingTests", dependencies: ["XenTesting", "URing"]),
        .testTarget(name: "BlockBackendTests",
                    dependencies: ["SystemCalls", "BlockBackend", "XenTesting", "Blkif", "XenRing", "SharedMemory", "XenPlatform", "URing",
                                 "XenBus", "XenStore", "XenLocal", "BlockFrontend", "FuzzTargets", "XenDevice"]),
        .testTarget(name: "XenTestingTests", dependencies: ["XenTesting", "XenPlatform", "SharedMemory", "XenStore", "SystemCalls"]),
        .testTarget(name: "XenLinuxTests", dependencies: ["SystemCalls", "XenTesting", "XenLinux", "CXen", "XenPlatform", "XenStore", "SharedMemory"]),
        .testTarget(name: "NBDTests", dependencies: ["SystemCalls", "NBD", "BlockFrontend"]),
        .testTarget(name: "NetFrontendTests",
                    dependencies: ["NetFrontend", "Netif", "Tap", "SystemCalls", "XenTesting", "XenBus", "XenRing", "SharedMemory",
                                   "XenPlatform", "XenStore", "XenDevice", "XenLocal", .product(name: "Logging", package: "swift-log")]),
        .testTarget(name: "BlockFrontendTests",
                    dependencies: ["SystemCalls", "BlockFrontend", "BlockBackend", "XenTesting", "XenBus", "Blkif", "XenRing",
                                   "SharedMemory", "XenPlatform", "XenStore", "URing", "NBD", "XenDevice"]),
        .testTarget(name: "DemoTests",
                    dependencies: ["SystemCalls", "NBD", "BlockFrontend", "BlockBackend", "XenLocal", "XenPlatform", "URing", "XenStore", "XenTesting",
                                   .product(name: "Logging", package: "swift-log")]),
        .testTarget(name: "XenDeviceTests", dependencies: ["XenDevice", "XenBus", "XenTesting", "XenPlatform", "XenStore", "URing",
                                                          .product(name: "Logging", package: "swift-log")]),
        .testTarget(name: "NetBackendTests",
                    dependencies: ["SystemCalls", "NetBackend", "Netif", "Tap", "XenTesting", "XenLocal", "XenPlatform", "XenBus", "XenRing",
                                   "XenStore", "SharedMemory", "URing", "XenDevice", "BlockBackend", "Blkif", "CRingReference",
                                   .product(name: "Logging", package: "swift-log")]),
        // Our netfront against our netback, in-process, through the real hotplug script.
        .testTarget(name: "NetEndToEndTests",
                    dependencies: ["NetBackend", "NetFrontend", "Netif", "Tap", "SystemCalls", "XenTesting", "XenLocal",
                                   "XenPlatform", "XenBus", "XenStore", "URing", .product(name: "Logging", package: "swift-log")]),
        .testTarget(name: "XenBusTests", dependencies: ["XenBus", "XenTesting", "XenLocal", "XenPlatform", "XenStore"]),
        // The suite's files and reports, and the suite run against our devices as processes.
        .testTarget(name: "ConformanceTests", dependencies: ["SystemCalls", "Conformance", "XenTesting", "XenLocal", "XenPlatform", "XenStore", "XenBus",
                                                            "Blkif", "CRingReference", "SharedMemory", "XenRing",
                                                            .product(name: "Logging", package: "swift-log")]),
    ],
    swiftLanguageModes: [.v6]
)
