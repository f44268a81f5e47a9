import Glibc
import Testing
import XenPlatform
import XenTesting

/// A hypervisor with dom0 and two guests, the usual cast of a device test.
struct World {
    let hypervisor: InProcessHypervisor
    let dom0: InProcessPlatform
    let guest1: InProcessPlatform
    let guest2: InProcessPlatform

    init(_ configuration: InProcessHypervisor.Configuration = .init()) throws {
        hypervisor = try InProcessHypervisor(configuration: configuration)
        dom0 = try hypervisor.platform(for: .dom0)
        guest1 = try hypervisor.platform(for: hypervisor.createDomain(name: "guest1"))
        guest2 = try hypervisor.platform(for: hypervisor.createDomain(name: "guest2"))
    }
}

/// The status of a grant error, or nil for any other outcome.
func grantStatus(_ body: () throws -> Void) -> GrantStatus? {
    if case let .grant(status, _, _, _) = platformError(body) { return status }
    return nil
}

/// The error a platform call threw, or nil.
func platformError(_ body: () throws -> Void) -> PlatformError? {
    do {
        try body()
        return nil
    } catch {
        return error as? PlatformError
    }
}

/// The errno of an event-channel error, or nil for any other outcome.
func eventErrno(_ body: () throws -> Void) -> Int32? {
    if case let .eventChannel(_, e) = platformError(body) { return e }
    return nil
}

/// Whether `fd` is readable right now (poll with a zero timeout: a state check, not a wait).
func isReadable(_ fd: Int32) -> Bool {
    var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
    return poll(&p, 1, 0) == 1 && p.revents & Int16(POLLIN) != 0
}
