import Leasehold
import Logging
import ServiceLifecycle
import UnixSignals

/// Re-reads the catalog on SIGHUP (the convention of nginx, HAProxy and Prometheus) and
/// applies it to the member; a catalog with any problem is logged problem by problem and
/// changes nothing.
struct CatalogReloader: Service {
    /// The catalog path as given on the command line.
    let path: String
    /// The handlers the daemon knows (the catalog is validated against them).
    let registry: HandlerRegistry
    /// The member to apply it to.
    let member: LeaseholdService
    /// Where the outcome is logged.
    let logger: Logger
    /// Where the outcome is counted.
    let metrics: LeaseholdMetrics

    func run() async throws {
        for await _ in await UnixSignalsSequence(trapping: .sighup).cancelOnGracefulShutdown() {
            await reload()
        }
    }

    /// One reload: load and validate, then apply the difference.
    func reload() async {
        logger.info("SIGHUP: reloading the catalog", metadata: ["config": "\(path)"])
        let catalog: Catalog
        do {
            catalog = try registry.loadCatalog(path: path)
        } catch {
            for problem in error.errors { logger.error("catalog reload: \(problem.description)") }
            fail(problems: error.errors.count)
            return
        }
        do {
            let applied = try await member.reload(catalog)
            for line in applied.notReloadable { logger.warning("catalog reload: \(line)") }
            metrics.catalogReloads(result: "success").increment()
            logger.notice(
                "catalog reloaded",
                metadata: [
                    "digest": "\(applied.digest)", "added": "\(applied.added.count)",
                    "removed": "\(applied.removed.count)", "changed": "\(applied.changed.count)",
                    "unchanged": "\(applied.unchanged.count)",
                ])
        } catch {
            for message in error.messages { logger.error("catalog reload: \(message)") }
            fail(problems: error.messages.count)
        }
    }

    private func fail(problems: Int) {
        metrics.catalogReloads(result: "failure").increment()
        logger.error(
            "catalog reload failed: still running the previous catalog",
            metadata: ["problems": "\(problems)", "config": "\(path)"])
    }
}
