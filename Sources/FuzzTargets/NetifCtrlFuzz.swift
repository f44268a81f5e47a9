import Netif

/// A fuzz target for the control-ring state machine (``NetifHashConfiguration``): the
/// bytes are a vif's queue count and a stream of control requests, each with the page
/// its grant would show (or a failed copy). Every response must echo the request, carry
/// a defined status and data only on success; a refused or unknown request must change
/// nothing; the state must stay inside the backend's limits (key ≤ 40 octets, table ≤
/// 128 entries, every entry a real queue), and the queue picked for any hash must exist.
/// A frame from the input is hashed with the final state, inside its bounds.
public enum NetifCtrlFuzz {
    public static func run(_ input: UnsafeRawBufferPointer) {
        var script = ByteScript(input)
        let queueCount = Int(script.byte() % 8) + 1
        var configuration = NetifHashConfiguration(queueCount: queueCount)
        var requests = 0
        while !script.isEmpty, requests < 64 {
            requests += 1
            let control = script.byte()
            // Mostly the defined types, so the fuzzer reaches their checks.
            let type = control & 0x80 == 0 ? UInt16(control % 12) : UInt16(script.byte()) << 8 | UInt16(script.byte())
            let data = (small(&script), small(&script), small(&script))
            let request = NetifCtrlRequest(id: UInt16(requests), type: type, data: data)
            let before = configuration
            var reads = 0
            let response = configuration.answer(request) { _, length in
                reads += 1
                precondition(length > 0 && length <= NetifHashConfiguration.pageSize, "read of \(length) bytes")
                guard script.byte() & 1 == 0 else { return nil }  // the copy failed
                return (0..<length).map { _ in script.byte() % UInt8(min(queueCount + 1, 255)) }
            }
            precondition(reads <= 1, "a request read its grant \(reads) times")
            precondition(response.id == request.id && response.type == request.type, "response does not echo the request")
            precondition(response.status == .success || response.data == 0, "data on a failed response")
            if response.status != .success || request.kind == nil || request.kind == .invalid {
                precondition(configuration == before, "a refused request changed the state")
            }
            if request.kind == nil || request.kind == .invalid {
                precondition(response.status == .notSupported, "an unknown type answered \(response.status)")
            }
            precondition(configuration.key.count <= NetifHashConfiguration.maxKeySize, "key of \(configuration.key.count)")
            precondition(configuration.mapping.count <= Int(NetifHashConfiguration.maxMappingSize), "table too large")
            precondition(configuration.mapping.allSatisfy { $0 < queueCount }, "table names a queue that does not exist")
            let queue = configuration.queue(forHash: script.word())
            precondition(queue >= 0 && queue < queueCount, "hash mapped to queue \(queue) of \(queueCount)")
        }
        let frame = Array(input[min(script.position, input.count)...])
        frame.withUnsafeBytes { bytes in
            guard let found = NetifHashInput.find(in: bytes, types: configuration.types) else { return }
            precondition(found.addresses.lowerBound >= 0 && found.addresses.upperBound <= bytes.count, "addresses outside")
            if let ports = found.ports { precondition(ports.upperBound <= bytes.count, "ports outside the frame") }
            precondition(configuration.types.contains(found.type.set), "a type not enabled")
            let serial = found.toeplitz(of: bytes, with: NetifToeplitz(key: configuration.key))
            precondition(found.toeplitz(of: bytes, with: NetifToeplitzTable(key: configuration.key)) == serial,
                         "the table and the bit-serial hash differ")
        }
    }

    /// A request word: often small (sizes, offsets, queue numbers near the limits), else any.
    static func small(_ script: inout ByteScript) -> UInt32 {
        let pick = script.byte()
        switch pick % 4 {
        case 0: return UInt32(script.byte())
        case 1: return UInt32(pick >> 2) + 120
        case 2: return UInt32.max - UInt32(pick >> 2)
        default: return script.word()
        }
    }
}
