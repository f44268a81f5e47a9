import Foundation
import Glibc
import SystemCalls
import Testing
import XenTesting

/// The issue's acceptance run on the local hypervisor: fio with crc32c verification at
/// queue depth 32 through `xensplit blkfront`'s NBD exports, on 4 disks of 2 guests,
/// while the block backend is replaced 20 times (SIGKILL, or `--take-over`) at seeded
/// random moments. Every verify passes, no I/O error reaches fio, the new backends report
/// taking requests over (SIGKILL: more than none over the run), and a verify-only fio
/// pass straight over the image files afterwards finds every write.
@Suite("blkback replaced 20 times under fio verify", .serialized)
struct BlkbackTakeOverFioTests {
    static let diskBytes = 32 << 20
    static let replacements = 20

    @Test(.enabled(if: access(xensplitBinary, X_OK) == 0 && toolExists("fio"), "xensplit or fio is missing"),
          arguments: BlkbackTakeOverTests.Replacement.allCases)
    func fioVerifiesAcrossReplacements(replacement: BlkbackTakeOverTests.Replacement) async throws {
        let engines = try await runTool(["fio", "--enghelp"], in: "/tmp")
        try #require(engines.output.split(separator: "\n").contains { $0.trimmingCharacters(in: .whitespaces) == "nbd" },
                     "this fio has no nbd engine")
        let seed = UInt64(UInt32.random(in: 1...UInt32.max))
        print("blkback fio \(replacement.rawValue): seed \(seed)")
        var rng = SplitMix(seed: seed)

        let scenario = try LocalScenario("xensplit-blkback-fio-\(replacement.rawValue)", imageBytes: Self.diskBytes)
        defer { scenario.stop() }
        let state = scenario.state
        let hypervisor = try scenario.start("hypervisor", ["hypervisor", "--state-dir", state])
        try await eventually("the hypervisor's sockets") {
            FileManager.default.fileExists(atPath: state + "/xenstored.socket")
                && FileManager.default.fileExists(atPath: state + "/hypervisor.socket")
        }
        // Two guests with two disks each.
        var disks: [(guest: String, vdev: String, image: String, socket: String)] = []
        for guest in ["guest-a", "guest-b"] {
            var arguments = ["domain", "create", guest, "--state-dir", state]
            for vdev in ["xvda", "xvdb"] {
                let image = state + "/\(guest)-\(vdev).img"
                guard FileManager.default.createFile(atPath: image, contents: nil), truncate(image, off_t(Self.diskBytes)) == 0 else {
                    throw DemoTestError("cannot make \(image)")
                }
                arguments += ["--disk", "vdev=\(vdev),access=rw,target=\(image)"]
                disks.append((guest, vdev, image, state + "/\(guest)-\(vdev).sock"))
            }
            let create = try scenario.start("create-\(guest)", arguments)
            guard await create.wait() == 0 else { throw DemoTestError("domain create failed: \(create.output)") }
        }
        let backend = ["blkback", "--platform", "local", "--state-dir", state, "--workers", "1"]
        var current = try scenario.start("blkback-0", backend)
        var frontends: [Child] = []
        for disk in disks {
            frontends.append(try scenario.start("blkfront-\(disk.guest)-\(disk.vdev)",
                                                ["blkfront", disk.guest, disk.vdev, "--nbd", "unix:\(disk.socket)",
                                                 "--platform", "local", "--state-dir", state]))
        }
        for disk in disks {
            try await eventually("the NBD socket of \(disk.guest) \(disk.vdev)", seconds: 60) {
                FileManager.default.fileExists(atPath: disk.socket)
            }
        }

        // One fio job per disk: random writes of mixed sizes at depth 32, each block with
        // its crc32c, then every block read back and checked.
        var job = ["fio", "--ioengine=nbd", "--rw=randwrite", "--bssplit=4k/50:16k/25:64k/20:256k/5", "--blockalign=4k",
                   "--size=\(Self.diskBytes)", "--iodepth=32", "--verify=crc32c", "--do_verify=1", "--verify_fatal=1",
                   "--verify_state_save=0", "--randseed=\(seed)", "--output-format=terse", "--terse-version=3"]
        for (index, disk) in disks.enumerated() {
            job += ["--name=disk\(index)", "--uri=nbd+unix:///?socket=\(disk.socket)"]
        }
        let fio = try Child("/usr/bin/env", job, outputPath: state + "/fio.log")

        var tookOver = 0
        var reexecuted = 0
        // SIGKILL: kills whose state files showed requests in flight, and stops it took.
        var caught = 0
        var stops = 0
        // Per replacement, from the signal (or the new process's start) until the new
        // process has taken every disk over (polled every 2 ms): an upper bound on the
        // pause the guests see. Printed, never asserted.
        var pauses: [Duration] = []
        for round in 1...Self.replacements {
            // 20 to 250 ms of I/O between replacements.
            let interval = 20 + Int(rng.next() % 231)
            var began = ContinuousClock.now
            if replacement == .sigkill {
                // Killed while its state files say requests are in flight (the protocol's
                // header: consumed, then answered). The backend is stopped before they are
                // read, so what they say still holds when SIGKILL lands (on a quiet machine a
                // request lives for microseconds); stopped and let go again until they do,
                // while fio runs. The interval, the looks and the kill all on a thread of its
                // own: the cooperative pool, which a full test run keeps busy (more so under
                // a sanitizer), resumed this test seconds late, after fio had ended, so
                // no look caught a request.
                let stopped = current
                let look = try await offThePool {
                    usleep(useconds_t(interval * 1000))
                    let look = try Self.stopWithRequestsInFlight(stopped.process, directory: state + "/blkback",
                                                                 while: fio.process)
                    let killed = ContinuousClock.now
                    stopped.signal(SIGKILL)
                    return (look, killed)
                }
                stops += look.0.stops
                if look.0.caught { caught += 1 }
                began = look.1
                #expect(await current.wait() == SIGKILL)
                current = try scenario.start("blkback-\(round)", backend)
            } else {
                try await Task.sleep(for: .milliseconds(interval))
                began = ContinuousClock.now
                let previous = current
                current = try scenario.start("blkback-\(round)", backend + ["--take-over"])
                // Bounded: a hand-over that never happens fails here instead of hanging.
                try await eventually("backend \(round - 1) handed over and exited", seconds: 60) { !previous.process.isRunning }
                #expect(await previous.wait() == 0, "\(previous.output)")
            }
            let done = current
            do {
                try await eventually("backend \(round) took the disks over", seconds: 60) {
                    done.output.components(separatedBy: "took over ").count - 1 == disks.count
                }
            } catch {
                Issue.record("backend \(round): \(done.output)")
                throw error
            }
            pauses.append(ContinuousClock.now - began)
            for line in current.output.split(separator: "\n") {
                guard let range = line.range(of: "took over ") else { continue }
                let words = line[range.upperBound...].split(separator: " ")
                tookOver += Int(words.first ?? "") ?? 0
                reexecuted += Int(words.dropFirst(3).first ?? "") ?? 0
            }
        }
        let status = await fio.wait()
        let sorted = pauses.sorted()
        #if DEBUG
        let build = "debug"
        #else
        let build = "release"
        #endif
        print("blkback fio \(replacement.rawValue): pause until taken over (\(build) build, 2 ms polling): "
              + "median \(sorted[sorted.count / 2]), worst \(sorted.last!)")
        print("blkback fio \(replacement.rawValue): seed \(seed), \(Self.replacements) replacements, took over \(tookOver) requests, re-executed \(reexecuted)"
              + (replacement == .sigkill ? "; \(caught) kills with requests in flight after \(stops) stops" : ""))
        #expect(status == 0, "\(fio.output)")
        // Terse v3: field 5 is a job's error code; 0 means its writes and verifies passed.
        let jobs = fio.output.split(separator: "\n").filter { $0.hasPrefix("3;") }
        #expect(jobs.count == disks.count, "\(fio.output)")
        for line in jobs {
            let fields = line.split(separator: ";", omittingEmptySubsequences: false)
            #expect(fields.count > 5 && fields[4] == "0", "\(line)")
        }
        if replacement == .sigkill {
            let evidence = "seed \(seed), \(caught) kills with requests in flight after \(stops) stops; fio: \(fio.output)"
            #expect(tookOver > 0, "no kill found a request in the backend's hands (\(evidence))")
        }
        // No frontend ever saw its backend leave.
        for frontend in frontends {
            #expect(!frontend.output.contains("-> Closing"), "\(frontend.output)")
        }

        for frontend in frontends { frontend.signal(SIGTERM) }
        for frontend in frontends { #expect(await frontend.wait() == 0, "\(frontend.output)") }
        current.signal(SIGTERM)
        #expect(await current.wait() == 0, "\(current.output)")

        // The same jobs, verify only, straight over the image files: every write is there.
        var verify = ["fio", "--ioengine=psync", "--rw=randwrite", "--bssplit=4k/50:16k/25:64k/20:256k/5",
                      "--blockalign=4k", "--size=\(Self.diskBytes)", "--verify=crc32c", "--verify_only=1",
                      "--verify_fatal=1", "--verify_state_save=0", "--randseed=\(seed)",
                      "--output-format=terse", "--terse-version=3"]
        for (index, disk) in disks.enumerated() { verify += ["--name=disk\(index)", "--filename=\(disk.image)"] }
        let check = try await runTool(verify, in: state)
        #expect(check.status == 0, "\(check.output)")
        let checked = check.output.split(separator: "\n").filter { $0.hasPrefix("3;") }
        #expect(checked.count == disks.count, "\(check.output)")
        for line in checked {
            // Field 6: KiB read (and checked): the whole disk, since fio wrote every block.
            let fields = line.split(separator: ";", omittingEmptySubsequences: false)
            #expect(fields.count > 5 && fields[4] == "0" && Int(fields[5]) == Self.diskBytes >> 10, "\(line)")
        }
        hypervisor.signal(SIGTERM)
        #expect(await hypervisor.wait() == 0, "\(hypervisor.output)")
    }
}

extension BlkbackTakeOverFioTests {
    /// Stops `backend` (SIGSTOP, every thread seen stopped) until its state files in
    /// `directory` show requests in flight, letting it run for 0.2 to 2 ms between looks
    /// (different moments of its loop), while `fio` runs and for at most 20,000 looks. The
    /// backend is left stopped. Blocks its thread.
    static func stopWithRequestsInFlight(_ backend: ChildProcess, directory: String,
                                         while fio: ChildProcess) throws -> (caught: Bool, stops: Int) {
        var stops = 0
        while true {
            backend.signal(SIGSTOP)
            var waited = 0
            while !BlkbackKillTests.allThreadsStopped(backend.pid) {
                // Bounded by looks, not time: a backend that never stops fails here.
                waited += 1
                guard waited < 200_000 else { throw DemoTestError("backend \(backend.pid) did not stop for SIGSTOP") }
                usleep(50)
            }
            stops += 1
            if requestsInFlight(directory) > 0 { return (true, stops) }
            if !fio.isRunning || stops >= 20_000 { return (false, stops) }
            backend.signal(SIGCONT)
            usleep(useconds_t.random(in: 200...2000))
        }
    }

    /// Requests taken and not yet answered, over every queue's state file in `directory`
    /// (Protocols/blkback-restart.md: u32 consumed at 96, answered at 100).
    static func requestsInFlight(_ directory: String) -> Int {
        let files = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        var total = 0
        for name in files where name.hasSuffix(".state") {
            guard let handle = FileHandle(forReadingAtPath: directory + "/" + name) else { continue }
            defer { try? handle.close() }
            guard let header = try? handle.read(upToCount: 104), header.count == 104 else { continue }
            let word = { (at: Int) in header[at..<at + 4].enumerated().reduce(UInt32(0)) { $0 | UInt32($1.element) << (8 * $1.offset) } }
            total += Int(word(96) &- word(100))
        }
        return total
    }
}

/// SplitMix64, for the replacement moments (the seed is printed, so a run replays).
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
