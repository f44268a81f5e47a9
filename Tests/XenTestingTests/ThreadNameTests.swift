import Foundation
import Testing
import XenPlatform

@Suite struct ThreadNameTests {
    @Test func aThreadNamesItselfAndLongNamesAreCut() async throws {
        let names = await withCheckedContinuation { (done: CheckedContinuation<[String], Never>) in
            Thread.detachNewThread {
                func comm() -> String {
                    (try? String(contentsOfFile: "/proc/thread-self/comm", encoding: .utf8)) ?? "unreadable"
                }
                nameThisThread("xs-name-test")
                let first = comm()
                nameThisThread("a-name-longer-than-fifteen-bytes")
                done.resume(returning: [first, comm()])
            }
        }
        #expect(names == ["xs-name-test\n", "a-name-longer-t\n"])
    }
}
