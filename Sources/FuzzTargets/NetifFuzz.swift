import Netif
import SharedMemory
import XenRing

/// A fuzz target for what a net backend reads from a guest and computes from it: the
/// bytes are the guest's tx ring (slots and how many it published), taken chain by chain
/// as netback does, then a frame whose checksum is located and finished, and an rx plan.
/// Every chain must consume only published slots, every packet must lie inside its
/// pages and add up to its length, and checksum work must stay inside the frame.
public enum NetifFuzz {
    public static func run(_ input: UnsafeRawBufferPointer) {
        var script = ByteScript(input)
        guard let region = try? MemoryRegion.anonymous(pages: 1),
              let shared = try? SharedRing(memory: region.view, entrySize: NetifLayout.txSlotSize) else {
            fatalError("a one-page tx ring must be accepted")
        }
        let view = region.view
        // The guest writes its slots and publishes some of them.
        let slotBytes = Int(shared.size) * NetifLayout.txSlotSize
        var offset = 0
        while offset < slotBytes, !script.isEmpty {
            view.store(script.word(), at: shared.slotOffset(0) + offset)
            offset += 4
        }
        let published = UInt32(script.byte()) % (shared.size + 1)
        let parser = NetifTxChainParser(maxSlots: NetifLimits.minimumSlotsPerPacket, fatalSlots: 20)
        var consumed: UInt32 = 0
        while consumed < published {
            let available = Int(published - consumed)
            let start = consumed
            let outcome: NetifTxChainParser.Outcome
            do {
                outcome = try parser.parse(available: available) { shared.slot(start &+ UInt32($0)) }
            } catch {
                return  // a violation: netback refuses the vif
            }
            switch outcome {
            case .incomplete:
                consumed = published
            case let .refused(_, slotIDs):
                precondition(!slotIDs.isEmpty && slotIDs.count <= available, "refused chain took \(slotIDs.count) of \(available)")
                consumed &+= UInt32(slotIDs.count)
            case let .packet(packet):
                precondition(!packet.slotIDs.isEmpty && packet.slotIDs.count <= available, "packet took unpublished slots")
                precondition(packet.fragments.count <= parser.maxSlots, "more fragments than served")
                precondition(packet.fragments.reduce(0) { $0 + Int($1.size) } == packet.length, "fragments do not add up")
                for fragment in packet.fragments {
                    precondition(Int(fragment.offset) + Int(fragment.size) <= 4096, "fragment crosses its page")
                }
                consumed &+= UInt32(packet.slotIDs.count)
            }
        }
        // The rest of the input is a frame: locate its checksum and finish it in place.
        let rest = max(0, input.count - script.position)
        let frame = UnsafeMutableRawBufferPointer.allocate(byteCount: rest, alignment: 8)
        defer { frame.deallocate() }
        if rest > 0, let base = input.baseAddress { frame.copyMemory(from: UnsafeRawBufferPointer(start: base + script.position, count: rest)) }
        if let location = try? NetifChecksumOffload.locate(in: UnsafeRawBufferPointer(frame)) {
            precondition(location.csumStart + location.csumOffset + 2 <= location.end, "checksum field past the packet")
            precondition(location.end <= frame.count && location.headerLength <= location.end, "location past the frame")
            NetifChecksumOffload.writePseudoHeaderSum(into: frame, at: location)
            try? NetifChecksumOffload.completePartialChecksum(in: frame, at: location)
        }
        if rest > 0, let plan = try? NetifRxPlan(length: rest, flags: [.checksumBlank], bufferSize: 4096) {
            var covered = 0
            for slot in plan.slots {
                if case let .data(packetOffset, length, _) = slot {
                    precondition(packetOffset == covered && length > 0 && length <= 4096, "rx plan leaves a gap")
                    covered += length
                }
            }
            precondition(covered == rest, "rx plan does not cover the packet")
        }
    }
}
