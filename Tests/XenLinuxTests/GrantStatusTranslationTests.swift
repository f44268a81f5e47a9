import CXen
import Testing
import XenLinux
import XenPlatform

/// GNTST_* values from the system's grant_table.h, with the name the header gives them.
private let headerStatuses: [(value: Int32, name: String)] = [
    (GNTST_okay, "GNTST_okay"),
    (GNTST_general_error, "GNTST_general_error"),
    (GNTST_bad_domain, "GNTST_bad_domain"),
    (GNTST_bad_gntref, "GNTST_bad_gntref"),
    (GNTST_bad_handle, "GNTST_bad_handle"),
    (GNTST_bad_virt_addr, "GNTST_bad_virt_addr"),
    (GNTST_bad_dev_addr, "GNTST_bad_dev_addr"),
    (GNTST_no_device_space, "GNTST_no_device_space"),
    (GNTST_permission_denied, "GNTST_permission_denied"),
    (GNTST_bad_page, "GNTST_bad_page"),
    (GNTST_bad_copy_arg, "GNTST_bad_copy_arg"),
    (GNTST_address_too_big, "GNTST_address_too_big"),
    (GNTST_eagain, "GNTST_eagain"),
    (GNTST_no_space, "GNTST_no_space"),
]

@Suite struct GrantStatusTranslationTests {
    @Test func everyHeaderStatusMapsToTheCaseOfTheSameName() {
        for (value, name) in headerStatuses {
            let status = GrantStatus(gntst: Int16(value))
            #expect(status.description == name, "GNTST value \(value)")
            #expect(status.gntst == Int16(value))
        }
    }

    @Test func everyCaseMapsBackToItsHeaderValue() {
        let cases: [GrantStatus] = [.okay, .generalError, .badDomain, .badGrantRef, .badHandle, .badVirtualAddress,
                                    .badDeviceAddress, .noDeviceSpace, .permissionDenied, .badPage, .badCopyArgument,
                                    .addressTooBig, .eagain, .noSpace]
        #expect(Set(cases.map(\.gntst)).count == headerStatuses.count)
        for status in cases {
            let header = headerStatuses.first { $0.name == status.description }
            #expect(header.map { Int16($0.value) } == status.gntst, "\(status)")
            #expect(GrantStatus(gntst: status.gntst) == status)
        }
    }

    @Test(arguments: [Int16.min, -14, -100, 1, 2, Int16.max])
    func aValueOutsideTheHeaderIsGeneralError(raw: Int16) {
        #expect(GrantStatus(gntst: raw) == .generalError)
    }
}
