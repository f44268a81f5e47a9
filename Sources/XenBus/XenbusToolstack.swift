import XenPlatform
import XenStore

/// The toolstack's part of a split device, as libxl's `libxl__device_generic_add` and
/// device removal do it: both nodes written in one transaction, each owned by its end's
/// domain and readable by the other; removal takes both nodes away.
public enum XenbusToolstack {
    /// Creates the frontend node (`backend`, `backend-id`, `state` = Initialising, then
    /// `frontendKeys`) and the backend node (`frontend`, `frontend-id`, `online` = 1,
    /// `state` = Initialising, then `backendKeys`) over a privileged `store`.
    public static func addDevice(_ paths: XenbusDevicePaths, store: XenStoreClient,
                                 backendKeys: XenbusKeys = XenbusKeys(),
                                 frontendKeys: XenbusKeys = XenbusKeys()) async throws(XenbusError) {
        let initialising = XenbusState.initialising.nodeValue
        var frontend: XenbusKeys = ["backend": paths.backend, "backend-id": String(paths.backendID), "state": initialising]
        for (k, v) in frontendKeys.entries { frontend.set(k, v) }
        var backend: XenbusKeys = ["frontend": paths.frontend, "frontend-id": String(paths.frontendID),
                                   "online": "1", "state": initialising]
        for (k, v) in backendKeys.entries { backend.set(k, v) }
        let frontendPermissions = [XenStorePermission(domid: paths.frontendID, access: .none),
                                   XenStorePermission(domid: paths.backendID, access: .read)]
        let backendPermissions = [XenStorePermission(domid: paths.backendID, access: .none),
                                  XenStorePermission(domid: paths.frontendID, access: .read)]
        do {
            try await store.withTransaction { tx in
                try await tx.mkdir(paths.frontend)
                try await tx.setPermissions(paths.frontend, frontendPermissions)
                for (k, v) in frontend.entries { try await tx.write(paths.frontend + "/" + k, v) }
                try await tx.mkdir(paths.backend)
                try await tx.setPermissions(paths.backend, backendPermissions)
                for (k, v) in backend.entries { try await tx.write(paths.backend + "/" + k, v) }
            }
        } catch let error as XenStoreError {
            throw .store(path: paths.backend, error)
        } catch {
            throw .store(path: paths.backend, .daemon(.eio))
        }
    }

    /// Removes both nodes, as `xl block-detach` ends by doing.
    public static func removeDevice(_ paths: XenbusDevicePaths, store: XenStoreClient) async throws(XenbusError) {
        for path in [paths.backend, paths.frontend] {
            do {
                try await store.rm(path)
            } catch .daemon(.enoent) {
                continue
            } catch {
                throw .store(path: path, error)
            }
        }
    }
}
