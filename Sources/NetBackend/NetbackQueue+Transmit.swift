import Glibc
import Netif
import SharedMemory
import Tap
import URing
import XenPlatform
import XenRing

/// Guest to host: chains off the tx ring, into the queue's buffers, onto the TAP device.
extension NetbackQueue {
    /// Takes chains while a buffer is free. Returns true when it stopped on its budget.
    func transmit<Engine: BlockIOEngine>(engine: Engine) -> Bool {
        var budget = Int(txRing.size)
        do throws(RingError) {
            while !txFree.isEmpty, disconnectReason == nil {
                var waiting = try txRing.unconsumedRequests()
                if waiting == 0 {
                    guard try txRing.finalCheckForRequests() else { return false }
                    waiting = try txRing.unconsumedRequests()
                }
                guard budget > 0 else { return true }
                let consumed = takeChain(available: waiting, engine: engine)
                guard consumed > 0 else { return false }
                budget -= consumed
            }
        } catch {
            disconnect(.ring(direction: .tx, error))
        }
        return false
    }

    /// Parses and serves the chain at the request consumer; returns the slots it used (0:
    /// the chain is not all published yet).
    func takeChain<Engine: BlockIOEngine>(available: UInt32, engine: Engine) -> Int {
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
            txRing.requestConsumer &+= UInt32(packet.slotIDs.count)
            answer(packet.slotIDs, forward(packet, engine: engine))
            return packet.slotIDs.count
        }
    }

    /// Copies `packet` into a free buffer behind its virtio-net header and starts its TAP
    /// write; returns the status its slots are answered with.
    func forward<Engine: BlockIOEngine>(_ packet: NetifTxPacket, engine: Engine) -> NetifStatus {
        var gso: (size: UInt16, type: NetifGSOType)?
        for extra in packet.extras {
            switch extra.kind {
            case let .gso(size, type, _): gso = (size, type)
            case .multicastAdd, .multicastDelete:
                // Multicast control rides on a packet that is not sent ([netmq] filters).
                return .okay
            case .hash: break
            }
        }
        let index = txFree.removeLast()
        let base = base(txBuffer, index)
        guard copyIn(packet, to: index) else {
            txFree.append(index)
            statistics.txErrors += 1
            return .error
        }
        let frame = UnsafeMutableRawBufferPointer(start: base + Self.headerSize, count: packet.length)
        guard let header = header(for: packet, gso: gso, frame: frame) else {
            txFree.append(index)
            statistics.txDropped += 1
            return .dropped
        }
        _ = header.encode(into: UnsafeMutableRawBufferPointer(start: base, count: Self.headerSize))
        txVectors[index] = iovec(iov_base: base, iov_len: Self.headerSize + packet.length)
        let vectors = UnsafeBufferPointer(rebasing: txVectors[index..<(index + 1)])
        switch engine.enqueue(BlockRequest(.streamWriteVector(tap, vectors: vectors), userData: userDataBase | UInt64(index))) {
        case .accepted:
            txWriting += 1
            statistics.txPackets += 1
            statistics.txBytes += packet.length
        case .queueFull:
            txFree.append(index)
            statistics.txDropped += 1
        }
        return .okay
    }

    /// Grant-copies the packet's fragments into tx buffer `index`, after the header room.
    func copyIn(_ packet: NetifTxPacket, to index: Int) -> Bool {
        var count = 0
        var local = index * Self.stride + Self.headerSize
        for fragment in packet.fragments where fragment.size > 0 {
            copies[count] = GrantCopySegment(
                source: .grant(domain: frontendDomain, ref: fragment.gref, offset: fragment.offset),
                destination: .local(buffer: txBuffer.id, offset: local), length: fragment.size)
            count += 1
            local += Int(fragment.size)
        }
        guard count > 0 else { return true }
        let batch = UnsafeMutableBufferPointer(rebasing: copies[0..<count])
        do { try mapper.copy(batch) } catch {
            guestLog.log(.warning, "netback tx grant copy failed", metadata: [
                "queue": "\(name)", "frontend": "d\(frontendDomain)", "error": "\(error)"])
            return false
        }
        for segment in batch where segment.status != .okay {
            guestLog.log(.warning, "netback tx grant copy failed", metadata: [
                "queue": "\(name)", "frontend": "d\(frontendDomain)", "status": "\(segment.status)"])
            return false
        }
        return true
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
