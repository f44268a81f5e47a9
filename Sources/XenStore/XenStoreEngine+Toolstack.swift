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

extension XenStoreEngine {
    /// Dom0's home as Xen's dom0 set-up (xen-init-dom0) writes it over a privileged
    /// connection: `/local/domain/0/name` "Domain-0" and `/local/domain/0/domid` "0", the
    /// home and both nodes owned by dom0 with no access for other domains, so tools that
    /// look for dom0 find it. Every xenstored of ours (the local hypervisor's, the
    /// in-process double's) starts with it.
    public static let dom0HomeNodes: [(path: String, value: String)] = [
        ("/local/domain/0/name", "Domain-0"),
        ("/local/domain/0/domid", "0"),
    ]

    /// Writes ``dom0HomeNodes`` as the toolstack; returns the nodes refused, with why.
    public func writeDom0Home() -> [String] {
        Self.dom0HomeNodes.compactMap { node in
            let reply = performAsToolstack(.write, payload: Array(node.path.utf8) + [0] + Array(node.value.utf8))
            return reply.type == .write ? nil : "\(node.path): \(String(decoding: reply.payload.prefix { $0 != 0 }, as: UTF8.self))"
        }
    }
}
