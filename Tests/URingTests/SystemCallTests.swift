import Glibc
import Testing
import URing

/// The one EINTR-retrying loop (SystemCalls, re-exported by URing) and the names of the
/// errnos it reports.
@Suite struct SystemCallTests {
    /// A call that fails `interruptions` times with EINTR, then ends with `outcome`,
    /// setting errno as libc does.
    final class Script {
        var interruptions: Int
        let outcome: Int32
        let failure: Int32
        var calls = 0
        init(interruptions: Int, outcome: Int32, failure: Int32 = 0) {
            self.interruptions = interruptions
            self.outcome = outcome
            self.failure = failure
        }
        func call() -> Int32 {
            calls += 1
            if interruptions > 0 {
                interruptions -= 1
                errno = EINTR
                return -1
            }
            if outcome < 0 { errno = failure }
            return outcome
        }
        /// The same, with liburing's convention: the negated errno, errno untouched.
        func negated() -> Int32 {
            calls += 1
            if interruptions > 0 {
                interruptions -= 1
                return -EINTR
            }
            return outcome < 0 ? -failure : outcome
        }
    }

    @Test func anInterruptedCallIsRepeatedUntilItSucceeds() {
        let script = Script(interruptions: 3, outcome: 7)
        #expect(SystemCall.retrying(script.call) == .success(7))
        #expect(script.calls == 4)
    }

    @Test func aFailureOtherThanEINTRIsReturnedAtOnceAsItsErrno() {
        let script = Script(interruptions: 2, outcome: -1, failure: EBADF)
        #expect(SystemCall.retrying(script.call) == .failure(.EBADF))
        #expect(script.calls == 3)
    }

    @Test func theNegatedConventionRetriesEINTRAndReportsTheErrnoItCarries() {
        let ok = Script(interruptions: 2, outcome: 5)
        #expect(SystemCall.retryingNegated(ok.negated) == .success(5))
        #expect(ok.calls == 3)
        let timedOut = Script(interruptions: 1, outcome: -1, failure: ETIME)
        #expect(SystemCall.retryingNegated(timedOut.negated) == .failure(.ETIME))
        #expect(timedOut.calls == 2)
        // errno is not read: a stale EINTR there does not make a failure look interrupted.
        errno = EINTR
        let failed = Script(interruptions: 0, outcome: -1, failure: ENOMEM)
        #expect(SystemCall.retryingNegated(failed.negated) == .failure(.ENOMEM))
        #expect(failed.calls == 1)
    }

    @Test func errnosNamedForXenStoreAndXenLinuxRoundTrip() {
        let named: [Errno] = [.ESRCH, .ENXIO, .ENODEV, .ENOTTY, .EMFILE, .EPIPE, .ENOTCONN, .ECONNRESET,
                              .ETIMEDOUT, .ECONNREFUSED]
        for errno in named {
            #expect(Errno(code: errno.code) == errno)
            #expect(errno.description.hasPrefix(errno.name + " ("))
        }
        #expect(Errno(code: ECONNREFUSED).name == "ECONNREFUSED")
        #expect(Errno(code: ESRCH).description == "ESRCH (No such process)")
    }
}
