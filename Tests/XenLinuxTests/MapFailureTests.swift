import Glibc
import Testing
@testable import XenLinux
import XenPlatform

@Suite struct MapFailureTests {
    @Test func anErrnoOtherThanEinvalIsASystemErrorNamingTheCall() {
        var probed: [GrantRef] = []
        let error = LinuxGrantMapper.mapFailure([1, 2], from: 5, writable: true, errno: ENOMEM) { probed.append($0); return .okay }
        #expect(error == .system("xengnttab_map_domain_grant_refs(d5, 2 refs)", errno: ENOMEM))
        #expect(probed.isEmpty)
    }

    @Test(arguments: [GrantStatus.badDomain, .badGrantRef, .generalError, .permissionDenied, .eagain])
    func einvalReportsTheFirstRefWhoseProbeFails(status: GrantStatus) {
        var probed: [GrantRef] = []
        let error = LinuxGrantMapper.mapFailure([10, 11, 12, 13], from: 3, writable: false, errno: EINVAL) { ref in
            probed.append(ref)
            return ref == 12 ? status : .okay
        }
        guard case let .grant(reported, ref, domain, _) = error else { Issue.record("unexpected \(error)"); return }
        #expect(reported == status && ref == 12 && domain == 3)
        #expect(probed == [10, 11, 12])
    }

    @Test func everyRefReadableMeansXensRefusalOfAWritePinOfAReadOnlyGrant() {
        let error = LinuxGrantMapper.mapFailure([7, 8], from: 1, writable: true, errno: EINVAL) { _ in .okay }
        guard case let .grant(status, ref, _, reason) = error else { Issue.record("unexpected \(error)"); return }
        #expect(status == .generalError && ref == 7 && reason.contains("read-only"))
    }

    @Test func aProbeThatCannotRunLeavesTheErrno() {
        let error = LinuxGrantMapper.mapFailure([7], from: 1, writable: false, errno: EINVAL) { _ in nil }
        #expect(error == .system("xengnttab_map_domain_grant_refs(d1, 1 refs)", errno: EINVAL))
    }
}
