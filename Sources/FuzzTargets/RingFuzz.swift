import SharedMemory
import XenRing

/// A fuzz target: the bytes are a script in which a hostile peer scribbles on a shared
/// ring (indices, event fields, slots) between the steps of an honest backend and
/// frontend. Our ends must never trap, never consume past what the rules allow, and must
/// report every lie as a ``RingError``.
public enum RingFuzz {
    /// Runs one input. Violated invariants trap, which the fuzzer reports as a crash.
    public static func run(_ input: UnsafeRawBufferPointer) {
        var script = ByteScript(input)
        let pages = [1, 2, 4, 8, 16][Int(script.byte() % 5)]
        let entrySize = Int(script.byte() % 240) + 4
        guard let region = try? MemoryRegion.anonymous(pages: pages),
              let shared = try? SharedRing(memory: region.view, pages: pages, entrySize: entrySize) else {
            fatalError("ring geometry \(pages) pages x \(entrySize) bytes must be accepted")
        }
        let m = region.view
        var front = FrontRing(initializing: shared)
        var back = BackRing(shared)
        let bytes = try! XenstoreRingInterface(memory: m)
        var scratch = [UInt8](repeating: 0, count: 2048)

        while !script.isEmpty {
            switch script.byte() % 12 {
            case 0: // the peer sets a header field to anything
                let field = Int(script.byte() % 4) * 4
                m.store(script.word(), at: field)
            case 1: // the peer writes a slot
                m.store(script.word(), at: shared.slotOffset(script.word()) + Int(script.byte()) % (entrySize - 3))
            case 2: // honest frontend produces what fits
                let n = min(UInt32(script.byte() % 8), front.freeRequests)
                front.requestProducerPrivate &+= n
                if script.byte() & 1 == 0 { front.pushRequests() } else { _ = front.pushRequestsAndCheckNotify() }
            case 3: // honest backend drains, bounded as blkback is
                guard let producer = try? back.checkedRequestProducer() else { continue }
                precondition(producer &- back.responseProducerPrivate <= shared.size, "accepted an overrun req_prod")
                while back.requestConsumer != producer, !back.requestConsumerOverflow(back.requestConsumer) {
                    _ = back.requestSlot(back.requestConsumer).load(UInt32.self, at: 0)
                    back.requestConsumer &+= 1
                }
                precondition(back.requestConsumer &- back.responseProducerPrivate <= shared.size, "consumed past the response room")
            case 4: // backend answers what it consumed
                let owed = back.requestConsumer &- back.responseProducerPrivate
                back.responseProducerPrivate &+= min(owed, UInt32(script.byte() % 8))
                _ = back.pushResponsesAndCheckNotify()
            case 5:
                if let waiting = try? back.unconsumedRequests() {
                    precondition(waiting <= shared.size, "more waiting requests than slots")
                }
                _ = try? back.finalCheckForRequests()
            case 6: // frontend consumes what the peer claims, if the claim is believable
                guard let producer = try? front.checkedResponseProducer() else { continue }
                precondition(producer &- front.responseConsumer <= front.requestProducerPrivate &- front.responseConsumer,
                             "accepted responses to requests never made")
                front.responseConsumer = producer
            case 7:
                _ = try? front.finalCheckForResponses()
            case 8: // byte ring: the peer sets an index
                m.store(script.word(), at: 2048 + Int(script.byte() % 4) * 4)
            case 9:
                let n = Int(script.byte()) * 8
                if let wrote = try? scratch.withUnsafeBytes({ try bytes.requests.write(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }) {
                    precondition(wrote <= n && wrote <= 1024)
                }
            case 10:
                let n = Int(script.byte()) * 8
                if let got = try? scratch.withUnsafeMutableBytes({ try bytes.responses.read(into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<n])) }) {
                    precondition(got <= n && got <= 1024)
                }
            default:
                if let free = try? bytes.requests.freeSpace() { precondition((0...1024).contains(free)) }
                if let avail = try? bytes.responses.bytesAvailable() { precondition((0...1024).contains(avail)) }
            }
        }
        withExtendedLifetime(region) {}
    }
}

/// Reads a fuzz input as a stream of bytes and little-endian words, zero past its end.
struct ByteScript {
    let input: UnsafeRawBufferPointer
    var position = 0
    init(_ input: UnsafeRawBufferPointer) { self.input = input }
    var isEmpty: Bool { position >= input.count }
    mutating func byte() -> UInt8 {
        guard position < input.count else { return 0 }
        defer { position += 1 }
        return input[position]
    }
    mutating func word() -> UInt32 {
        var w: UInt32 = 0
        for shift in stride(from: 0, to: 32, by: 8) { w |= UInt32(byte()) << UInt32(shift) }
        return w
    }
}
