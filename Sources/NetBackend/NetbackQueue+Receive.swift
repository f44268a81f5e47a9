import Glibc
import SystemCalls
import Netif
import SharedMemory
import Tap
import URing
import XenPlatform
import XenRing

/// Host to guest: TAP reads into the queue's buffers, then into the guest's posted buffers.
extension NetbackQueue {
    /// Delivers held packets while the guest has buffers, reads the TAP queue into the
    /// idle buffers (and delivers those), and polls the queue while a buffer is idle.
    ///
    /// The reads are plain non-blocking read(2) calls on this thread, one after another,
    /// not engine reads parked on the device: with several of those in flight, the order
    /// in which their completions come back, and when, is the kernel's (io_uring's
    /// retries or its worker threads), and TCP takes a packet that overtakes another, or
    /// one held back, for a loss. A packet is read only when a buffer is free for it, so
    /// the TAP queue, not this one, holds what the guest cannot take yet.
    func receive<Engine: BlockIOEngine>(engine: Engine) {
        deliverHeld()
        guard disconnectReason == nil else { return }
        if !inboxes.isEmpty, !inboxPolled, case .accepted = engine.enqueue(BlockRequest(
            .pollReadable(inboxes[self.index].eventFD), userData: userDataBase | UInt64(Self.inboxTag))) {
            inboxPolled = true
        }
        guard !tapPolled, !tapFailed else { return }
        if readTap() > 0 {
            deliverHeld()
            guard disconnectReason == nil else { return }
        }
        // Polled only while a buffer is idle: a full queue is woken by the guest's buffers.
        guard !tapFailed, rxState[0..<configuration.rxBuffers].contains(.idle) else { return }
        if case .accepted = engine.enqueue(BlockRequest(.pollReadable(tapDescriptor),
                                                        userData: userDataBase | UInt64(Self.tapPollTag))) {
            tapPolled = true
        }
    }

    /// Reads packets from the TAP queue into idle rx buffers until it is empty or no buffer
    /// is idle; returns how many it read.
    func readTap() -> Int {
        var read = 0
        activity.tapReadPasses += 1
        for index in 0..<configuration.rxBuffers where rxState[index] == .idle {
            guard !leaving, disconnectReason == nil else { break }
            let result = SystemCall.retrying { Glibc.read(tapDescriptor, base(rxBuffer, index), Self.stride) }
            switch result {
            case let .success(length):
                guard length > Self.headerSize else { continue }
                read += 1
                readCompleted(index, length: length)
            case .failure(.EAGAIN):
                return read
            case let .failure(errno):
                tapFailed = true
                guestLog.log(.error, "netback: reading the TAP queue failed; it is read no more", metadata: [
                    "queue": "\(name)", "frontend": "d\(frontendDomain)", "errno": "\(errno)"])
                return read
            }
        }
        return read
    }

    /// Where held packet `index` lies: an rx buffer of the queue's, or a slot of its inbox.
    func rxLocation(_ index: Int) -> (buffer: UInt32, offset: Int, base: UnsafeMutableRawPointer) {
        if index < configuration.rxBuffers { return (rxBuffer.id, index * Self.stride, base(rxBuffer, index)) }
        let inbox = inboxes[self.index], slot = index - configuration.rxBuffers
        return (inbox.bufferID, inbox.offset(of: slot), inbox.base(slot))
    }

    /// Held packet `index` is delivered or dropped: its rx buffer reads again, its inbox
    /// slot goes back to the inbox.
    func rxFinished(_ index: Int) {
        rxState[index] = .idle
        rxHashes[index] = nil
        if index >= configuration.rxBuffers { inboxes[self.index].release(index - configuration.rxBuffers) }
    }

    /// Takes the packets the vif's other queues handed over, after what is held already.
    func takeInbox() {
        guard !inboxes.isEmpty else { return }
        let inbox = inboxes[index], first = configuration.rxBuffers
        inbox.take { slot, length in
            guard !leaving, disconnectReason == nil, length > Self.headerSize else {
                inbox.release(slot)
                return
            }
            rxState[first + slot] = .held(length)
            rxHeld.append(first + slot)
        }
    }

    /// While the frontend hashes, the queue its mapping table gives a packet read here, if
    /// it is another one (nil: deliver it here).
    func steeringTarget(_ index: Int, length: Int) -> Int? {
        guard !inboxes.isEmpty, let hashing else { return nil }
        hashing.refresh(&hashSnapshot)
        guard hashSnapshot.hashing else { return nil }
        let frame = UnsafeRawBufferPointer(start: base(rxBuffer, index) + Self.headerSize, count: length - Self.headerSize)
        // Kept for the packet's hash extra, so a packet delivered here is hashed once.
        let hash = hashSnapshot.hash(frame)
        rxHashes[index] = .some(hash)
        // An unhashable frame goes by hash 0, as Linux's netback takes it.
        let target = hashSnapshot.configuration.queue(forHash: hash?.value ?? 0)
        guard target != self.index, target < inboxes.count else { return nil }
        return target
    }

    /// A packet of `length` bytes (header included) read into idle rx buffer `index`: held
    /// for the guest, or handed to the queue steering gives it (the buffer stays idle).
    func readCompleted(_ index: Int, length: Int) {
        if let target = steeringTarget(index, length: length) {
            let packet = UnsafeRawBufferPointer(start: base(rxBuffer, index), count: length)
            if !inboxes[target].put(packet) { statistics.rxDropped += 1 }
            rxHashes[index] = nil
            return
        }
        rxState[index] = .held(length)
        rxHeld.append(index)
    }

    /// A held packet placed in the guest's buffers, waiting for the pass's grant copy.
    struct PlacedReceive {
        var index: Int
        var plan: NetifRxPlan
        var requests: [NetifRxRequest]
        var copies: Range<Int>
        var length: Int
    }

    /// Delivers held packets in order while the guest posted enough buffers for the next;
    /// the copies of a pass go in one grant-copy call (its cost, not the bytes, bounds
    /// small packets).
    func deliverHeld() {
        // The pass's list lives in the queue between passes: no allocation per pass.
        var placed = rxPlaced
        rxPlaced = []
        defer { rxPlaced = placed }
        var copyCount = 0
        while rxHeldHead < rxHeld.count, disconnectReason == nil {
            let index = rxHeld[rxHeldHead]
            guard case let .held(length) = rxState[index] else { break }
            let outcome = place(index, length: length, copyCount: &copyCount)
            switch outcome {
            case .dropped:
                statistics.rxDropped += 1
                rxFinished(index)
                rxHeldHead += 1
                continue
            case .waiting:
                activity.rxWaits += 1
                if rxWaitingSince == nil { rxWaitingSince = .now }
                if rxStarvedSince == nil { rxStarvedSince = .now }
            case .full:
                // This pass's copies are full: send them, then go on.
                complete(&placed, copyCount: copyCount)
                copyCount = 0
                continue
            case let .placed(item):
                placed.append(item)
                rxWaitingSince = nil
                rxStarvedSince = nil
                // The guest takes packets again: its carrier comes back at the next check.
                stalled = false
                rxHeldHead += 1
                continue
            }
            break
        }
        complete(&placed, copyCount: copyCount)
        if rxHeldHead == rxHeld.count {
            rxHeld.removeAll(keepingCapacity: true)
            rxHeldHead = 0
        }
        // Relaxed: a hint for the housekeeping timer, which re-reads it every second.
        watchesStall.store(rxWaitingSince != nil || rxStarvedSince != nil || stalled, ordering: .relaxed)
    }

    enum Placement {
        case placed(PlacedReceive)
        /// The guest cannot take it (features, size): dropped.
        case dropped
        /// Too few buffers posted: the packet waits (the ring's request event is set so the
        /// guest's next post notifies us).
        case waiting
        /// The pass's copy batch has no room for it.
        case full
    }

    /// Plans the packet in rx buffer `index` (`length` bytes with its header) over the
    /// guest's posted buffers, consumes their requests and adds its copies to the batch.
    func place(_ index: Int, length: Int, copyCount: inout Int) -> Placement {
        let location = rxLocation(index)
        let base = location.base
        let frame = UnsafeMutableRawBufferPointer(start: base + Self.headerSize, count: length - Self.headerSize)
        // A multicast packet the guest did not ask for (its filter applied) is not delivered.
        guard multicast.admits(UnsafeRawBufferPointer(frame)),
              let header = VirtioNetHeader(decoding: UnsafeRawBufferPointer(start: base, count: Self.headerSize)),
              let plan = plan(frame, header: header, index: index) else {
            return .dropped
        }
        let pieces = (frame.count + 4095) / 4096
        guard copyCount + pieces <= copies.count else { return copyCount == 0 ? .dropped : .full }
        let needed = UInt32(plan.requestsNeeded)
        do throws(RingError) {
            var posted = try rxRing.unconsumedRequests()
            while posted < needed {
                // Ask for the next post even if some buffers are posted already: a guest
                // one buffer short would otherwise never notify us.
                guard try rxRing.awaitMoreRequests(than: posted) else { return .waiting }
                posted = try rxRing.unconsumedRequests()
            }
        } catch {
            disconnect(.ring(direction: .rx, error))
            return .waiting
        }
        let start = rxRing.requestConsumer
        var requests: [NetifRxRequest] = []
        requests.reserveCapacity(plan.slots.count)
        for i in 0..<plan.slots.count {
            do {
                requests.append(try NetifRxRequest.decode(from: rxRing.requestSlot(start &+ UInt32(i)), at: 0))
            } catch {
                disconnect(.packet(error))
                return .waiting
            }
        }
        rxRing.requestConsumer &+= needed
        let first = copyCount
        let offsetInBuffer = location.offset + Self.headerSize
        for (i, slot) in plan.slots.enumerated() {
            guard case let .data(packetOffset, length, _) = slot else { continue }
            copies[copyCount] = GrantCopySegment(
                source: .local(buffer: location.buffer, offset: offsetInBuffer + packetOffset),
                destination: .grant(domain: frontendDomain, ref: requests[i].gref, offset: 0), length: UInt16(length))
            copyCount += 1
        }
        return .placed(PlacedReceive(index: index, plan: plan, requests: requests, copies: first..<copyCount,
                                     length: frame.count))
    }

    /// Runs the pass's copies in one call, then answers every placed packet's requests in
    /// ring order: each response, or extra-info slot, in its own request's slot.
    func complete(_ placed: inout [PlacedReceive], copyCount: Int) {
        guard !placed.isEmpty else { return }
        defer { placed.removeAll(keepingCapacity: true) }
        var failedAll = false
        if copyCount > 0 {
            do { try mapper.copy(UnsafeMutableBufferPointer(rebasing: copies[0..<copyCount])) } catch { failedAll = true }
        }
        for item in placed {
            let failed = failedAll || copies[item.copies].contains { $0.status != .okay }
            if failed {
                statistics.rxErrors += 1
                guestLog.log(.warning, "netback rx grant copy failed", metadata: [
                    "queue": "\(name)", "frontend": "d\(frontendDomain)"])
            } else {
                statistics.rxPackets += 1
                statistics.rxBytes += item.length
            }
            respond(item.plan, requests: item.requests, failed: failed)
            rxFinished(item.index)
        }
    }

    /// How the packet spreads over the guest's buffers, with its checksum flags and GSO
    /// extra; nil when the guest cannot take it (dropped and counted).
    func plan(_ frame: UnsafeMutableRawBufferPointer, header: VirtioNetHeader, index: Int) -> NetifRxPlan? {
        var flags: NetifRxFlags = []
        var extras: [NetifExtraInfo] = []
        if header.flags.contains(.needsChecksum) {
            if features.checksumOffload, features.ipv6ChecksumOffload || !Self.isIPv6(frame) {
                flags = [.checksumBlank, .dataValidated]
            } else {
                // The guest does not take a partial checksum of this kind: finish it here.
                do {
                    try NetifChecksumOffload.completePartialChecksum(
                        in: frame, start: Int(header.csumStart), offset: Int(header.csumOffset), end: frame.count)
                } catch {
                    return nil
                }
                flags = [.dataValidated]
            }
        } else if header.flags.contains(.dataValid) {
            flags = [.dataValidated]
        }
        if header.gsoType != .none {
            switch header.gsoType {
            case .tcpv4 where features.gsoTCPv4:
                extras.append(NetifExtraInfo(.gso(size: header.gsoSize, type: .tcpv4, features: 0)))
            case .tcpv6 where features.gsoTCPv6:
                extras.append(NetifExtraInfo(.gso(size: header.gsoSize, type: .tcpv6, features: 0)))
            default:
                // The TAP's offloads mirror what the guest takes, so this is a kernel
                // that ignored them: drop.
                return nil
            }
        }
        if let hashing {
            // io/netif.h: a frontend that enabled hashing takes the hash with each packet.
            // Hashed already if steering looked at it on this queue.
            hashing.refresh(&hashSnapshot)
            if let hash = rxHashes[index] ?? hashSnapshot.hash(UnsafeRawBufferPointer(frame)) {
                extras.append(NetifExtraInfo(.hash(type: hash.type, algorithm: .toeplitz, value: hash.value)))
            }
        }
        guard let plan = try? NetifRxPlan(length: frame.count, flags: flags, extras: extras) else { return nil }
        if !features.scatterGather, frame.count > 4096 { return nil }
        return plan
    }

    static func isIPv6(_ frame: UnsafeMutableRawBufferPointer) -> Bool {
        guard frame.count >= 14 else { return false }
        var type = UInt16(frame[12]) << 8 | UInt16(frame[13])
        if type == 0x8100 || type == 0x88A8, frame.count >= 18 { type = UInt16(frame[16]) << 8 | UInt16(frame[17]) }
        return type == 0x86DD
    }

    /// Writes the responses of a placed packet, `failed` if its copy did not go through.
    func respond(_ plan: NetifRxPlan, requests: [NetifRxRequest], failed: Bool) {
        guard disconnectReason == nil else { return }
        for (i, slot) in plan.slots.enumerated() {
            let view = rxRing.responseSlot(rxRing.responseProducerPrivate)
            switch slot {
            case let .data(_, length, flags):
                let response = failed
                    ? NetifRxResponse(id: requests[i].id, offset: 0, flags: flags, status: NetifStatus.error.rawValue)
                    : NetifRxResponse(id: requests[i].id, offset: 0, flags: flags, size: UInt16(length))
                response.encode(into: view, at: 0)
            case let .extra(extra):
                extra.encode(into: view, at: 0)
            }
            rxRing.responseProducerPrivate &+= 1
        }
        rxUnpushed = true
    }
}
