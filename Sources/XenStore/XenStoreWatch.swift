/// A watch event: the path that changed (relative if the watch was) and the token.
public struct XenStoreWatchEvent: Equatable, Sendable {
    /// The path as xenstored reported it.
    public var path: String
    /// The watch's token.
    public var token: String

    /// An event.
    public init(path: String, token: String) {
        self.path = path
        self.token = token
    }
}

/// A watch as an async sequence of events. The first event is xenstored's initial one,
/// sent as soon as the watch is set. Events are buffered without bound until consumed.
public struct XenStoreWatch: AsyncSequence, Sendable {
    public typealias Element = XenStoreWatchEvent

    /// The path watched, as given.
    public let path: String
    /// The token that tags this watch's events.
    public let token: String
    let client: XenStoreClient
    let events: AsyncStream<XenStoreWatchEvent>

    public func makeAsyncIterator() -> AsyncStream<XenStoreWatchEvent>.Iterator {
        events.makeAsyncIterator()
    }

    /// XS_UNWATCH, then ends the sequence.
    public func cancel() async throws(XenStoreError) {
        let continuation = client.shared.state.withLock { $0.watches.removeValue(forKey: Array(token.utf8)) }
        continuation?.finish()
        _ = try await client.request(.unwatch(path: XenStoreClient.bytes(path), token: Array(token.utf8)))
    }
}

extension XenStoreClient {
    /// XS_WATCH on `path` (absolute, relative to the domain home, or `@introduceDomain` /
    /// `@releaseDomain`) with a token unique to this client unless one is given.
    public func watch(_ path: String, token: String? = nil) async throws(XenStoreError) -> XenStoreWatch {
        let (stream, continuation) = AsyncStream<XenStoreWatchEvent>.makeStream(bufferingPolicy: .unbounded)
        // Registered before the request so the initial event cannot be missed.
        let chosen: String? = shared.state.withLock { s in
            let t = token ?? "xsw\(s.nextToken)"
            s.nextToken += 1
            guard s.watches[Array(t.utf8)] == nil else { return nil }
            s.watches[Array(t.utf8)] = continuation
            return t
        }
        guard let chosen else {
            continuation.finish()
            throw .duplicateWatchToken(token ?? "")
        }
        do {
            _ = try await request(.watch(path: Self.bytes(path), token: Array(chosen.utf8)))
        } catch {
            _ = shared.state.withLock { $0.watches.removeValue(forKey: Array(chosen.utf8)) }
            continuation.finish()
            throw error
        }
        return XenStoreWatch(path: path, token: chosen, client: self, events: stream)
    }
}
