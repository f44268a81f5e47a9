extension XenStoreEngine {
    typealias Reply = Result<[UInt8], XSDErrorCode>

    static let ok: [UInt8] = Array("OK".utf8) + [0]

    /// Handles one framed message from `c`: exactly one reply (or error) is queued, plus
    /// any watch events it causes.
    func handle(_ c: Connection, _ message: XenStoreMessage) {
        let reply = respond(c, message)
        var out = XenStoreMessage(rawType: message.rawType, requestID: message.requestID,
                                  transactionID: message.transactionID, payload: [])
        switch reply {
        case let .success(payload) where payload.count <= XenStoreLimits.payloadMax:
            out.payload = payload
        case .success:
            out.rawType = XSDSockmsgType.error.rawValue
            out.payload = XSDErrorCode.e2big.payload
        case let .failure(code):
            out.rawType = XSDSockmsgType.error.rawValue
            out.payload = code.payload
        }
        enqueue(c, out, isReply: true)
        // C xenstored sends the initial watch event after the acknowledgement.
        if case .success = reply, message.type == .watch,
           case let .watch(path, token)? = try? XenStoreRequest.decode(type: message.rawType, payload: message.payload) {
            sendEvent(c, path: path, token: token)
        }
    }

    private func respond(_ c: Connection, _ message: XenStoreMessage) -> Reply {
        // The order of checks is C xenstored's process_message: type, privilege, transaction.
        guard let type = message.type, type != .watchEvent, type != .error else { return .failure(.enosys) }
        switch type {
        case .control, .introduce, .release, .isDomainIntroduced, .resume, .setTarget:
            guard c.identity.privileged else { return .failure(.eacces) }
        default: break
        }
        var tx: Transaction?
        if type != .watch, type != .unwatch, message.transactionID != 0 {
            guard let found = c.transactions[message.transactionID] else { return .failure(.enoent) }
            tx = found
        }
        if let tx, type != .transactionEnd, !c.identity.privileged, tx.accessed.count >= quotas.transactionNodes {
            return .failure(.enospc)
        }
        let request: XenStoreRequest
        do {
            request = try XenStoreRequest.decode(type: message.rawType, payload: message.payload)
        } catch {
            return .failure(error.replyCode)
        }
        return perform(c, request, tx: tx, transactionID: message.transactionID)
    }

    private func resolve(_ c: Connection, _ path: [UInt8]) -> Result<String, XSDErrorCode> {
        do {
            return .success(try XenStorePath.resolve(path[...], home: c.identity.home).path)
        } catch {
            return .failure(.einval)
        }
    }

    private func perform(_ c: Connection, _ request: XenStoreRequest, tx: Transaction?, transactionID: UInt32) -> Reply {
        switch request {
        case let .read(path):
            return resolve(c, path).flatMap { getNode(c, $0, .read, tx) }.map { $0.value }
        case let .directory(path):
            return resolve(c, path).flatMap { getNode(c, $0, .read, tx) }.map { XenStoreStrings.join($0.children) }
        case let .directoryPart(path, offset):
            return resolve(c, path).flatMap { getNode(c, $0, .read, tx) }.map { directoryPart($0, offset: Int(offset)) }
        case let .getPerms(path):
            if path.first == UInt8(ascii: "@") {
                guard let perms = specialPermissions[String(decoding: path, as: UTF8.self)] else { return .failure(.einval) }
                return .success(XenStorePermission.encodeList(perms))
            }
            return resolve(c, path).flatMap { getNode(c, $0, .read, tx) }.map { XenStorePermission.encodeList($0.permissions) }
        case let .write(path, value):
            return resolve(c, path).flatMap { write(c, $0, value, tx) }
        case let .mkdir(path):
            return resolve(c, path).flatMap { mkdir(c, $0, tx) }
        case let .rm(path):
            return resolve(c, path).flatMap { rm(c, $0, tx) }
        case let .setPerms(path, permissions):
            return setPerms(c, path, permissions, tx)
        case let .watch(path, token):
            return watch(c, path, token)
        case let .unwatch(path, token):
            return watchPath(c, path).flatMap { resolved in
                guard let i = c.watches.firstIndex(where: { $0.path == resolved.path && $0.token == token }) else {
                    return .failure(.enoent)
                }
                c.watches.remove(at: i)
                return .success(Self.ok)
            }
        case .transactionStart:
            if tx != nil { return .failure(.ebusy) }
            if !c.identity.privileged, c.transactions.count >= quotas.transactionsPerConnection { return .failure(.enospc) }
            var id = c.nextTransactionID
            while id == 0 || c.transactions[id] != nil { id &+= 1 }
            c.nextTransactionID = id &+ 1
            c.transactions[id] = Transaction()
            return .success(Array(String(id).utf8) + [0])
        case let .transactionEnd(commit):
            guard let tx else { return .failure(.enoent) }
            c.transactions[transactionID] = nil
            if commit { return self.commit(tx) }
            return .success(Self.ok)
        case let .introduce(domid, mfn, port):
            introduceDomain(domid, mfn: mfn, port: port)
            return .success(Self.ok)
        case let .release(domid):
            return releaseDomain(domid) ? .success(Self.ok) : .failure(.enoent)
        case let .getDomainPath(domid):
            return .success(Array(XenStorePath.domainPath(domid).utf8) + [0])
        case let .isDomainIntroduced(domid):
            return .success([isIntroduced(domid) ? UInt8(ascii: "T") : UInt8(ascii: "F"), 0])
        case let .resume(domid):
            return isIntroduced(domid) ? .success(Self.ok) : .failure(.enoent)
        case .setTarget, .control:
            return .failure(.enosys)
        case .resetWatches:
            c.watches.removeAll()
            c.transactions.removeAll()
            return .success(Self.ok)
        }
    }

    // MARK: Store access through an optional transaction

    func get(_ path: String, _ tx: Transaction?) -> Node? {
        guard let tx else { return nodes[path] }
        if let changed = tx.overlay[path] { return changed }
        let node = nodes[path]
        if tx.accessed[path] == nil { tx.accessed[path] = node?.generation ?? 0 }
        return node
    }

    func put(_ path: String, _ node: Node?, _ tx: Transaction?) {
        let old = get(path, tx)
        if let tx {
            if let old { tx.entryDelta[old.owner, default: 0] -= 1 }
            if let node { tx.entryDelta[node.owner, default: 0] += 1 }
            tx.overlay[path] = .some(node)
            return
        }
        if let old { entries[old.owner, default: 0] -= 1 }
        if var node {
            entries[node.owner, default: 0] += 1
            generationCounter += 1
            node.generation = generationCounter
            nodes[path] = node
        } else {
            nodes[path] = nil
        }
    }

    private func ownedCount(_ domid: UInt16, _ tx: Transaction?) -> Int {
        (entries[domid] ?? 0) + (tx?.entryDelta[domid] ?? 0)
    }

    func rights(_ c: Connection, _ permissions: [XenStorePermission]) -> Rights {
        if c.identity.privileged || permissions[0].domid == c.identity.domid { return .all }
        let access = permissions.dropFirst().first(where: { $0.domid == c.identity.domid })?.access ?? permissions[0].access
        var r: Rights = []
        if access.canRead { r.insert(.read) }
        if access.canWrite { r.insert(.write) }
        return r
    }

    /// A node the connection has `need` rights on. A missing node reports ENOENT only if
    /// the nearest existing ancestor grants some of `need`, else EACCES, so a domain cannot
    /// probe for nodes it may not see (C xenstored's errno_from_parents).
    private func getNode(_ c: Connection, _ path: String, _ need: Rights, _ tx: Transaction?) -> Result<Node, XSDErrorCode> {
        let error: XSDErrorCode
        if let node = get(path, tx) {
            if rights(c, node.permissions).isSuperset(of: need) { return .success(node) }
            error = .eacces
        } else {
            error = .enoent
        }
        var ancestor = path
        while ancestor != "/" {
            ancestor = XenStorePath.parent(of: ancestor)
            if let node = get(ancestor, tx) {
                return rights(c, node.permissions).isDisjoint(with: need) ? .failure(.eacces) : .failure(error)
            }
        }
        return .failure(.eacces)
    }

    private func tooBig(_ c: Connection, _ node: Node) -> Bool {
        !c.identity.privileged && node.recordSize >= quotas.entrySize
    }

    // MARK: Operations

    private func directoryPart(_ node: Node, offset: Int) -> [UInt8] {
        var out = Array(String(node.generation).utf8) + [0]
        let list = XenStoreStrings.join(node.children)
        guard offset < list.count else { return out + [0] }
        // Whole child names that fit, then an empty string if the list ends here.
        let room = XenStoreLimits.payloadMax - out.count - 1
        var end = offset
        while end < list.count {
            guard let nul = list[end...].firstIndex(of: 0) else { break }
            if nul + 1 - offset > room { break }
            end = nul + 1
        }
        out += list[offset ..< end]
        if end == list.count { out.append(0) }
        return out
    }

    private func write(_ c: Connection, _ path: String, _ value: [UInt8], _ tx: Transaction?) -> Reply {
        switch getNode(c, path, .write, tx) {
        case var .success(node):
            node.value = value
            if tooBig(c, node) { return .failure(.enospc) }
            put(path, node, tx)
            fire(path: path, permissions: node.permissions, oldPermissions: nil, exact: false, tx)
            return .success(Self.ok)
        case .failure(.enoent):
            return create(c, path, value, tx).map { node in
                fire(path: path, permissions: node.permissions, oldPermissions: nil, exact: false, tx)
                return Self.ok
            }
        case let .failure(error):
            return .failure(error)
        }
    }

    private func mkdir(_ c: Connection, _ path: String, _ tx: Transaction?) -> Reply {
        switch getNode(c, path, .write, tx) {
        case .success:
            return .success(Self.ok)
        case .failure(.enoent):
            return create(c, path, [], tx).map { node in
                fire(path: path, permissions: node.permissions, oldPermissions: nil, exact: false, tx)
                return Self.ok
            }
        case let .failure(error):
            return .failure(error)
        }
    }

    /// Creates `path` and its missing parents, each inheriting its parent's permissions
    /// (owned by the creator if unprivileged). All or nothing: quotas are checked first.
    private func create(_ c: Connection, _ path: String, _ value: [UInt8], _ tx: Transaction?) -> Result<Node, XSDErrorCode> {
        var missing = [path]
        var existing = XenStorePath.parent(of: path)
        var parentNode = get(existing, tx)
        while parentNode == nil {
            missing.append(existing)
            existing = XenStorePath.parent(of: existing)
            parentNode = get(existing, tx)
        }
        guard var parent = parentNode else { return .failure(.eio) }
        if !c.identity.privileged, ownedCount(c.identity.domid, tx) + missing.count > quotas.nodesPerDomain {
            return .failure(.enospc)
        }
        var created: [(String, Node)] = []
        var inherited = parent.permissions
        if !c.identity.privileged { inherited[0].domid = c.identity.domid }
        let top = missing[missing.count - 1]
        let topName = XenStorePath.basename(of: top)
        parent.children.append(topName)
        parent.childBytes += topName.utf8.count + 1
        if tooBig(c, parent) { return .failure(.enospc) }
        for (i, name) in missing.enumerated().reversed() {
            var node = Node(value: i == 0 ? value : [], permissions: inherited)
            if i > 0 {
                let child = XenStorePath.basename(of: missing[i - 1])
                node.children = [child]
                node.childBytes = child.utf8.count + 1
            }
            if tooBig(c, node) { return .failure(.enospc) }
            created.append((name, node))
        }
        put(existing, parent, tx)
        for (name, node) in created { put(name, node, tx) }
        return .success(created[created.count - 1].1)
    }

    private func rm(_ c: Connection, _ path: String, _ tx: Transaction?) -> Reply {
        switch getNode(c, path, .write, tx) {
        case let .success(node):
            if path == "/" { return .failure(.einval) }
            let parentPath = XenStorePath.parent(of: path)
            guard var parent = get(parentPath, tx) else { return .failure(.einval) }
            var subtree: [(String, Node)] = []
            collect(path, node, tx, into: &subtree)
            fire(path: path, permissions: node.permissions, oldPermissions: nil, exact: false, tx)
            for (p, n) in subtree.dropFirst() {
                fire(path: p, permissions: n.permissions, oldPermissions: nil, exact: true, tx)
            }
            for (p, _) in subtree.reversed() { put(p, nil, tx) }
            let name = XenStorePath.basename(of: path)
            if let i = parent.children.firstIndex(of: name) {
                parent.children.remove(at: i)
                parent.childBytes -= name.utf8.count + 1
            }
            put(parentPath, parent, tx)
            return .success(Self.ok)
        case .failure(.enoent):
            // Removing an absent node is fine if its parent exists.
            return get(XenStorePath.parent(of: path), tx) != nil ? .success(Self.ok) : .failure(.enoent)
        case let .failure(error):
            return .failure(error)
        }
    }

    private func collect(_ path: String, _ node: Node, _ tx: Transaction?, into out: inout [(String, Node)]) {
        out.append((path, node))
        for child in node.children {
            let childPath = XenStorePath.join(path, child)
            if let childNode = get(childPath, tx) { collect(childPath, childNode, tx, into: &out) }
        }
    }

    private func setPerms(_ c: Connection, _ path: [UInt8], _ permissions: [XenStorePermission], _ tx: Transaction?) -> Reply {
        if !c.identity.privileged, permissions.count > quotas.permissionsPerNode { return .failure(.enospc) }
        if path.first == UInt8(ascii: "@") {
            let name = String(decoding: path, as: UTF8.self)
            guard let old = specialPermissions[name] else { return .failure(.einval) }
            guard rights(c, old).isSuperset(of: [.write, .owner]) else { return .failure(.eacces) }
            specialPermissions[name] = permissions
            return .success(Self.ok)
        }
        return resolve(c, path).flatMap { resolved in
            getNode(c, resolved, [.write, .owner], tx).flatMap { node in
                if !c.identity.privileged, permissions[0].domid != node.owner { return .failure(.eperm) }
                var changed = node
                changed.permissions = permissions
                if tooBig(c, changed) { return .failure(.enospc) }
                put(resolved, changed, tx)
                fire(path: resolved, permissions: permissions, oldPermissions: node.permissions, exact: false, tx)
                return .success(Self.ok)
            }
        }
    }

    private func watchPath(_ c: Connection, _ path: [UInt8]) -> Result<(path: String, relative: Bool), XSDErrorCode> {
        if path.first == UInt8(ascii: "@") {
            guard path.count <= XenStoreLimits.relativePathMax, path.allSatisfy(XenStorePath.isValidCharacter) else {
                return .failure(.einval)
            }
            return .success((String(decoding: path, as: UTF8.self), false))
        }
        do {
            return .success(try XenStorePath.resolve(path[...], home: c.identity.home))
        } catch {
            return .failure(.einval)
        }
    }

    private func watch(_ c: Connection, _ path: [UInt8], _ token: [UInt8]) -> Reply {
        watchPath(c, path).flatMap { resolved in
            if c.watches.contains(where: { $0.path == resolved.path && $0.token == token }) { return .failure(.eexist) }
            if !c.identity.privileged {
                let held = connections.values.reduce(0) { sum, other in
                    other.identity.domid == c.identity.domid && !other.identity.privileged ? sum + other.watches.count : sum
                }
                if held >= quotas.watchesPerDomain { return .failure(.e2big) }
            }
            c.watches.append(Watch(path: resolved.path, token: token, relative: resolved.relative))
            return .success(Self.ok)
        }
    }

    private func commit(_ tx: Transaction) -> Reply {
        for (path, generation) in tx.accessed where (nodes[path]?.generation ?? 0) != generation {
            return .failure(.eagain)
        }
        for (path, node) in tx.overlay.sorted(by: { $0.key < $1.key }) { put(path, node, nil) }
        for event in tx.events {
            deliver(path: event.path, permissions: event.permissions, oldPermissions: event.oldPermissions, exact: event.exact)
        }
        return .success(Self.ok)
    }

    // MARK: Watches

    private func fire(path: String, permissions: [XenStorePermission], oldPermissions: [XenStorePermission]?,
                      exact: Bool, _ tx: Transaction?) {
        if let tx {
            tx.events.append(PendingEvent(path: path, permissions: permissions, oldPermissions: oldPermissions, exact: exact))
        } else {
            deliver(path: path, permissions: permissions, oldPermissions: oldPermissions, exact: exact)
        }
    }

    /// Queues an event on every watch at `path` or above it (only at `path` if `exact`)
    /// whose connection may read the node, now or before a permission change.
    func deliver(path: String, permissions: [XenStorePermission], oldPermissions: [XenStorePermission]?, exact: Bool) {
        for id in connectionOrder {
            guard let c = connections[id], !c.watches.isEmpty else { continue }
            var permitted: Bool?
            for w in c.watches {
                let matches = exact ? w.path == path : XenStorePath.isSelfOrDescendant(path, of: w.path)
                guard matches else { continue }
                if permitted == nil {
                    permitted = rights(c, permissions).contains(.read)
                        || (oldPermissions.map { rights(c, $0).contains(.read) } ?? false)
                }
                guard permitted == true else { break }
                var reported = Array(path.utf8)
                if w.relative, let home = c.identity.home {
                    let prefix = Array(home.utf8) + [UInt8(ascii: "/")]
                    if reported.starts(with: prefix) { reported.removeFirst(prefix.count) }
                }
                sendEvent(c, path: reported, token: w.token)
            }
        }
    }

    func deliverSpecial(_ name: String) {
        guard let permissions = specialPermissions[name] else { return }
        for id in connectionOrder {
            guard let c = connections[id], rights(c, permissions).contains(.read) else { continue }
            for w in c.watches where w.path == name {
                sendEvent(c, path: Array(name.utf8), token: w.token)
            }
        }
    }

    private func sendEvent(_ c: Connection, path: [UInt8], token: [UInt8]) {
        let payload = path + [0] + token + [0]
        guard payload.count <= XenStoreLimits.payloadMax else { return }
        if !c.identity.privileged, c.pendingEvents >= quotas.pendingWatchEvents {
            c.droppedEvents += 1
            return
        }
        enqueue(c, XenStoreMessage(type: .watchEvent, payload: payload), isReply: false)
    }
}
