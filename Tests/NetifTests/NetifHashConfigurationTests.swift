import Testing
@testable import Netif

/// Every control message type with each status io/netif.h lists for it.
@Suite struct NetifHashConfigurationTests {
    /// Granted pages by reference, as the frontend would have filled them.
    struct Pages {
        var pages: [UInt32: [UInt8]] = [:]
        var reads: [(UInt32, Int)] = []

        mutating func read(_ ref: UInt32, _ length: Int) -> [UInt8]? {
            reads.append((ref, length))
            guard let page = pages[ref], length <= page.count else { return nil }
            return Array(page[..<length])
        }
    }

    static func words(_ values: [UInt32]) -> [UInt8] {
        values.flatMap { v in (0..<4).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }
    }

    func ask(_ config: inout NetifHashConfiguration, _ pages: inout Pages, _ type: NetifCtrlType,
             _ data: (UInt32, UInt32, UInt32) = (0, 0, 0), id: UInt16 = 7) -> NetifCtrlResponse {
        let response = config.answer(NetifCtrlRequest(id: id, type, data: data)) { pages.read($0, $1) }
        #expect(response.id == id && response.type == type.rawValue, "id and type echoed")
        return response
    }

    @Test("INVALID and unknown types: NOT_SUPPORTED, id and raw type echoed, nothing read")
    func unknownTypes() {
        var config = NetifHashConfiguration(queueCount: 2)
        var pages = Pages()
        #expect(ask(&config, &pages, .invalid).status == .notSupported)
        for type: UInt16 in [11, 12, 0x100, 0xFFFF] {
            let response = config.answer(NetifCtrlRequest(id: 3, type: type, data: (1, 2, 3))) { pages.read($0, $1) }
            #expect(response == NetifCtrlResponse(id: 3, type: type, status: .notSupported, data: 0))
        }
        #expect(pages.reads.isEmpty)
        #expect(config == NetifHashConfiguration(queueCount: 2))
    }

    @Test("SET_HASH_ALGORITHM: NONE and TOEPLITZ SUCCESS, anything else INVALID_PARAMETER")
    func algorithm() {
        var config = NetifHashConfiguration(queueCount: 1)
        var pages = Pages()
        #expect(ask(&config, &pages, .setHashAlgorithm, (1, 0, 0)).status == .success)
        #expect(config.algorithm == .toeplitz)
        for bad: UInt32 in [2, 255, 256, 0x101, .max] {
            #expect(ask(&config, &pages, .setHashAlgorithm, (bad, 0, 0)).status == .invalidParameter)
        }
        #expect(config.algorithm == .toeplitz)
        #expect(ask(&config, &pages, .setHashAlgorithm, (0, 0, 0)).status == .success)
        #expect(config.algorithm == .none)
    }

    @Test("GET/SET_HASH_FLAGS: NOT_SUPPORTED before an algorithm is chosen, then the four types; unknown bits INVALID_PARAMETER")
    func flags() {
        var config = NetifHashConfiguration(queueCount: 1)
        var pages = Pages()
        #expect(ask(&config, &pages, .getHashFlags) == NetifCtrlResponse(id: 7, type: 1, status: .notSupported, data: 0))
        #expect(ask(&config, &pages, .setHashFlags, (1, 0, 0)).status == .notSupported)
        _ = ask(&config, &pages, .setHashAlgorithm, (1, 0, 0))
        #expect(ask(&config, &pages, .getHashFlags) == NetifCtrlResponse(id: 7, type: 1, status: .success, data: 0xF))
        #expect(ask(&config, &pages, .setHashFlags, (0x10, 0, 0)).status == .invalidParameter)
        #expect(ask(&config, &pages, .setHashFlags, (0x8000_0003, 0, 0)).status == .invalidParameter)
        #expect(config.types.isEmpty && !config.isHashing)
        #expect(ask(&config, &pages, .setHashFlags, (0b1010, 0, 0)).status == .success)
        #expect(config.types == [.ipv4TCP, .ipv6TCP] && config.isHashing)
        // Zero disables hashing.
        #expect(ask(&config, &pages, .setHashFlags, (0, 0, 0)).status == .success)
        #expect(!config.isHashing)
    }

    @Test("SET_HASH_KEY: up to 40 octets read from the grant; larger BUFFER_OVERFLOW (nothing read); unreadable INVALID_PARAMETER; 0 clears")
    func key() {
        var config = NetifHashConfiguration(queueCount: 1)
        var pages = Pages()
        pages.pages[21] = Array(1...200)
        #expect(ask(&config, &pages, .setHashKey, (21, 40, 0)).status == .success)
        #expect(config.key == Array(1...40))
        #expect(pages.reads.count == 1 && pages.reads[0] == (21, 40))
        for size: UInt32 in [41, 4096, 4097, .max] {
            #expect(ask(&config, &pages, .setHashKey, (21, size, 0)).status == .bufferOverflow)
        }
        #expect(pages.reads.count == 1, "an oversized key is refused before the grant is read")
        #expect(ask(&config, &pages, .setHashKey, (99, 8, 0)).status == .invalidParameter)
        #expect(config.key == Array(1...40), "a failed read changes nothing")
        #expect(ask(&config, &pages, .setHashKey, (21, 3, 0)).status == .success)
        #expect(config.key == [1, 2, 3])
        #expect(ask(&config, &pages, .setHashKey, (99, 0, 0)).status == .success)
        #expect(config.key.isEmpty)
    }

    @Test("GET/SET_HASH_MAPPING_SIZE: 128 entries; larger INVALID_PARAMETER; a new size zero-fills the table")
    func mappingSize() {
        var config = NetifHashConfiguration(queueCount: 4)
        var pages = Pages()
        #expect(ask(&config, &pages, .getHashMappingSize) == NetifCtrlResponse(id: 7, type: 4, status: .success, data: 128))
        #expect(ask(&config, &pages, .setHashMappingSize, (129, 0, 0)).status == .invalidParameter)
        #expect(ask(&config, &pages, .setHashMappingSize, (.max, 0, 0)).status == .invalidParameter)
        #expect(ask(&config, &pages, .setHashMappingSize, (8, 0, 0)).status == .success)
        #expect(config.mapping == Array(repeating: 0, count: 8))
        pages.pages[5] = Self.words([3, 2, 1])
        #expect(ask(&config, &pages, .setHashMapping, (5, 3, 0)).status == .success)
        #expect(ask(&config, &pages, .setHashMappingSize, (4, 0, 0)).status == .success)
        #expect(config.mapping == [0, 0, 0, 0])
        #expect(ask(&config, &pages, .setHashMappingSize, (128, 0, 0)).status == .success)
        #expect(ask(&config, &pages, .setHashMappingSize, (0, 0, 0)).status == .success)
        #expect(config.mapping.isEmpty)
    }

    @Test("SET_HASH_MAPPING: sub-tables at offsets; past the table INVALID_PARAMETER; past 128 BUFFER_OVERFLOW; a queue ≥ the count INVALID_PARAMETER, all or nothing")
    func mapping() {
        var config = NetifHashConfiguration(queueCount: 4)
        var pages = Pages()
        pages.pages[5] = Self.words([3, 2, 1, 0])
        pages.pages[6] = Self.words([1, 1, 4, 1])
        pages.pages[7] = Self.words(Array(repeating: 2, count: 1024))
        // No table yet: any entry is past it.
        #expect(ask(&config, &pages, .setHashMapping, (5, 1, 0)).status == .invalidParameter)
        _ = ask(&config, &pages, .setHashMappingSize, (8, 0, 0))
        #expect(ask(&config, &pages, .setHashMapping, (5, 4, 2)).status == .success)
        #expect(config.mapping == [0, 0, 3, 2, 1, 0, 0, 0])
        // A second sub-table leaves the rest alone.
        #expect(ask(&config, &pages, .setHashMapping, (6, 2, 6)).status == .success)
        #expect(config.mapping == [0, 0, 3, 2, 1, 0, 1, 1])
        let before = config.mapping
        let reads = pages.reads.count
        #expect(ask(&config, &pages, .setHashMapping, (5, 4, 5)).status == .invalidParameter)
        #expect(ask(&config, &pages, .setHashMapping, (5, 1, 8)).status == .invalidParameter)
        #expect(ask(&config, &pages, .setHashMapping, (5, 1, .max)).status == .invalidParameter)
        #expect(ask(&config, &pages, .setHashMapping, (7, 129, 0)).status == .bufferOverflow)
        #expect(ask(&config, &pages, .setHashMapping, (7, 1024, 0)).status == .bufferOverflow)
        #expect(ask(&config, &pages, .setHashMapping, (7, .max, .max)).status == .bufferOverflow)
        #expect(pages.reads.count == reads, "sizes and offsets are checked before the grant is read")
        // Entry 2 names queue 4 of 4: refused, entries 0 and 1 not applied either.
        #expect(ask(&config, &pages, .setHashMapping, (6, 4, 0)).status == .invalidParameter)
        // An unreadable grant.
        #expect(ask(&config, &pages, .setHashMapping, (99, 2, 0)).status == .invalidParameter)
        #expect(config.mapping == before)
        // An empty sub-table: nothing read, SUCCESS.
        #expect(ask(&config, &pages, .setHashMapping, (99, 0, 8)).status == .success)
    }

    @Test("the mapping picks the queue: entry at hash modulo the table size; without a table, hash modulo the queue count")
    func queueSelection() {
        var config = NetifHashConfiguration(queueCount: 4)
        var pages = Pages()
        #expect((0..<8).map { config.queue(forHash: UInt32($0)) } == [0, 1, 2, 3, 0, 1, 2, 3])
        pages.pages[1] = Self.words([3, 3, 1])
        _ = ask(&config, &pages, .setHashMappingSize, (3, 0, 0))
        _ = ask(&config, &pages, .setHashMapping, (1, 3, 0))
        #expect((0..<6).map { config.queue(forHash: UInt32($0)) } == [3, 3, 1, 3, 3, 1])
        #expect(config.queue(forHash: .max) == 3)  // 0xFFFFFFFF % 3 == 0
    }

    @Test("GET_GREF_MAPPING_SIZE: SUCCESS with 0 (no static grants kept), a queue index ≥ the count INVALID_PARAMETER; ADD/DEL_GREF_MAPPING NOT_SUPPORTED, nothing read")
    func staticGrants() {
        var config = NetifHashConfiguration(queueCount: 2)
        var pages = Pages()
        #expect(ask(&config, &pages, .getGrefMappingSize, (1, 0, 0)) == NetifCtrlResponse(id: 7, type: 8, status: .success, data: 0))
        #expect(ask(&config, &pages, .getGrefMappingSize, (2, 0, 0)).status == .invalidParameter)
        #expect(ask(&config, &pages, .addGrefMapping, (0, 5, 1)).status == .notSupported)
        #expect(ask(&config, &pages, .delGrefMapping, (0, 5, 1)).status == .notSupported)
        #expect(pages.reads.isEmpty)
    }
}
