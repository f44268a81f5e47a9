import Logging
import XenStore

/// The writes a driver makes to its own device node, with Linux's rules: never recreate
/// a node the toolstack removed (`xenbus_switch_state` checks inside a transaction), and
/// report fatal errors where `xenbus_dev_fatal` does.
struct XenbusOwnNode: Sendable {
    let store: XenStoreClient
    let path: String
    let logger: Logger

    /// Whether the node exists.
    func exists() async throws(XenbusError) -> Bool {
        do {
            _ = try await store.read(path)
            return true
        } catch .daemon(.enoent) {
            return false
        } catch {
            throw .store(path: path, error)
        }
    }

    /// Writes `keys` and then `state` in one transaction (retried on EAGAIN), so the other
    /// end never sees the state without the keys. Returns false, writing nothing, when the
    /// node no longer exists. With no keys and the state already in place nothing is
    /// written, so no watch fires for nothing.
    func publish(_ keys: XenbusKeys, state: XenbusState) async throws(XenbusError) -> Bool {
        let path = self.path
        do {
            return try await store.withTransaction { tx in
                do {
                    _ = try await tx.read(path)
                } catch XenStoreError.daemon(.enoent) {
                    return false
                }
                if keys.entries.isEmpty, let current = try? await tx.read(path + "/state"),
                   (try? XenbusState(parsing: current, at: path)) == state {
                    return true
                }
                for (key, value) in keys.entries { try await tx.write(path + "/" + key, value) }
                try await tx.write(path + "/state", state.nodeValue)
                return true
            }
        } catch let error as XenStoreError {
            throw .store(path: path, error)
        } catch {
            throw .store(path: path, .daemon(.eio))
        }
    }

    /// Removes `keys` from the node, if it still exists; failures are logged only, as
    /// there is nothing better to do with them on the way down.
    func remove(_ keys: [String]) async {
        guard !keys.isEmpty, (try? await exists()) == true else { return }
        for key in keys {
            do {
                try await store.rm(path + "/" + key)
            } catch .daemon(.enoent) {
                continue
            } catch {
                logger.warning("xenbus: could not remove \(path)/\(key): \(error)")
            }
        }
    }

    /// Where `xenbus_dev_fatal` reports: `<home>/error/<node relative to home>/error`,
    /// for example `/local/domain/0/error/backend/vbd/5/51712/error`.
    var errorPath: String? {
        let parts = path.split(separator: "/", omittingEmptySubsequences: true)
        guard parts.count > 3, parts[0] == "local", parts[1] == "domain" else { return nil }
        return "/local/domain/\(parts[2])/error/" + parts.dropFirst(3).joined(separator: "/") + "/error"
    }

    /// Writes the error node as Linux does: the positive errno, a space, the message.
    /// A domU usually may not write under its home's `error`; that failure is logged.
    func writeError(errno: Int32, message: String) async {
        guard let errorPath else { return }
        do {
            try await store.write(errorPath, "\(errno) \(message)")
        } catch {
            logger.warning("xenbus: could not write \(errorPath): \(error)")
        }
    }

    /// The error node's value, if one is there (a refusal by this driver or an earlier
    /// process's); nil when absent or unreadable.
    func readError() async -> String? {
        guard let errorPath else { return nil }
        return try? await store.readString(errorPath)
    }

    /// Removes the error node (after a successful reconnect, so it does not describe a
    /// working device). Only the `error` leaf goes; the directories are left.
    func clearError() async {
        guard let errorPath else { return }
        try? await store.rm(errorPath)
    }
}
