import Blkif
import SharedMemory

/// A fuzz target for the blkif slot decoders, per ABI (native, x86_32, x86_64): the bytes
/// are a ring slot as a frontend wrote it, then the start of the indirect pages it points at. Whatever
/// the slot holds, decoding must not trap; a request or response that decodes must encode
/// back to bytes that decode to the same value; an indirect request's segments must
/// decode from its pages within its count; and the native ABI must read a slot exactly as
/// the named ABI of this host's layout does.
public enum BlkifFuzz {
    /// A slot, its re-encoding, and eight indirect pages, allocated once.
    nonisolated(unsafe) static let memory: MemoryRegion = {
        do { return try MemoryRegion.anonymous(pages: 2 + BlkifIndirectGrefs.capacity) } catch {
            fatalError("blkif fuzz memory: \(error)")
        }
    }()

    /// Runs one input. Violated invariants trap, which the fuzzer reports as a crash.
    public static func run(_ input: UnsafeRawBufferPointer) {
        var script = ByteScript(input)
        let choice = script.byte()
        let abi = [BlkifABI.native, .x86_32, .x86_64][Int(choice % 3)]
        let maxIndirect = [0, 8, 32, 256, BlkifIndirectPage.maxSegments][Int(choice / 3 % 5)]
        let view = memory.view
        view.fill(0, at: 0, length: view.count)
        guard let slot = try? view.slice(offset: 0, length: abi.slotSize),
              let again = try? view.slice(offset: pageSize, length: pageSize),
              let pages = try? view.slice(offset: 2 * pageSize, length: BlkifIndirectGrefs.capacity * pageSize)
        else { fatalError("slices of the fuzz memory must fit") }
        for offset in 0..<abi.slotSize where !script.isEmpty { slot.store(script.byte(), at: offset) }
        // The rest of the input is the start of the indirect pages (zero past its end).
        let rest = min(input.count - script.position, pages.count)
        if rest > 0 {
            pages.copyBytes(from: UnsafeRawBufferPointer(rebasing: input[script.position..<(script.position + rest)]), to: 0)
        }

        decodeRequest(slot, again: again, pages: pages, abi: abi, maxIndirect: maxIndirect)
        decodeResponse(slot, again: again, abi: abi)
        if abi == .native {
            let named: BlkifABI = BlkifABI.native.protocolName == "x86_32-abi" ? .x86_32 : .x86_64
            let a = Result { () throws(BlkifError) in try BlkifRequest.decode(from: slot, at: 0, abi: .native, maxIndirectSegments: maxIndirect) }
            let b = Result { () throws(BlkifError) in try BlkifRequest.decode(from: slot, at: 0, abi: named, maxIndirectSegments: maxIndirect) }
            precondition(a == b, "native and \(named.protocolName) read the slot differently: \(a) vs \(b)")
        }
        // A slot anywhere past the view's end is refused, never read.
        precondition((try? BlkifRequest.decode(from: slot, at: Int(script.byte()) + 1, abi: abi)) == nil,
                     "decoded a slot past the view")
    }

    static func decodeRequest(_ slot: SharedView, again: SharedView, pages: SharedView, abi: BlkifABI, maxIndirect: Int) {
        let request: BlkifRequest
        do { request = try BlkifRequest.decode(from: slot, at: 0, abi: abi, maxIndirectSegments: maxIndirect) } catch {
            _ = "\(error)"  // every refusal must describe itself
            return
        }
        again.fill(0, at: 0, length: again.count)
        request.encode(into: again, at: 0, abi: abi)
        let decoded = try? BlkifRequest.decode(from: again, at: 0, abi: abi, maxIndirectSegments: maxIndirect)
        precondition(decoded == request, "\(request) encodes to a slot that decodes as \(String(describing: decoded))")
        switch request {
        case let .direct(r):
            precondition(r.segments.count <= BlkifSegments.capacity, "\(r.segments.count) direct segments")
        case .discard:
            break
        case let .indirect(r):
            precondition(r.segmentCount <= maxIndirect, "\(r.segmentCount) indirect segments past the \(maxIndirect) offered")
            precondition(r.indirectGrefs.count == BlkifIndirectPage.pageCount(forSegments: r.segmentCount),
                         "\(r.indirectGrefs.count) indirect pages for \(r.segmentCount) segments")
            for index in 0..<r.segmentCount {
                let (page, _) = BlkifIndirectPage.location(ofSegment: index)
                precondition(page < r.indirectGrefs.count, "segment \(index) on page \(page) of \(r.indirectGrefs.count)")
                guard let view = try? pages.slice(offset: page * pageSize, length: pageSize) else { fatalError("page slice") }
                if let segment = try? BlkifIndirectPage.decodeSegment(index, from: view) {
                    precondition(segment.firstSector <= segment.lastSector && segment.lastSector < 8,
                                 "segment \(index) accepted with sectors \(segment.firstSector)...\(segment.lastSector)")
                }
            }
        }
    }

    static func decodeResponse(_ slot: SharedView, again: SharedView, abi: BlkifABI) {
        guard let response = try? BlkifResponse.decode(from: slot, at: 0, abi: abi) else { return }
        again.fill(0, at: 0, length: again.count)
        response.encode(into: again, at: 0, abi: abi)
        let decoded = try? BlkifResponse.decode(from: again, at: 0, abi: abi)
        precondition(decoded == response, "\(response) does not survive encoding")
    }
}
