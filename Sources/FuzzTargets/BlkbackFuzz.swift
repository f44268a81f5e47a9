import Blkif
import BlockBackend
import Glibc
import Logging
import SharedMemory
import URing
import XenPlatform
import XenRing
import XenTesting

/// A fuzz target: the bytes script a hostile frontend against one ``BlkbackQueue`` on the
/// in-process hypervisor. The frontend writes raw slot bytes and plausible requests
/// (any operation, segment count, sector, gref, sector range, indirect page contents),
/// lies about req_prod, rewrites its data and indirect pages, while the queue services
/// the ring and its I/O completes in an order the script picks. The queue must never
/// trap, never have more in flight than it has slots, never answer more than the ring
/// allows, and once closed must hold no mapping, pinned grant or copy buffer.
public enum BlkbackFuzz {
    /// What lives across inputs: the hypervisor, the frontend's domain and pages, a disk.
    final class World: @unchecked Sendable {
        // SAFETY (@unchecked): libFuzzer calls the target from one thread.
        let hypervisor: InProcessHypervisor
        let domain: DomainID
        let guest: InProcessPlatform
        let dom0: InProcessPlatform
        let data: SharedPages
        let readOnlyData: SharedPages
        let indirect: SharedPages
        let store: FileBackingStore
        static let diskSectors: UInt64 = 256
        static let dataPages = 16

        init() throws {
            var configuration = InProcessHypervisor.Configuration()
            configuration.poolPages = 8192
            configuration.grantEntries = 1024
            configuration.masksDeliveredPorts = true
            hypervisor = try InProcessHypervisor(configuration: configuration)
            domain = try hypervisor.createDomain(name: "fuzz")
            guest = try hypervisor.platform(for: domain)
            dom0 = try hypervisor.platform(for: .dom0)
            data = try guest.share(pages: Self.dataPages, with: .dom0, writable: true)
            readOnlyData = try guest.share(pages: 2, with: .dom0, writable: false)
            indirect = try guest.share(pages: BlkifIndirectGrefs.capacity, with: .dom0, writable: true)
            var template = Array("/dev/shm/xensplit-fuzz-disk-XXXXXX".utf8CString)
            let fd = mkstemp(&template)
            guard fd >= 0 else { throw PlatformError.system("mkstemp", errno: errno) }
            let path = String(cString: template)
            defer { close(fd); unlink(path) }
            guard ftruncate(fd, off_t(Self.diskSectors * 512)) == 0 else { throw PlatformError.system("ftruncate", errno: errno) }
            store = try FileBackingStore(path: path, readOnly: false)
        }

        /// A gref the script picks: granted writable, granted read-only, or anything.
        func gref(_ choice: UInt8, _ raw: UInt32) -> GrantRef {
            switch choice % 8 {
            case 0...5: return data.refs[Int(raw) % data.refs.count]
            case 6: return readOnlyData.refs[Int(raw) % readOnlyData.refs.count]
            default: return raw % 1100
            }
        }
    }

    nonisolated(unsafe) static var world: World?
    /// What the queues answered over every input so far, so a replay can check the
    /// scripts reach successful I/O of every kind and not only refusals.
    public nonisolated(unsafe) static var reached = BlkbackStatistics()

    static let quiet = quietLogger("xensplit.fuzz.blkback")

    /// Runs one input. Violated invariants trap, which the fuzzer reports as a crash.
    public static func run(_ input: UnsafeRawBufferPointer) {
        if world == nil {
            do { world = try World() } catch { fatalError("blkback fuzz world: \(error)") }
        }
        let w = world!
        var script = ByteScript(input)
        let abi = [BlkifABI.native, .x86_32, .x86_64][Int(script.byte() % 3)]
        let ringPages = 1 << Int(script.byte() % 2)
        var configuration = BlkbackQueueConfiguration(
            abi: abi, maxIndirectSegments: [0, 8, 32][Int(script.byte() % 3)], slots: Int(script.byte() % 8) + 1,
            readOnly: script.byte() % 5 == 0, discard: true, persistentGrants: script.byte() & 1 == 1,
            persistentGrantsPerQueue: Int(script.byte() % 12) + 1)
        configuration.abi = abi
        let front: MockRingPeer.Frontend
        let back: MockRingPeer.Backend
        do {
            front = try MockRingPeer.Frontend(platform: w.guest, backendDomain: .dom0, pages: ringPages,
                                              entrySize: abi.slotSize)
            back = try MockRingPeer.Backend(platform: w.dom0, connection: front.connection, entrySize: abi.slotSize)
        } catch { fatalError("ring setup: \(error)") }
        let queue: BlkbackQueue
        do {
            queue = try BlkbackQueue(name: "fuzz", ring: back.ring, frontendDomain: w.domain, eventChannel: back.eventChannel,
                                     port: back.port, mapper: w.dom0, store: w.store, configuration: configuration,
                                     logger: quiet)
        } catch { fatalError("queue setup: \(error)") }
        let engine = HeldEngine()
        let shared = front.shared
        let layout = abi.layout
        var produced: UInt32 = 0

        while !script.isEmpty {
            switch script.byte() % 10 {
            case 0: // raw bytes into a slot
                let slot = shared.slotOffset(script.word())
                for _ in 0..<Int(script.byte() % 16) {
                    shared.memory.store(script.byte(), at: slot + Int(script.byte()) % abi.slotSize)
                }
            case 1: // a plausible request in the next slot
                let slot = front.ring.requestSlot(produced)
                writeRequest(into: slot, layout: layout, script: &script, world: w, indirect: configuration.maxIndirectSegments)
                produced &+= 1
            case 2: // publish: honestly, or any req_prod
                let value = script.byte() & 1 == 0 ? produced : script.word()
                shared.storeRequestProducer(value)
            case 3:
                queue.service(engine: engine)
                precondition(queue.inFlight <= configuration.slots, "more in flight than slots")
            case 4: // some held I/O completes, in an order the script picks
                for _ in 0..<Int(script.byte() % 4) + 1 {
                    guard let completion = engine.complete(pick: Int(script.byte())) else { break }
                    queue.complete(slot: Int(completion.userData & 0xFFFF_FFFF), result: completion.result, engine: engine)
                }
            case 5:
                queue.pushResponses()
            case 6: // the frontend rewrites an indirect page
                let page = Int(script.byte()) % BlkifIndirectGrefs.capacity
                for _ in 0..<Int(script.byte() % 16) {
                    w.indirect.view.store(script.word(), at: page * pageSize + Int(script.byte()) * 16 % pageSize)
                }
            case 7: // ... or a plausible indirect segment
                let page = Int(script.byte()) % BlkifIndirectGrefs.capacity
                let index = Int(script.byte()) % BlkifIndirectPage.segmentsPerPage
                let (first, last) = sectorRange(&script)
                let segment = BlkifSegment(gref: w.gref(script.byte(), UInt32(script.byte())), firstSector: first,
                                           lastSector: last)
                if let view = try? w.indirect.view.slice(offset: page * pageSize, length: pageSize) {
                    BlkifIndirectPage.encodeSegment(segment, index: index, into: view)
                }
            case 8: // the frontend scribbles on its data
                w.data.view.store(script.word(), at: Int(script.word()) % (World.dataPages * pageSize - 4))
            default:
                _ = try? front.finalCheckForResponses()
                _ = try? front.consumeResponses { _ in }
            }
        }
        // Everything still held completes; then the queue lets go of everything.
        while let completion = engine.complete(pick: 0) {
            queue.complete(slot: Int(completion.userData & 0xFFFF_FFFF), result: completion.result, engine: engine)
            if engine.held.isEmpty { queue.service(engine: engine) }
        }
        precondition(queue.inFlight == 0, "requests in flight with no I/O held: \(queue.inFlight)")
        reached = reached + queue.statistics
        do { try queue.close() } catch { fatalError("close: \(error)") }
        back.eventChannel.close()
        do { try w.dom0.unmap(back.mapping) } catch { fatalError("ring unmap: \(error)") }
        precondition(w.hypervisor.liveMappings == 0, "mappings left after close: \(w.hypervisor.liveMappings)")
        precondition(w.hypervisor.pinnedRefs(of: w.domain).isEmpty, "grants still pinned after close")
        do { try front.close() } catch { fatalError("frontend close: \(error)") }
    }

    /// A segment's first_sect and last_sect: mostly valid, now and then anything.
    static func sectorRange(_ script: inout ByteScript) -> (UInt8, UInt8) {
        if script.byte() % 16 == 0 { return (script.byte() % 10, script.byte() % 10) }
        let first = script.byte() % 8
        return (first, first + script.byte() % (8 - first))
    }

    /// Writes a request whose fields the script chooses within loose bounds, field by
    /// field at the ABI's offsets (so any combination, valid or not, can be written), and
    /// often enough valid to reach the queue's deeper checks.
    static func writeRequest(into slot: SharedView, layout: BlkifLayout, script: inout ByteScript, world w: World,
                             indirect maxIndirect: Int) {
        let operation = [0, 1, 2, 3, 5, 6, 6, 4, 9][Int(script.byte() % 9)]
        let sector = script.byte() % 4 != 0 ? UInt64(script.byte() % 128) : UInt64(script.word()) << UInt64(script.byte() % 33)
        slot.fill(0, at: 0, length: slot.count)
        slot.store(UInt8(operation), at: BlkifLayout.operationOffset)
        slot.store(UInt64(script.word()), at: layout.idOffset)
        slot.store(sector, at: layout.sectorNumberOffset)
        switch operation {
        case 5:
            slot.store(script.byte() % 4 == 0 ? UInt8(1) : 0, at: BlkifLayout.secondByteOffset)
            slot.store(UInt64(script.byte()) << UInt64(script.byte() % 8), at: layout.discardSectorCountOffset)
        case 6:
            slot.store(script.byte() % 3 == 0 ? UInt8(1) : 0, at: BlkifLayout.secondByteOffset)   // indirect_op
            let count = Int(script.byte()) % (maxIndirect + 3)
            slot.store(UInt16(count), at: BlkifLayout.indirectSegmentCountOffset)
            for page in 0..<BlkifIndirectGrefs.capacity {
                let gref = script.byte() % 8 == 0 ? script.word() % 1100 : w.indirect.refs[page]
                slot.store(gref, at: layout.indirectGrefsOffset + 4 * page)
            }
        default:
            let count = script.byte() % 8 == 0 ? script.byte() : script.byte() % 11 + 1
            slot.store(count, at: BlkifLayout.secondByteOffset)
            for k in 0..<min(Int(count), BlkifSegments.capacity) {
                let at = layout.segmentsOffset + k * BlkifSegment.size
                slot.store(w.gref(script.byte(), UInt32(script.byte())), at: at + BlkifSegment.grefOffset)
                let (first, last) = sectorRange(&script)
                slot.store(first, at: at + BlkifSegment.firstSectorOffset)
                slot.store(last, at: at + BlkifSegment.lastSectorOffset)
            }
        }
    }
}

/// An I/O engine that performs each operation only when the script completes it, in the
/// order the script picks (so completions arrive in any order, and data the frontend
/// rewrites in the meantime is what gets written).
final class HeldEngine: BlockIOEngine {
    var held: [BlockRequest] = []
    var kind: BlockIOEngineKind { .threads }
    let capacity = 256
    var inFlight: Int { held.count }

    func registerFiles(_ descriptors: [Int32]) throws(URingError) {}
    func updateRegisteredFiles(_ descriptors: [Int32], at offset: Int) throws(URingError) {}
    func registerBuffers(_ buffers: [UnsafeMutableRawBufferPointer]) throws(URingError) {}
    func submit() throws(URingError) {}
    func wait(minimum: Int, timeout: Duration?) throws(URingError) {}
    func reap(into buffer: UnsafeMutableBufferPointer<Completion>) -> Int { 0 }
    func close() {}

    func enqueue(_ request: BlockRequest) -> EnqueueOutcome {
        guard held.count < capacity else { return .queueFull(request) }
        held.append(request)
        return .accepted
    }

    /// Performs the held operation at `pick` (modulo the count) and returns its completion.
    func complete(pick: Int) -> Completion? {
        guard !held.isEmpty else { return nil }
        let request = held.remove(at: pick % held.count)
        return Completion(userData: request.userData, result: Self.perform(request.operation))
    }

    static func perform(_ operation: BlockIOOperation) -> Int32 {
        func fd(_ file: FileReference) -> Int32 {
            if case let .descriptor(fd) = file { return fd }
            return -1
        }
        let result: Int
        switch operation {
        case let .read(file, offset, buffer): result = pread(fd(file), buffer.baseAddress, buffer.count, off_t(offset))
        case let .write(file, offset, buffer): result = pwrite(fd(file), buffer.baseAddress, buffer.count, off_t(offset))
        case let .flush(file): result = Int(fdatasync(fd(file)))
        case let .discard(file, offset, length):
            // The range then reads as zeroes, as a punched hole would (the disk is small).
            let zeroes = [UInt8](repeating: 0, count: Int(min(length, 1 << 20)))
            result = pwrite(fd(file), zeroes, zeroes.count, off_t(offset)) < 0 ? -1 : 0
        default: return -EINVAL
        }
        return result < 0 ? -errno : Int32(result)
    }
}
