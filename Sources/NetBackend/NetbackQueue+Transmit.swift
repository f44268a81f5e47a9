import Glibc
import Netif
import SharedMemory
import Tap
import URing
import XenPlatform
import XenRing

/// Guest to host: chains off the tx ring, into the queue's buffers, onto the TAP device.
///
/// The chains of one pass are copied in one grant-copy call (a hypercall on Xen, a
/// message to the local hypervisor): per-call cost, not per-byte cost, bounds small
/// packets, so a pass parses every chain it can buffer, copies them all, then writes them.
extension NetbackQueue {
    /// A parsed packet waiting for the pass's grant copy.
    struct PendingTransmit {
        var packet: NetifTxPacket
        var buffer: Int
        var copies: Range<Int>
        var gso: (size: UInt16, type: NetifGSOType)?
    }

    /// Takes chains while a buffer is free. Returns true when it stopped on its budget.
    func transmit<Engine: BlockIOEngine>(engine: Engine) -> Bool {
        var budget = Int(txRing.size)
        // The pass's list lives in the queue between passes: no allocation per pass.
        var pending = txPending
        txPending = []
        var copyCount = 0
        defer {
            finish(&pending, copyCount: copyCount, engine: engine)
            armCreditTimer(engine: engine)
            txPending = pending
        }
        do throws(RingError) {
            while disconnectReason == nil {
                if txFree.isEmpty {
                    // Out of buffers: with none in a TAP write, no completion would bring us
                    // back, so answer the pass now (failed copies and dropped packets give
                    // their buffers back) and go on if that freed any.
                    guard !pending.isEmpty else { return false }
                    finish(&pending, copyCount: copyCount, engine: engine)
                    copyCount = 0
                    guard !txFree.isEmpty else { return false }
                }
                var waiting = try txRing.unconsumedRequests()
                if waiting == 0 {
                    guard try txRing.finalCheckForRequests() else { return false }
                    waiting = try txRing.unconsumedRequests()
                }
                guard budget > 0 else { return true }
                let consumed = takeChain(available: waiting, pending: &pending, copyCount: &copyCount)
                guard consumed > 0 else {
                    // The chain's last slot is not published yet: ask to hear of the next
                    // push (the frontend may not notify otherwise), and look again if it
                    // came. A chain waiting for credit has the credit timer instead.
                    guard disconnectReason == nil, !creditExhausted, try txRing.awaitMoreRequests(than: waiting) else {
                        return false
                    }
                    continue
                }
                budget -= consumed
                if copyCount + NetifLimits.minimumSlotsPerPacket > copies.count {
                    finish(&pending, copyCount: copyCount, engine: engine)
                    copyCount = 0
                }
            }
        } catch {
            disconnect(.ring(direction: .tx, error))
        }
        return false
    }

    /// Polls the credit timer if a chain waited for credit in this pass.
    func armCreditTimer<Engine: BlockIOEngine>(engine: Engine) {
        guard creditExhausted, let credit else { return }
        creditExhausted = false
        guard !creditTimerArmed, !leaving else { return }
        do { try credit.armTimer() } catch {
            disconnect(error)
            return
        }
        if case .accepted = engine.enqueue(BlockRequest(.pollReadable(credit.timer.fileDescriptor),
                                                        userData: userDataBase | UInt64(Self.creditTimerTag))) {
            creditTimerArmed = true
        }
    }

    /// Parses the chain at the request consumer: a packet to forward joins `pending` with
    /// its copies; anything else is answered now. Returns the slots it used (0: the chain
    /// is not all published yet).
    func takeChain(available: UInt32, pending: inout [PendingTransmit], copyCount: inout Int) -> Int {
        let start = txRing.requestConsumer
        let outcome: NetifTxChainParser.Outcome
        do {
            outcome = try parser.parse(available: Int(available)) { txRing.requestSlot(start &+ UInt32($0)) }
        } catch {
            disconnect(.packet(error))
            return 0
        }
        switch outcome {
        case .incomplete:
            // A chain that does not end within a whole ring never will.
            if available >= txRing.size { disconnect(.endlessChain(slots: txRing.size)) }
            return 0
        case let .refused(reason, slotIDs):
            txRing.requestConsumer &+= UInt32(slotIDs.count)
            statistics.txErrors += 1
            guestLog.log(.warning, "netback tx chain refused", metadata: [
                "queue": "\(name)", "frontend": "d\(frontendDomain)", "reason": "\(reason)"])
            answer(slotIDs, .error)
            return slotIDs.count
        case let .packet(packet):
            // Under a rate, a packet the credit does not cover waits (not consumed) for
            // the renewal.
            if let credit, !credit.take(packet.length) {
                creditExhausted = true
                return 0
            }
            txRing.requestConsumer &+= UInt32(packet.slotIDs.count)
            var gso: (size: UInt16, type: NetifGSOType)?
            for extra in packet.extras {
                switch extra.kind {
                case let .gso(size, type, _): gso = (size, type)
                case let .multicastAdd(address):
                    // io/netif.h: a dummy request amending the filter, not a packet to send.
                    answer(packet.slotIDs, multicast.add(address) ? .okay : .error)
                    return packet.slotIDs.count
                case let .multicastDelete(address):
                    multicast.remove(address)
                    answer(packet.slotIDs, .okay)
                    return packet.slotIDs.count
                case .hash: break
                }
            }
            let buffer = txFree.removeLast()
            let first = copyCount
            var local = buffer * Self.stride + Self.headerSize
            for fragment in packet.fragments where fragment.size > 0 {
                copies[copyCount] = GrantCopySegment(
                    source: .grant(domain: frontendDomain, ref: fragment.gref, offset: fragment.offset),
                    destination: .local(buffer: txBuffer.id, offset: local), length: fragment.size)
                copyCount += 1
                local += Int(fragment.size)
            }
            pending.append(PendingTransmit(packet: packet, buffer: buffer, copies: first..<copyCount, gso: gso))
            return packet.slotIDs.count
        }
    }

    /// Runs the pass's grant copies in one call, then writes each packet whose copies all
    /// succeeded and answers every chain.
    func finish<Engine: BlockIOEngine>(_ pending: inout [PendingTransmit], copyCount: Int, engine: Engine) {
        guard !pending.isEmpty else { return }
        defer { pending.removeAll(keepingCapacity: true) }
        var failed = false
        if copyCount > 0 {
            do { try mapper.copy(UnsafeMutableBufferPointer(rebasing: copies[0..<copyCount])) } catch {
                guestLog.log(.warning, "netback tx grant copy failed", metadata: [
                    "queue": "\(name)", "frontend": "d\(frontendDomain)", "error": "\(error)"])
                failed = true
            }
        }
        for item in pending {
            if failed || copies[item.copies].contains(where: { $0.status != .okay }) {
                if !failed {
                    guestLog.log(.warning, "netback tx grant copy failed", metadata: [
                        "queue": "\(name)", "frontend": "d\(frontendDomain)",
                        "status": "\(copies[item.copies].first { $0.status != .okay }?.status ?? .okay)"])
                }
                txFree.append(item.buffer)
                statistics.txErrors += 1
                answer(item.packet.slotIDs, .error)
                continue
            }
            answer(item.packet.slotIDs, write(item, engine: engine))
        }
    }

    /// Puts the virtio-net header before the copied packet and starts its TAP write;
    /// returns the status its slots are answered with.
    func write<Engine: BlockIOEngine>(_ item: PendingTransmit, engine: Engine) -> NetifStatus {
        let index = item.buffer
        let base = base(txBuffer, index)
        let frame = UnsafeMutableRawBufferPointer(start: base + Self.headerSize, count: item.packet.length)
        guard let header = header(for: item.packet, gso: item.gso, frame: frame) else {
            txFree.append(index)
            statistics.txDropped += 1
            return .dropped
        }
        _ = header.encode(into: UnsafeMutableRawBufferPointer(start: base, count: Self.headerSize))
        txVectors[index] = iovec(iov_base: base, iov_len: Self.headerSize + item.packet.length)
        let vectors = UnsafeBufferPointer(rebasing: txVectors[index..<(index + 1)])
        switch engine.enqueue(BlockRequest(.streamWriteVector(tap, vectors: vectors), userData: userDataBase | UInt64(index))) {
        case .accepted:
            txWriting += 1
            statistics.txPackets += 1
            statistics.txBytes += item.packet.length
        case .queueFull:
            txFree.append(index)
            statistics.txDropped += 1
        }
        return .okay
    }

    /// The virtio-net header for the TAP write: NEEDS_CSUM with the L4 checksum's place
    /// for a checksum-blank packet (parsed, bounds-checked, from our copy), and the GSO
    /// fields from its extra. Nil when the headers do not parse (the packet is dropped).
    func header(for packet: NetifTxPacket, gso: (size: UInt16, type: NetifGSOType)?,
                frame: UnsafeMutableRawBufferPointer) -> VirtioNetHeader? {
        var header = VirtioNetHeader()
        guard packet.flags.contains(.checksumBlank) || gso != nil else {
            if packet.flags.contains(.dataValidated) { header.flags = .dataValid }
            return header
        }
        let location: NetifChecksumLocation
        do { location = try NetifChecksumOffload.locate(in: UnsafeRawBufferPointer(frame)) } catch {
            guestLog.log(.warning, "netback tx packet dropped: its headers do not parse", metadata: [
                "queue": "\(name)", "frontend": "d\(frontendDomain)", "error": "\(error)"])
            return nil
        }
        if !packet.flags.contains(.checksumBlank) {
            // A GSO packet must carry a partial checksum; a frontend that did not say so
            // gets the pseudo-header sum written for it, as Linux's netback does.
            NetifChecksumOffload.writePseudoHeaderSum(into: frame, at: location)
        }
        header.flags = .needsChecksum
        header.csumStart = UInt16(location.csumStart)
        header.csumOffset = UInt16(location.csumOffset)
        if let gso {
            guard location.transport == .tcp else {
                guestLog.log(.warning, "netback tx packet dropped: TCP GSO on a non-TCP packet", metadata: [
                    "queue": "\(name)", "frontend": "d\(frontendDomain)"])
                return nil
            }
            header.gsoType = gso.type == .tcpv6 ? .tcpv6 : .tcpv4
            header.gsoSize = gso.size
            header.headerLength = UInt16(location.headerLength)
        }
        return header
    }

    /// Answers every slot of a chain in ring order: `status` for a request, NULL for an
    /// extra-info slot (io/netif.h).
    func answer(_ slotIDs: [UInt16?], _ status: NetifStatus) {
        guard disconnectReason == nil else { return }
        for id in slotIDs {
            let response = NetifTxResponse(id: id ?? 0, status: id == nil ? .null : status)
            response.encode(into: txRing.responseSlot(txRing.responseProducerPrivate), at: 0)
            txRing.responseProducerPrivate &+= 1
        }
        txUnpushed = true
    }

    /// A TAP write finished: the buffer is free again.
    func writeCompleted(_ index: Int, result: Int32) {
        guard index >= 0, index < configuration.txBuffers else { return }
        txWriting -= 1
        txFree.append(index)
        if result < 0 {
            // Our side (the device is down, its queue full): counted, not the guest's doing.
            statistics.txDropped += 1
            statistics.txPackets -= 1
        }
    }
}
