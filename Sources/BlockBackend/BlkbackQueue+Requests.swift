import Blkif
import Glibc
import SharedMemory
import URing
import XenPlatform
import XenRing

extension BlkbackQueue {
    /// Consumes requests while a slot is free, then asks for a notification of the next
    /// (io/ring.h: RING_FINAL_CHECK_FOR_REQUESTS). With every slot busy or a barrier
    /// waiting, it stops without asking: the worker calls again after completions.
    ///
    /// At most one ring's worth of requests is taken per call, so a frontend that keeps
    /// producing requests answered at once (invalid ones) cannot hold its worker: the call
    /// then returns true and the worker comes back after serving the others.
    @discardableResult
    public func service<Engine: BlockIOEngine>(engine: Engine) -> Bool {
        guard disconnectReason == nil, !closed, takesRequests else { return false }
        if replayNext < replay.count, !resumeReplay(engine: engine) { return false }
        var budget = ring.size
        do throws(RingError) {
            while freeCount > 0, barrierSlot == nil {
                var waiting = try ring.unconsumedRequests()
                if waiting == 0 {
                    guard try ring.finalCheckForRequests() else { break }
                    waiting = try ring.unconsumedRequests()
                }
                while waiting > 0, freeCount > 0, barrierSlot == nil, disconnectReason == nil {
                    guard budget > 0 else { return true }
                    budget -= 1
                    let slot = ring.requestSlot(ring.requestConsumer)
                    if let restart {
                        // Every record busy: publishing frees the answered ones.
                        if !restart.canTake { pushResponses() }
                        guard restart.canTake else { return false }
                        // Recorded (T1..T3), then decoded from the record: our one copy.
                        let record = restart.take(slot, at: ring.requestConsumer)
                        ring.requestConsumer &+= 1
                        waiting -= 1
                        answeringRecord = record
                        accept(restart.request(record), engine: engine)
                        answeringRecord = -1
                        continue
                    }
                    ring.requestConsumer &+= 1
                    waiting -= 1
                    accept(slot, engine: engine)
                }
                if disconnectReason != nil { return false }
            }
        } catch {
            disconnect(.ring(error))
        }
        return false
    }

    /// Re-executes the requests a previous process had in flight, in the order it took
    /// them, each from its record (Protocols/blkback-restart.md, "Recovery", 6); a flush
    /// or barrier starts only once every request before it completed. True once all
    /// have started.
    func resumeReplay<Engine: BlockIOEngine>(engine: Engine) -> Bool {
        guard let restart else { return true }
        while replayNext < replay.count, freeCount > 0, barrierSlot == nil, disconnectReason == nil {
            let record = replay[replayNext]
            let operation = restart.requestOperation(record)
            if operation == BlkifOperation.flushDiskCache.rawValue || operation == BlkifOperation.writeBarrier.rawValue,
               inFlight > 0 {
                return false
            }
            replayNext += 1
            answeringRecord = record
            accept(restart.request(record), engine: engine)
            answeringRecord = -1
        }
        return replayNext == replay.count
    }

    /// Decodes one request slot (each field read once) and starts it or answers it.
    func accept<Engine: BlockIOEngine>(_ view: SharedView, engine: Engine) {
        let request: BlkifRequest
        do {
            request = try BlkifRequest.decode(from: view, at: 0, abi: abi,
                                              maxIndirectSegments: configuration.maxIndirectSegments)
        } catch let .invalidRequest(id, operation, reason) {
            switch reason {
            case .unknownOperation, .unknownIndirectOperation, .indirectNotAdvertised:
                refuse(id: id, operation: operation, status: .notSupported, .invalid(reason))
            default:
                refuse(id: id, operation: operation, status: .error, .invalid(reason))
            }
            return
        } catch {
            disconnect(.request(error))
            return
        }
        switch request {
        case let .direct(r):
            acceptDirect(r, engine: engine)
        case let .indirect(r):
            acceptIndirect(r, engine: engine)
        case let .discard(r):
            acceptDiscard(r, engine: engine)
        }
    }

    func acceptDirect<Engine: BlockIOEngine>(_ r: BlkifDirectRequest, engine: Engine) {
        let raw = r.operation.rawValue
        let writes = r.operation != .read && !r.segments.isEmpty
        if writes, readOnly {
            refuse(id: r.id, operation: raw, status: .error, .readOnly(operation: raw))
            return
        }
        do { try r.validateSectors(diskSectors: diskSectors, sectorSize: sectorSize) } catch {
            refuse(id: r.id, operation: raw, status: .error, .invalid(error))
            return
        }
        let index = takeSlot()
        let base = index * segmentsPerRequest
        for (k, segment) in r.segments.enumerated() { segmentTable[base + k] = segment }
        slots[index] = BlkbackSlot(
            id: r.id, operation: raw, phase: .transfer, isRead: r.operation == .read,
            flushAfterWrite: r.operation == .flushDiskCache || r.operation == .writeBarrier,
            sectorNumber: r.sectorNumber, byteCount: r.segments.sectorCount * 512, segmentCount: r.segments.count)
        acquireGrants(slot: index, forRead: r.operation == .read)
        let zeroCopy = prepareZeroCopy(slot: index)
        if writes, !zeroCopy {
            if let failure = copySegments(slot: index, toFrontend: false) {
                finish(index, status: .error, failure)
                return
            }
            // The data is in our buffer now: the pages may be evicted while the write runs.
            releaseGrants(slot: index)
        }
        if r.operation == .writeBarrier {
            slots[index].phase = .waitingForDrain
            barrierSlot = index
            startBarrierIfDrained(engine: engine)
            return
        }
        start(index, engine: engine)
    }

    func acceptIndirect<Engine: BlockIOEngine>(_ r: BlkifIndirectRequest, engine: Engine) {
        statistics.indirect += 1
        let raw = r.responseOperation
        if r.operation == .write, readOnly {
            refuse(id: r.id, operation: raw, status: .error, .readOnly(operation: raw))
            return
        }
        // The segment pages are copied in once and decoded from our copy, so the frontend
        // cannot change a segment between its check and its use. With persistent grants
        // they are kept mapped like data pages (as Linux blkback does: a frontend reuses
        // them as it reuses data pages) and copied by memcpy.
        var remaining = r.segmentCount
        var copyCount = 0
        for (page, gref) in r.indirectGrefs.enumerated() {
            let count = min(remaining, BlkifIndirectPage.segmentsPerPage)
            remaining -= count
            if usesPersistentGrants {
                switch grants.acquire(gref, writable: false) {
                case let .mapped(entry):
                    SharedView.copy(from: grants.view(entry), at: 0, to: scratchView, at: page * pageSize,
                                    length: count * BlkifSegment.size)
                    grants.release(entry)
                    continue
                case .copy:
                    break
                }
            }
            copies[copyCount] = GrantCopySegment(
                source: .grant(domain: frontendDomain, ref: gref, offset: 0),
                destination: .local(buffer: scratchBuffer.id, offset: page * pageSize),
                length: UInt16(count * BlkifSegment.size))
            copyCount += 1
        }
        if let failure = runCopies(copyCount) {
            refuse(id: r.id, operation: raw, status: .error, failure)
            return
        }
        var sectors = 0
        let index = takeSlot()
        let base = index * segmentsPerRequest
        for k in 0..<r.segmentCount {
            let location = BlkifIndirectPage.location(ofSegment: k)
            let page = SharedView(base: scratchBuffer.view.baseAddress + location.page * pageSize, count: pageSize)
            do {
                let segment = try BlkifIndirectPage.decodeSegment(k % BlkifIndirectPage.segmentsPerPage, from: page)
                segmentTable[base + k] = segment
                sectors += segment.sectorCount
            } catch {
                releaseSlot(index)
                refuse(id: r.id, operation: raw, status: .error, .invalidIndirectSegment(index: k, error))
                return
            }
        }
        do {
            try BlkifRequest.validateSectorRange(start: r.sectorNumber, count: UInt64(sectors), diskSectors: diskSectors,
                                                 sectorSize: sectorSize)
        } catch {
            releaseSlot(index)
            refuse(id: r.id, operation: raw, status: .error, .invalid(error))
            return
        }
        slots[index] = BlkbackSlot(
            id: r.id, operation: raw, phase: .transfer, isRead: r.operation == .read, flushAfterWrite: false,
            sectorNumber: r.sectorNumber, byteCount: sectors * 512, segmentCount: r.segmentCount)
        acquireGrants(slot: index, forRead: r.operation == .read)
        if !prepareZeroCopy(slot: index), r.operation == .write {
            if let failure = copySegments(slot: index, toFrontend: false) {
                finish(index, status: .error, failure)
                return
            }
            releaseGrants(slot: index)
        }
        start(index, engine: engine)
    }

    func acceptDiscard<Engine: BlockIOEngine>(_ r: BlkifDiscardRequest, engine: Engine) {
        let raw = BlkifOperation.discard.rawValue
        guard discardEnabled else {
            refuse(id: r.id, operation: raw, status: .notSupported, .discardNotOffered(secure: false))
            return
        }
        if readOnly {
            refuse(id: r.id, operation: raw, status: .error, .readOnly(operation: raw))
            return
        }
        if r.secure, !store.supportsSecureDiscard {
            refuse(id: r.id, operation: raw, status: .notSupported, .discardNotOffered(secure: true))
            return
        }
        do { try r.validateSectors(diskSectors: diskSectors, sectorSize: sectorSize) } catch {
            refuse(id: r.id, operation: raw, status: .error, .invalid(error))
            return
        }
        // validateSectors proved the range lies on the disk, so the byte values fit.
        let offset = r.sectorNumber * 512
        let length = r.sectorCount * 512
        if length == 0 {
            respond(id: r.id, operation: raw, status: .okay)
            return
        }
        if r.secure {
            do {
                try store.secureDiscard(offset: offset, length: length)
                respond(id: r.id, operation: raw, status: .okay)
            } catch {
                refuse(id: r.id, operation: raw, status: .error, .secureDiscard(error))
            }
            return
        }
        let index = takeSlot()
        slots[index] = BlkbackSlot(id: r.id, operation: raw, phase: .discard, isRead: false, flushAfterWrite: false,
                                   sectorNumber: r.sectorNumber, byteCount: 0, segmentCount: 0)
        submit(index, store.discardOperation(offset: offset, length: length), engine: engine)
    }

    // MARK: Slots

    func takeSlot() -> Int {
        freeCount -= 1
        let index = Int(freeSlots[freeCount])
        slotRecords[index] = answeringRecord
        return index
    }

    func releaseSlot(_ index: Int) {
        slots[index].phase = .idle
        freeSlots[freeCount] = Int32(index)
        freeCount += 1
    }

    /// Answers the request in `index` and frees its slot.
    func finish(_ index: Int, status: BlkifStatus, _ failure: BlkbackRefusal? = nil) {
        let slot = slots[index]
        let outer = answeringRecord
        answeringRecord = slotRecords[index]
        defer { answeringRecord = outer }
        if let failure {
            refuse(id: slot.id, operation: slot.operation, status: status, failure)
        } else {
            respond(id: slot.id, operation: slot.operation, status: status)
            if status == .okay, slot.byteCount > 0 {
                statistics.countData(isRead: slot.isRead, bytes: slot.byteCount)
            }
        }
        if barrierSlot == index { barrierSlot = nil }
        releaseGrants(slot: index)
        releaseSlot(index)
    }

    /// Starts the transfer (or, without data, the flush) of the request in `index`.
    func start<Engine: BlockIOEngine>(_ index: Int, engine: Engine) {
        let slot = slots[index]
        guard slot.byteCount > 0 else {
            slots[index].phase = .flush
            submit(index, .flush(file), engine: engine)
            return
        }
        slots[index].phase = .transfer
        slots[index].transferred = 0
        submitTransfer(index, engine: engine)
    }

    /// Submits the part of slot `index`'s transfer not moved yet: all of it at first, the
    /// rest after a short completion (``advanceTransfer(_:by:)`` moved the iovecs on).
    func submitTransfer<Engine: BlockIOEngine>(_ index: Int, engine: Engine) {
        let slot = slots[index]
        let offset = slot.sectorNumber * 512 + UInt64(slot.transferred)
        if slot.vectorCount == 1 {
            // One range (a single page, or pages adjacent in our mapping): a plain read or
            // write, which spares the kernel importing an iovec array.
            // SAFETY: as for the iovecs below.
            let range = vectors[index * vectorStride]
            let bytes = UnsafeMutableRawBufferPointer(start: range.iov_base, count: range.iov_len)
            submit(index, slot.isRead ? .read(file, offset: offset, into: bytes)
                                      : .write(file, offset: offset, from: UnsafeRawBufferPointer(bytes)),
                   engine: engine)
            return
        }
        if slot.vectorCount > 0 {
            // SAFETY: the iovecs name pages whose cache entries this slot holds a use of
            // until finish(), so no eviction unmaps them while the engine uses them.
            let base = index * vectorStride
            let list = UnsafeBufferPointer(rebasing: vectors[base..<(base + slot.vectorCount)])
            submit(index, slot.isRead ? .readVector(file, offset: offset, vectors: list)
                                      : .writeVector(file, offset: offset, vectors: list),
                   engine: engine)
            return
        }
        // SAFETY: the bytes lie in this slot's copy buffer, which stays registered until
        // close(), and close() refuses while the slot is in flight.
        let bytes = UnsafeMutableRawBufferPointer(start: slotBases[index] + slot.transferred,
                                                  count: slot.byteCount - slot.transferred)
        if slot.isRead {
            submit(index, .read(file, offset: offset, into: bytes), engine: engine)
        } else {
            submit(index, .write(file, offset: offset, from: UnsafeRawBufferPointer(bytes)),
                   engine: engine)
        }
    }

    /// Counts `moved` more bytes of slot `index`'s transfer as done and moves its iovecs
    /// past them (they are the backend's own array, not shared memory). `moved` is less
    /// than what the slot had left, so at least one iovec remains.
    func advanceTransfer(_ index: Int, by moved: Int) {
        slots[index].transferred += moved
        let count = slots[index].vectorCount
        guard count > 0 else { return }
        let base = index * vectorStride
        var left = moved
        var skipped = 0
        while skipped < count, left >= vectors[base + skipped].iov_len {
            left -= vectors[base + skipped].iov_len
            skipped += 1
        }
        for k in skipped ..< count { vectors[base + k - skipped] = vectors[base + k] }
        vectors[base].iov_base = vectors[base].iov_base.map { $0 + left }
        vectors[base].iov_len -= left
        slots[index].vectorCount = count - skipped
    }

    func submit<Engine: BlockIOEngine>(_ index: Int, _ operation: BlockIOOperation, engine: Engine) {
        switch engine.enqueue(BlockRequest(operation, userData: userDataBase | UInt64(index),
                                           alwaysAsync: transfersAlwaysAsync)) {
        case .accepted: return
        case .queueFull: finish(index, status: .error, .engineFull)
        }
    }

    /// Starts the waiting barrier once nothing else is in flight.
    func startBarrierIfDrained<Engine: BlockIOEngine>(engine: Engine) {
        guard let index = barrierSlot, slots[index].phase == .waitingForDrain, inFlight == 1 else { return }
        start(index, engine: engine)
    }

    // MARK: Completions

    /// Handles the engine's completion of slot `index` with `result` (bytes or -errno).
    public func complete<Engine: BlockIOEngine>(slot index: Int, result: Int32, engine: Engine) {
        guard index >= 0, index < slots.count, slots[index].phase != .idle else {
            logger.error("blkback completion for an idle slot", metadata: ["queue": "\(name)", "slot": "\(index)"])
            return
        }
        let slot = slots[index]
        switch slot.phase {
        case .transfer:
            let remaining = slot.byteCount - slot.transferred
            if result > 0, Int(result) < remaining {
                // A short transfer (a file system that took what fitted): the rest goes again,
                // so it completes or fails with the errno that says why.
                advanceTransfer(index, by: Int(result))
                submitTransfer(index, engine: engine)
                break
            }
            guard result == Int32(clamping: remaining) else {
                finish(index, status: .error, .completion(slot.isRead ? "read" : "write", result: result, expected: remaining))
                break
            }
            if slot.isRead, slot.vectorCount > 0 {
                finish(index, status: .okay)
            } else if slot.isRead {
                if let failure = copySegments(slot: index, toFrontend: true) {
                    finish(index, status: .error, failure)
                } else {
                    finish(index, status: .okay)
                }
            } else if slot.flushAfterWrite {
                slots[index].phase = .flush
                submit(index, .flush(file), engine: engine)
            } else {
                finish(index, status: .okay)
            }
        case .flush:
            if result == 0 { finish(index, status: .okay) } else {
                finish(index, status: .error, .completion("fdatasync", result: result, expected: 0))
            }
        case .discard:
            if result == 0 {
                finish(index, status: .okay)
            } else if Errno(code: -result) == .EOPNOTSUPP {
                finish(index, status: .notSupported, .storeCannotDiscard)
            } else {
                finish(index, status: .error, .completion("discard", result: result, expected: 0))
            }
        case .idle, .waitingForDrain:
            logger.error("blkback completion for a slot not in I/O", metadata: ["queue": "\(name)", "slot": "\(index)"])
        }
        startBarrierIfDrained(engine: engine)
    }

    // MARK: Persistent grants

    /// With persistent grants on, takes a use of every segment's page for slot `index`
    /// (mapping on a miss; writable for a read request, where the backend writes the
    /// page). A segment whose page no entry can take, or that cannot be mapped, is
    /// grant-copied instead: a revoked or invalid gref then fails its copy, and the
    /// request gets BLKIF_RSP_ERROR.
    func acquireGrants(slot index: Int, forRead: Bool) {
        guard usesPersistentGrants else { return }
        let base = index * segmentsPerRequest
        for k in 0..<slots[index].segmentCount {
            switch grants.acquire(segmentTable[base + k].gref, writable: forRead) {
            case let .mapped(entry): segmentEntries[base + k] = entry
            case .copy: segmentEntries[base + k] = -1
            }
        }
    }

    /// Gives back the pages slot `index` holds (each once: the entries are cleared).
    func releaseGrants(slot index: Int) {
        guard usesPersistentGrants else { return }
        let base = index * segmentsPerRequest
        for k in 0..<slots[index].segmentCount where segmentEntries[base + k] >= 0 {
            grants.release(segmentEntries[base + k])
            segmentEntries[base + k] = -1
        }
    }

    /// Lays out slot `index`'s transfer as iovecs on the mapped pages when zero-copy is
    /// on and every segment's page is held mapped (acquireGrants took writable pages for
    /// a read), merging ranges that are adjacent in our address space. A request with a
    /// grant-copied segment, or needing more than ``maxVectors`` iovecs, goes through the
    /// copy buffer whole. Returns whether the transfer is zero-copy; the slot then keeps
    /// its pages until finish(), for writes too.
    @discardableResult
    func prepareZeroCopy(slot index: Int) -> Bool {
        slots[index].vectorCount = 0
        let segmentCount = slots[index].segmentCount
        guard usesZeroCopy, segmentCount > 0 else { return false }
        let base = index * segmentsPerRequest
        let first = index * vectorStride
        var count = 0
        var end: UnsafeMutableRawPointer?
        for k in 0..<segmentCount {
            let entry = segmentEntries[base + k]
            guard entry >= 0 else {
                copiedTransfers += 1
                return false
            }
            let segment = segmentTable[base + k]
            // Blkif checked first <= last <= 7: the range lies within the page.
            let start = grants.view(entry).baseAddress + Int(segment.firstSector) * 512
            let length = segment.sectorCount * 512
            if count > 0, start == end {
                vectors[first + count - 1].iov_len += length
            } else {
                guard count < vectorStride else {
                    copiedTransfers += 1
                    return false
                }
                vectors[first + count] = iovec(iov_base: start, iov_len: length)
                count += 1
            }
            end = start + length
        }
        slots[index].vectorCount = count
        zeroCopyTransfers += 1
        return true
    }

    // MARK: Data movement

    /// Moves the data of slot `index` between the frontend's segments and the slot's copy
    /// buffer: by memcpy for segments whose page is persistently mapped, by grant copy for
    /// the rest; returns why it failed, or nil.
    func copySegments(slot index: Int, toFrontend: Bool) -> BlkbackRefusal? {
        let slot = slots[index]
        var count = 0
        var local = 0
        let buffer = slotBufferIDs[index]
        let base = index * segmentsPerRequest
        for k in 0..<slot.segmentCount {
            let segment = segmentTable[base + k]
            var grantOffset = Int(segment.firstSector) * 512
            var left = segment.sectorCount * 512
            let entry = segmentEntries[base + k]
            if entry >= 0 {
                // acquireGrants gave a read request writable pages only; Blkif checked
                // first <= last <= 7, so the bytes lie within the page.
                if toFrontend {
                    SharedView.copy(from: slotViews[index], at: local, to: grants.view(entry), at: grantOffset, length: left)
                } else {
                    SharedView.copy(from: grants.view(entry), at: grantOffset, to: slotViews[index], at: local, length: left)
                }
                local += left
                continue
            }
            // Split where the local side crosses a page: a copy end may not cross a page.
            while left > 0 {
                let piece = min(left, pageSize - local % pageSize)
                let grant = GrantCopyEndpoint.grant(domain: frontendDomain, ref: segment.gref, offset: UInt16(grantOffset))
                let mine = GrantCopyEndpoint.local(buffer: buffer, offset: local)
                copies[count] = toFrontend
                    ? GrantCopySegment(source: mine, destination: grant, length: UInt16(piece))
                    : GrantCopySegment(source: grant, destination: mine, length: UInt16(piece))
                count += 1
                local += piece
                grantOffset += piece
                left -= piece
            }
        }
        return runCopies(count)
    }

    /// Runs the first `count` prepared copies; returns why one failed, or nil.
    func runCopies(_ count: Int) -> BlkbackRefusal? {
        guard count > 0 else { return nil }
        let batch = UnsafeMutableBufferPointer(rebasing: copies[0..<count])
        do { try mapper.copy(batch) } catch { return .grantCopy(error) }
        for segment in batch where segment.status != .okay {
            let ref: GrantRef
            switch (segment.source, segment.destination) {
            case let (.grant(_, r, _), _), let (_, .grant(_, r, _)): ref = r
            default: ref = 0
            }
            return .grantCopyStatus(ref: ref, segment.status)
        }
        return nil
    }
}
