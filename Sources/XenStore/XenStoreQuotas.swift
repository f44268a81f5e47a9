/// Per-domain limits of the server, with C xenstored 4.17's defaults and the error each
/// answers (Protocols/xenstore-quotas.md). They bind unprivileged connections only.
public struct XenStoreQuotas: Sendable, Equatable {
    /// Nodes a domain may own (`-E`, quota-nodes); creating more answers ENOSPC.
    public var nodesPerDomain = 1000
    /// Bytes of one node record: 24 + 8 per permission + value + child names with their
    /// NULs (`-S`, quota-entry-size); a record of this size or more answers ENOSPC.
    public var entrySize = 2048
    /// Watches a domain may hold (`-W`, quota-watches); one more answers E2BIG.
    public var watchesPerDomain = 128
    /// Open transactions per connection (`-t`, quota-transactions); one more answers ENOSPC.
    public var transactionsPerConnection = 10
    /// Nodes one transaction may look at or change (quota-transaction-nodes): once a
    /// transaction has touched this many, its further requests answer ENOSPC.
    public var transactionNodes = 1024
    /// Entries in one permission list (`-A`, quota-permissions); more answers ENOSPC.
    public var permissionsPerNode = 5
    /// Replies queued but not yet delivered (quota-outstanding): past it the server stops
    /// reading the connection until the peer takes its replies. No error is sent.
    public var outstandingRequests = 20
    /// Watch events queued for a domain's connection; further events are dropped, as C
    /// xenstored drops events beyond its pending-event limit.
    public var pendingWatchEvents = 1024

    /// C xenstored 4.17's defaults.
    public init() {}
}
