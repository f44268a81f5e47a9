extension XenStoreEngine {
    /// Runs one request as the toolstack (privileged) and returns the reply's type and
    /// payload: how an embedding hypervisor edits the store without a socket.
    @discardableResult
    public func performAsToolstack(_ type: XSDSockmsgType, payload: [UInt8]) -> (type: XSDSockmsgType?, payload: [UInt8]) {
        let id = openConnection(identity: .tool)
        defer { closeConnection(id) }
        receive(id, XenStoreMessage(type: type, requestID: 1, payload: payload).encoded())
        _ = process(id, limit: 1)
        var framer = XenStoreMessageFramer()
        while let chunk = popOutput(id) {
            framer.append(chunk)
        }
        guard let reply = try? framer.next() else { return (nil, []) }
        return (reply.type, reply.payload)
    }

    /// Removes `path` and all below it, firing watches as XS_RM does.
    public func removeTree(_ path: String) {
        performAsToolstack(.rm, payload: Array(path.utf8) + [0])
    }
}
