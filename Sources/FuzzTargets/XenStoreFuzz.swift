import XenStore

/// The input is a byte stream sent by a connection whose identity is chosen by the first
/// byte (the toolstack, or domain 1..4). It is fed in pieces whose sizes come from the
/// second byte, so framing across reads is exercised too. After every piece the engine's
/// invariants must hold, every reply must be a well-formed message, and a second, honest
/// connection must still be served.
public enum XenStoreFuzz {
    /// Runs one input. Violated invariants trap, which the fuzzer reports as a crash.
    public static func run(_ input: UnsafeRawBufferPointer) {
    let bytes = Array(input)
    guard bytes.count >= 2 else { return }
    var quotas = XenStoreQuotas()
    quotas.nodesPerDomain = 50
    quotas.outstandingRequests = 8
    let engine = XenStoreEngine(quotas: quotas)
    let identity: XenStoreIdentity = bytes[0] % 5 == 0 ? .tool : .domain(UInt16(bytes[0] % 5))
    let fuzzed = engine.openConnection(identity: identity)
    let honest = engine.openConnection(identity: .tool)
    let piece = Int(bytes[1] % 64) + 1
    var offset = 2
    var open = true
    while offset < bytes.count, open {
        let end = min(bytes.count, offset + piece)
        bytes[offset ..< end].withUnsafeBytes { engine.receive(fuzzed, $0) }
        offset = end
        while open {
            switch engine.process(fuzzed, limit: 16) {
            case .idle: break
            case .more:
                for message in drain(engine, fuzzed) where message.type == nil {
                    fatalError("reply with unknown type \(message.rawType)")
                }
                continue
            case .close:
                engine.closeConnection(fuzzed)
                open = false
            }
            break
        }
        if let problem = engine.checkInvariants() { fatalError("invariant broken: \(problem)") }
    }
    // The honest connection is still served.
    let probe = XenStoreMessage(type: .write, requestID: 9, payload: Array("/fuzz/probe\0ok".utf8))
    engine.receive(honest, probe.encoded())
    _ = engine.process(honest, limit: 1)
    let answered = drain(engine, honest).contains { $0.requestID == 9 && $0.type == .write }
    if !answered { fatalError("honest connection not served") }
    }
}

/// Every complete message queued for a connection. Output the engine produced must
/// always frame cleanly.
private func drain(_ engine: XenStoreEngine, _ id: XenStoreConnectionID) -> [XenStoreMessage] {
    var framer = XenStoreMessageFramer()
    while let out = engine.popOutput(id) { framer.append(out) }
    var messages: [XenStoreMessage] = []
    while let message = try? framer.next() { messages.append(message) }
    if framer.bufferedCount != 0 { fatalError("engine output does not frame") }
    return messages
}
