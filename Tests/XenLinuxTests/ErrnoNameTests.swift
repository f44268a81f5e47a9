import Glibc
import Testing
import XenPlatform
@testable import XenLinux

/// XenLinux's failures name the call and the errno by name, whichever error carries them.
@Suite struct ErrnoNameTests {
    @Test func aPlatformErrorNamesTheCallAndTheErrno() {
        #expect(PlatformError.system("xengnttab_map_domain_grant_refs(d7, 1 refs)", errno: EINVAL).description
            == "xengnttab_map_domain_grant_refs(d7, 1 refs) failed: EINVAL (Invalid argument)")
        #expect(PlatformError.eventChannel("xenevtchn_pending failed", errno: EBADF).description
            == "event channel: xenevtchn_pending failed: EBADF (Bad file descriptor)")
    }

    @Test func aXenStoreDeviceThatIsNotThereIsNamedWithTheErrno() {
        do {
            _ = try LinuxPlatform.connectXenStore(at: .device("/nonexistent/xenbus"))
            Issue.record("connected to a device that does not exist")
        } catch {
            #expect("\(error)".contains("open(/nonexistent/xenbus) failed: ENOENT (No such file or directory)"), "\(error)")
        }
    }
}
