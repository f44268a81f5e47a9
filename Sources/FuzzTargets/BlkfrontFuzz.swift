import Blkif
import BlockFrontend
import Logging
import SharedMemory
import XenPlatform
import XenRing
import XenTesting

/// A fuzz target: the bytes script a lying backend against blkfront's rings
/// (``BlockFrontendRingProbe``: the connection's own dispatch and response consumer). The
/// frontend queues reads, writes, flushes and discards and sends them; the backend takes
/// them and answers with plausible responses (a real request's id, or any; the matching
/// operation, or any; any status), raw slot bytes and any rsp_prod. Blkfront must never
/// trap, never complete a request twice, never hand back a read of the wrong size, never
/// count more in flight than its depth; once it closes every request has completed
/// exactly once and, with the backend gone, every grant is given back.
public enum BlkfrontFuzz {
    final class World: @unchecked Sendable {
        // SAFETY (@unchecked): libFuzzer calls the target from one thread.
        let hypervisor: InProcessHypervisor
        let domain: DomainID
        let guest: InProcessPlatform
        let dom0: InProcessPlatform
        init() throws {
            var configuration = InProcessHypervisor.Configuration()
            configuration.poolPages = 16384
            configuration.grantEntries = 4096
            configuration.masksDeliveredPorts = true
            hypervisor = try InProcessHypervisor(configuration: configuration)
            domain = try hypervisor.createDomain(name: "fuzz")
            guest = try hypervisor.platform(for: domain)
            dom0 = try hypervisor.platform(for: .dom0)
        }
    }

    nonisolated(unsafe) static var world: World?
    /// Over every input so far: requests that succeeded and failed, and rings stopped
    /// for a lie, so a replay can check the scripts reach answered requests too.
    public nonisolated(unsafe) static var reached: (successes: Int, failures: Int, brokenRings: Int) = (0, 0, 0)
    static let quiet = quietLogger("xensplit.fuzz.blkfront")

    /// What the completions saw, per request.
    final class Ledger: @unchecked Sendable {
        // SAFETY (@unchecked): completions run on the fuzzing thread (no I/O thread here).
        var completions: [Int] = []
        var successes = 0
        var failures = 0
    }

    public static func run(_ input: UnsafeRawBufferPointer) {
        if world == nil {
            do { world = try World() } catch { fatalError("blkfront fuzz world: \(error)") }
        }
        let w = world!
        var script = ByteScript(input)
        let abi = [BlkifABI.native, .x86_32, .x86_64][Int(script.byte() % 3)]
        var features = BlkifBackendFeatures()
        let bits = script.byte()
        features.flushCache = bits & 1 != 0
        features.barrier = bits & 2 != 0
        features.discard = bits & 4 != 0
        features.maxIndirectSegments = bits & 8 != 0 ? [32, 64, 256][Int(bits >> 6) % 3] : nil
        features.maxQueues = bits & 16 != 0 ? 2 : nil
        features.maxRingPageOrder = UInt32(bits >> 5 & 1)
        let configuration = BlockFrontendConfiguration(queues: 2, maxIndirectSegments: 256, depth: Int(script.byte() % 8) + 1,
                                                       abi: abi)
        let probe: BlockFrontendRingProbe
        do {
            probe = try BlockFrontendRingProbe(platform: w.guest, backendDomain: .dom0, features: features,
                                               configuration: configuration, logger: quiet)
        } catch { fatalError("probe setup: \(error)") }
        var backs: [MockRingPeer.Backend] = []
        do {
            for ring in probe.rings {
                backs.append(try MockRingPeer.Backend(platform: w.dom0, connection: .init(frontendDomain: w.domain, refs: ring.refs,
                                                                                         port: ring.port),
                                                      entrySize: abi.slotSize))
            }
        } catch { fatalError("backend ring setup: \(error)") }
        let ledger = Ledger()
        var reads: [Int: Int] = [:]  // request number -> bytes it reads
        var seen: [(id: UInt64, operation: UInt8)] = []

        while !script.isEmpty {
            let back = backs[Int(script.byte()) % backs.count]
            switch script.byte() % 9 {
            case 0: // the frontend queues a request
                let number = ledger.completions.count
                ledger.completions.append(0)
                let sector = UInt64(script.byte())
                let count = script.byte() % 8 == 0 ? UInt64(script.byte()) * 4 + 1 : UInt64(script.byte() % 16) + 1
                let requests: [BlockFrontendRequest] = [
                    .read(sector: sector, count: count), .write(sector: sector, data: [UInt8](repeating: 0xA5, count: Int(count) * 512)),
                    features.flushCache || features.barrier ? .flush : .read(sector: sector, count: 1),
                    features.discard ? .discard(sector: sector, count: count) : .read(sector: sector, count: 1),
                ]
                let request = requests[Int(script.byte() % 4)]
                if case let .read(_, n) = request { reads[number] = Int(n) * 512 }
                let expected = reads[number]
                probe.queue(request) { result in
                    ledger.completions[number] += 1
                    precondition(ledger.completions[number] == 1, "request \(number) completed \(ledger.completions[number]) times")
                    switch result {
                    case let .success(data):
                        precondition(data.count == (expected ?? 0), "request \(number) handed back \(data.count) bytes")
                        ledger.successes += 1
                    case .failure:
                        ledger.failures += 1
                    }
                }
            case 1:
                probe.send()
            case 2: // the backend takes requests and learns their ids
                _ = try? back.consumeRequests { slot in
                    let id = slot.load(UInt64.self, at: abi.layout.idOffset)
                    let operation = (try? BlkifRequest.decode(from: slot, at: 0, abi: abi, maxIndirectSegments: 4096))?
                        .responseOperation ?? slot.load(UInt8.self, at: 0)
                    seen.append((id, operation))
                }
            case 3: // a plausible response
                let pick = script.byte()
                let truth = seen.isEmpty ? (id: UInt64(pick), operation: pick) : seen[Int(pick) % seen.count]
                let id = script.byte() % 8 == 0 ? UInt64(script.byte()) : truth.id
                let operation = script.byte() % 8 == 0 ? script.byte() % 8 : truth.operation
                let status: Int16 = [0, 0, 0, -1, -2, Int16(bitPattern: UInt16(script.byte()) << 8)][Int(script.byte() % 6)]
                try? back.produceResponse { slot in
                    slot.fill(0, at: 0, length: slot.count)
                    slot.store(id, at: BlkifLayout.responseIDOffset)
                    slot.store(operation, at: BlkifLayout.responseOperationOffset)
                    slot.store(status, at: BlkifLayout.responseStatusOffset)
                }
            case 4: // publish: honestly, or any rsp_prod
                if script.byte() & 1 == 0 { _ = try? back.pushResponsesAndNotify() } else { back.shared.storeResponseProducer(script.word()) }
            case 5: // raw bytes into a slot
                let slot = back.shared.slotOffset(script.word())
                back.shared.memory.store(script.word(), at: slot + Int(script.byte()) % (abi.slotSize - 3))
            case 6:
                probe.takeResponses()
            case 7:
                _ = probe.finalCheck()
            default: // the backend moves its response producer index back or forth privately
                back.ring.responseProducerPrivate &+= UInt32(script.byte() % 3)
            }
            precondition(probe.inFlight <= probe.depth && probe.inFlight + probe.freeSlots == probe.depth,
                         "\(probe.inFlight) in flight, \(probe.freeSlots) free, depth \(probe.depth)")
        }
        reached.brokenRings += probe.brokenRings
        for back in backs { do { try back.close() } catch { fatalError("backend close: \(error)") } }
        probe.close()
        for (number, count) in ledger.completions.enumerated() {
            precondition(count == 1, "request \(number) completed \(count) times by close")
        }
        reached.successes += ledger.successes
        reached.failures += ledger.failures
        precondition(probe.deferredGrants == 0, "grants still held after the backend unmapped")
        precondition(w.hypervisor.liveMappings == 0, "mappings left: \(w.hypervisor.liveMappings)")
    }
}
