/// What a catalog reload changes: which jobs come, go, change or stay, and which settings
/// cannot change without a restart (the member keeps their old values).
package struct CatalogDiff: Sendable, Hashable {
    /// Jobs only the new catalog has, in new-catalog order.
    package var added: [String]
    /// Jobs only the old catalog has, in old-catalog order.
    package var removed: [String]
    /// Jobs in both whose fingerprints differ, in new-catalog order.
    package var changed: [String]
    /// Jobs in both with the same fingerprint, in new-catalog order.
    package var unchanged: [String]
    /// One line per setting that changed but needs a restart to apply. Values are never
    /// printed: a Redis URL may carry a password, and naming the key is enough to act on.
    package var unreloadable: [String]

    /// Compares `old` (what the member runs) with `new` (what it just read).
    package init(old: Catalog, new: Catalog) {
        let oldFingerprints = Dictionary(old.jobs.map { ($0.name, $0.fingerprint) }, uniquingKeysWith: { a, _ in a })
        let newNames = Set(new.jobs.map(\.name))
        var added: [String] = []
        var changed: [String] = []
        var unchanged: [String] = []
        for job in new.jobs {
            if let before = oldFingerprints[job.name] {
                if before == job.fingerprint { unchanged.append(job.name) } else { changed.append(job.name) }
            } else {
                added.append(job.name)
            }
        }
        self.added = added
        self.changed = changed
        self.unchanged = unchanged
        self.removed = old.jobs.map(\.name).filter { !newNames.contains($0) }

        var unreloadable: [String] = []
        func check(_ key: String, _ differs: Bool) {
            guard differs else { return }
            unreloadable.append(
                "\(key) changed in \(new.path): not reloadable, keeping the old value (restart the member to apply it)")
        }
        check("redis.url", old.redisURL != new.redisURL)
        check("redis.namespace", old.namespace != new.namespace)
        check("redis.password_file", old.redisPasswordFile != new.redisPasswordFile)
        check("redis.sentinel_password", old.redisSentinelPassword != new.redisSentinelPassword)
        check("redis.min_replicas", old.redisMinReplicas != new.redisMinReplicas)
        self.unreloadable = unreloadable
    }

    /// True when the reload changes nothing at all.
    package var isEmpty: Bool { added.isEmpty && removed.isEmpty && changed.isEmpty && unreloadable.isEmpty }
}
