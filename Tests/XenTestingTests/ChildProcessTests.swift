import Glibc
import SystemCalls
import Testing

/// ChildProcess, the posix_spawn wrapper every test, tool and benchmark starts programs with.
@Suite struct ChildProcessTests {
    @Test func exitCodesAreReported() throws {
        #expect(try ChildProcess("/bin/sh", ["-c", "exit 7"]).wait() == .exited(7))
        let ok = try ChildProcess("/bin/true").wait()
        #expect(ok == .exited(0) && ok.succeeded && ok.code == 0)
        #expect(try ChildProcess("false").wait() == .exited(1), "a bare name is looked up on PATH")
    }

    @Test func aSignalledChildReportsTheSignal() throws {
        let selfKilled = try ChildProcess("/bin/sh", ["-c", "kill -TERM $$"]).wait()
        #expect(selfKilled == .signalled(SIGTERM) && selfKilled.code == SIGTERM && !selfKilled.succeeded)

        let sleeper = try ChildProcess("/bin/sleep", ["60"])
        #expect(sleeper.isRunning && sleeper.status == nil)
        #expect(sleeper.signal(SIGKILL))
        #expect(sleeper.wait() == .signalled(SIGKILL))
        #expect(!sleeper.isRunning && sleeper.status == .signalled(SIGKILL))
        #expect(!sleeper.signal(SIGKILL), "a reaped child is never signalled again")
        #expect(sleeper.wait() == .signalled(SIGKILL), "waiting again answers the recorded status")
    }

    @Test func asyncWaitAndConcurrentWaitersSeeOneStatus() async throws {
        let child = try ChildProcess("/bin/sh", ["-c", "read line; exit 3"], standardInput: .pipe)
        async let first = child.exited()
        async let second = child.exited()
        try child.writeStandardInput(Array("go\n".utf8))
        let (a, b) = await (first, second)
        #expect(a == .exited(3) && b == .exited(3))
    }

    @Test func pipesCaptureOutputAndErrorSeparatelyOrCombined() throws {
        let script = "echo out; echo err >&2; echo more"
        let separate = try ChildProcess.run("/bin/sh", ["-c", script])
        #expect(separate.status == .exited(0))
        #expect(separate.standardOutput == "out\nmore\n")
        #expect(separate.standardError == "err\n")
        let combined = try ChildProcess.run("/bin/sh", ["-c", script], combined: true)
        #expect(combined.standardOutput == "out\nerr\nmore\n" && combined.standardError == "")

        // More than a pipe holds on both streams at once: collectOutput drains both.
        let big = try ChildProcess.run("/bin/sh", ["-c", "head -c 300000 /dev/zero; head -c 200000 /dev/zero >&2"])
        #expect(big.status == .exited(0))
        #expect(big.standardOutput.utf8.count == 300_000 && big.standardError.utf8.count == 200_000)
    }

    @Test func standardInputPipeAndIncrementalReads() throws {
        let child = try ChildProcess("/bin/cat", standardInput: .pipe, standardOutput: .pipe)
        try child.writeStandardInput(Array("hello\n".utf8))
        var seen: [UInt8] = []
        while !seen.contains(10) {
            let chunk = try child.readStandardOutput()
            #expect(!chunk.isEmpty)
            if chunk.isEmpty { break }
            seen += chunk
        }
        #expect(String(decoding: seen, as: UTF8.self) == "hello\n")
        child.closeStandardInput()
        #expect(try child.readStandardOutput().isEmpty, "cat ends once its input is closed")
        #expect(child.wait() == .exited(0))
    }

    @Test func fileAndDescriptorStreams() throws {
        var template = Array("/tmp/xensplit-child-XXXXXX".utf8CString)
        let directory = String(cString: try #require(mkdtemp(&template)))
        defer { unlink(directory + "/a"); unlink(directory + "/b"); rmdir(directory) }
        let first = try ChildProcess("/bin/sh", ["-c", "echo one; echo two >&2"], standardInput: .null,
                                     standardOutput: .file(directory + "/a"), standardError: .standardOutput)
        #expect(first.wait() == .exited(0))
        #expect(try read(directory + "/a") == "one\ntwo\n")

        let fd = open(directory + "/b", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        try #require(fd >= 0)
        let second = try ChildProcess("/bin/sh", ["-c", "echo three"], standardOutput: .fileDescriptor(fd))
        close(fd)
        #expect(second.wait() == .exited(0))
        #expect(try read(directory + "/b") == "three\n")

        let input = try ChildProcess("/bin/cat", standardInput: .file(directory + "/b"), standardOutput: .pipe)
        #expect(try input.collectOutput().standardOutput == Array("three\n".utf8))
        #expect(input.wait() == .exited(0))
    }

    @Test func environmentIsGivenOrInherited() throws {
        let given = try ChildProcess.run("/usr/bin/env", environment: ["XENSPLIT_CHILD_TEST": "a b=c"])
        #expect(given.standardOutput == "XENSPLIT_CHILD_TEST=a b=c\n")
        let inherited = try ChildProcess.run("/bin/sh", ["-c", "printf %s \"$PATH\""])
        #expect(inherited.standardOutput == String(cString: try #require(getenv("PATH"))))
    }

    @Test func aMissingProgramFailsToSpawnWithItsErrno() {
        #expect {
            _ = try ChildProcess("/nonexistent/xensplit-no-such-program")
        } throws: { error in
            (error as? ChildProcess.SpawnError)?.errno == .ENOENT
        }
    }

    @Test func aDescriptorWithoutCloseOnExecIsNotInherited() throws {
        #expect(ChildProcess.closesInheritedDescriptors, "glibc 2.34+ has posix_spawn_file_actions_addclosefrom_np")
        let leaky = open("/dev/null", O_RDONLY)  // deliberately without O_CLOEXEC
        try #require(leaky >= 3)
        defer { close(leaky) }
        #expect(access("/proc/self/fd/\(leaky)", F_OK) == 0)
        let child = try ChildProcess.run("/bin/sh", ["-c", "if [ -e /proc/$$/fd/\(leaky) ]; then echo open; else echo closed; fi"])
        #expect(child.standardOutput == "closed\n")
    }

    @Test func theChildStartsWithNoBlockedAndNoIgnoredSignals() throws {
        // Block SIGUSR1 in this thread (the spawning one) for the spawn only.
        var usr1 = sigset_t()
        sigemptyset(&usr1)
        sigaddset(&usr1, SIGUSR1)
        var previous = sigset_t()
        pthread_sigmask(SIG_BLOCK, &usr1, &previous)
        let child = try ChildProcess("/bin/grep", ["-E", "^Sig(Blk|Ign)", "/proc/self/status"], standardOutput: .pipe)
        pthread_sigmask(SIG_SETMASK, &previous, nil)
        let lines = String(decoding: try child.collectOutput().standardOutput, as: UTF8.self)
        #expect(child.wait() == .exited(0))
        let masks = Dictionary(uniqueKeysWithValues: lines.split(separator: "\n").map { line in
            let parts = line.split(separator: "\t")
            return (String(parts[0]), UInt64(parts.last ?? "", radix: 16))
        })
        #expect(masks["SigBlk:"] == 0, "\(lines)")
        // glibc's own real-time signals 32 and 33 (cancellation, setxid) are not ours to reset.
        let glibcInternal: UInt64 = 1 << 31 | 1 << 32
        #expect(masks["SigIgn:"].flatMap { $0 }.map { $0 & ~glibcInternal } == 0, "\(lines)")
    }

    /// The case that crashed Foundation's Process: a long /proc/self/fd.
    @Test func spawnsWithTwoThousandOpenDescriptors() throws {
        var limit = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        if limit.rlim_cur < 2200 {
            limit.rlim_cur = min(limit.rlim_max, 4096)
            setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        }
        var opened: [Int32] = []
        defer { for fd in opened { close(fd) } }
        for _ in 0..<2000 {
            let fd = open("/dev/null", O_RDONLY | O_CLOEXEC)
            try #require(fd >= 0, "open number \(opened.count + 1): errno \(errno)")
            opened.append(fd)
        }
        for round in 0..<20 {
            let run = try ChildProcess.run("/bin/sh", ["-c", "echo \(round)"])
            #expect(run.status == .exited(0) && run.standardOutput == "\(round)\n")
        }
    }

    private func read(_ path: String) throws -> String {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        try #require(fd >= 0)
        defer { close(fd) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let got = Glibc.read(fd, &buffer, buffer.count)
            if got <= 0 { break }
            bytes += buffer[..<got]
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
