import Testing
@testable import SharedMemory

@Suite struct SharedViewTests {
    @Test func littleEndianRoundTripAtEveryAlignment() throws {
        let region = try MemoryRegion.anonymous(pages: 1)
        let v = region.view
        for offset in 0..<16 {
            v.store(UInt64(0x0102_0304_0506_0708), at: offset)
            #expect(v.load(UInt64.self, at: offset) == 0x0102_0304_0506_0708)
            #expect(v.load(UInt8.self, at: offset) == 0x08, "little-endian: low byte first")
            v.store(UInt16(0xBEEF), at: offset)
            #expect(v.load(UInt16.self, at: offset) == 0xBEEF)
            v.store(UInt32(0xDEAD_BEEF), at: offset)
            #expect(v.load(UInt32.self, at: offset) == 0xDEAD_BEEF)
            #expect(v.bytes(at: offset, length: 4) == [0xEF, 0xBE, 0xAD, 0xDE])
        }
    }

    @Test func checkedAccessRejectsOutOfBounds() throws {
        let region = try MemoryRegion.anonymous(pages: 1)
        let v = region.view
        #expect(throws: SharedMemoryError.outOfBounds(offset: 4093, count: 4, size: 4096)) {
            _ = try v.checkedLoad(UInt32.self, at: 4093)
        }
        #expect(throws: SharedMemoryError.outOfBounds(offset: -1, count: 1, size: 4096)) {
            try v.checkedStore(UInt8(1), at: -1)
        }
        #expect(throws: SharedMemoryError.outOfBounds(offset: Int.max, count: 8, size: 4096)) {
            _ = try v.checkedLoad(UInt64.self, at: Int.max)
        }
        try v.checkedStore(UInt32(7), at: 4092)
        #expect(try v.checkedLoad(UInt32.self, at: 4092) == 7)
        #expect(throws: SharedMemoryError.self) { _ = try v.slice(offset: 4000, length: 100) }
        let s = try v.slice(offset: 4092, length: 4)
        #expect(s.load(UInt32.self, at: 0) == 7)
    }

    @Test func atomicsAndCompareExchange() throws {
        let region = try MemoryRegion.anonymous(pages: 1)
        let v = region.view
        v.atomicStore32(41, at: 8, ordering: .releasing)
        #expect(v.atomicLoad32(at: 8, ordering: .acquiring) == 41)
        let miss = v.compareExchange16(at: 0, expected: 3, desired: 9)
        #expect(!miss.exchanged && miss.original == 0)
        let hit = v.compareExchange16(at: 0, expected: 0, desired: 9)
        #expect(hit.exchanged && v.load(UInt16.self, at: 0) == 9)
        let hit32 = v.compareExchange32(at: 8, expected: 41, desired: 42)
        #expect(hit32.exchanged && v.atomicLoad32(at: 8, ordering: .sequentiallyConsistent) == 42)
        memoryFence(.sequentiallyConsistent)
    }

    @Test func memfdIsSharedBetweenMappings() throws {
        let a = try MemoryRegion.memfd(name: "xensplit-test", pages: 2)
        let fd = try #require(a.fileDescriptor)
        let b = try MemoryRegion.map(fileDescriptor: fd, length: 2 * pageSize)
        a.view.store(UInt32(0xCAFE_F00D), at: pageSize + 12)
        #expect(b.view.load(UInt32.self, at: pageSize + 12) == 0xCAFE_F00D)
        b.close()
        b.close()
        #expect(throws: SharedMemoryError.badSize(0)) { _ = try MemoryRegion.anonymous(pages: 0) }
        #expect(throws: SharedMemoryError.badSize(100)) { _ = try MemoryRegion.map(fileDescriptor: fd, length: 100) }
    }

    @Test func bulkCopyAndFill() throws {
        let a = try MemoryRegion.anonymous(pages: 1)
        let b = try MemoryRegion.anonymous(pages: 1)
        a.view.fill(0xAB, at: 100, length: 50)
        SharedView.copy(from: a.view, at: 100, to: b.view, at: 0, length: 50)
        #expect(b.view.bytes(at: 0, length: 50) == [UInt8](repeating: 0xAB, count: 50))
        let src: [UInt8] = [1, 2, 3]
        src.withUnsafeBytes { b.view.copyBytes(from: $0, to: 4093) }
        #expect(b.view.bytes(at: 4093, length: 3) == [1, 2, 3])
    }

    @Test func mapFramesPlacesPagesSideBySideInAnyOrder() throws {
        let pool = try MemoryRegion.memfd(name: "xensplit-frames", pages: 8)
        let fd = try #require(pool.fileDescriptor)
        for page in 0..<8 { pool.view.store(UInt32(page + 100), at: page * pageSize) }
        let m = try MemoryRegion.mapFrames(fileDescriptor: fd, frames: [5, 1, 7], writable: true)
        #expect(m.length == 3 * pageSize)
        #expect(m.view.load(UInt32.self, at: 0) == 105)
        #expect(m.view.load(UInt32.self, at: pageSize) == 101)
        #expect(m.view.load(UInt32.self, at: 2 * pageSize) == 107)
        m.view.store(UInt32(9), at: pageSize + 4)
        #expect(pool.view.load(UInt32.self, at: pageSize + 4) == 9)
        #expect(throws: SharedMemoryError.badSize(0)) { _ = try MemoryRegion.mapFrames(fileDescriptor: fd, frames: [], writable: false) }
        #expect(throws: SharedMemoryError.self) { _ = try MemoryRegion.mapFrames(fileDescriptor: -1, frames: [0], writable: false) }
    }
}
