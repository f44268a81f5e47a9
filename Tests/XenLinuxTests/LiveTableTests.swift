import Testing
@testable import XenLinux

@Suite struct LiveTableTests {
    @Test func anEntryIsReleasedExactlyOnce() {
        let table = LiveTable<UInt>()
        let a = table.insert(0x1000)
        let b = table.insert(0x2000)
        #expect(a != b)
        #expect(table.count == 2)
        #expect(table.remove(a) == 0x1000)
        #expect(table.remove(a) == nil)
        table.restore(a, 0x1000)
        #expect(table.remove(a) == 0x1000)
        #expect(table.count == 1)
    }

    @Test func aMismatchedEntryStaysLive() {
        let table = LiveTable<UInt>()
        let id = table.insert(0x3000)
        // The same id from another handle names a different address: nothing is released.
        #expect(table.remove(id, matching: { $0 == 0x4000 }) == nil)
        #expect(table.count == 1)
        #expect(table.remove(id, matching: { $0 == 0x3000 }) == 0x3000)
        #expect(table.remove(id, matching: { _ in true }) == nil)
    }
}
