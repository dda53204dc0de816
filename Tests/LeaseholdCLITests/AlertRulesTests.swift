import Foundation
import Leasehold
import Testing

/// Docs/alerts: the Prometheus rules and the Grafana dashboard operators load as shipped, so
/// a typo in a metric name or a rule that never fires must fail here, not in production.
@Suite("Docs/alerts rules and dashboard")
struct AlertRulesTests {
    static let root = ExternalTool.repositoryRoot
    static let alerts = root.appendingPathComponent("Docs/alerts")
    static let rulesPath = alerts.appendingPathComponent("leasehold.rules.yml").path

    /// Every metric the daemon exports (or the runner side of issue 14 adds): an expression
    /// naming anything else watches a series that never exists, and never fires.
    static let metrics: Set<String> = [
        "leasehold_leader", "leasehold_lease_acquired_total", "leasehold_lease_lost_total",
        "leasehold_leaderless_seconds", "leasehold_redis_up", "leasehold_members", "leasehold_job_runs_total",
        "leasehold_handler_stuck", "leasehold_catalog_info", "leasehold_catalog_reloads_total",
        "leasehold_job_last_success_timestamp_seconds", "leasehold_job_next_run_timestamp_seconds",
        "leasehold_job_paused", "leasehold_job_retries_total", "leasehold_job_missed_slots_total",
    ]

    /// The `leasehold_*` names an expression uses.
    static func metricNames(_ expr: String) throws -> [String] {
        try expr.matches(of: Regex("leasehold_[a-z_]+")).map { String(expr[$0.range]) }
    }

    /// promtool (Debian package `prometheus`), if installed.
    static let promtool = ExternalTool("promtool")

    /// Runs promtool in Docs/alerts; returns its exit code and output.
    static func run(_ arguments: [String]) async throws -> (code: Int32, output: String) {
        try await #require(promtool).run(arguments, in: alerts)
    }

    @Test(.enabled(if: promtool != nil, "promtool is not installed (Debian: apt-get install prometheus)"))
    func promtoolChecksAndUnitTestsTheRules() async throws {
        let check = try await Self.run(["check", "rules", "leasehold.rules.yml"])
        #expect(check.code == 0, "\(check.output)")
        // The unit tests pin the per-member aggregation: a standby's leasehold_leader 0 is no alert.
        let test = try await Self.run(["test", "rules", "leasehold.rules.test.yml"])
        #expect(test.code == 0, "\(test.output)")
    }

    @Test func everyRuleIsCompleteAndUsesKnownMetrics() throws {
        let text = try String(contentsOfFile: Self.rulesPath, encoding: .utf8)
        let document = try #require(try YAMLReader.parse(text: text, file: Self.rulesPath))
        let groups = try #require(document.value(for: "groups")?.asSequence)
        let rules = groups.flatMap { $0.value(for: "rules")?.asSequence ?? [] }
        var names: [String] = []
        for rule in rules {
            let name = try #require(rule.value(for: "alert")?.asString, "a rule without alert: at \(rule.location)")
            names.append(name)
            let expr = try #require(rule.value(for: "expr")?.asString, "\(name): no expr")
            #expect(rule.value(for: "for")?.asString.flatMap(CatalogValue.duration) != nil, "\(name): no valid for:")
            let severity = rule.value(for: "labels")?.value(for: "severity")?.asString
            #expect(["critical", "warning"].contains(severity), "\(name): severity \(severity ?? "missing")")
            let annotations = try #require(rule.value(for: "annotations"), "\(name): no annotations")
            #expect(annotations.value(for: "summary")?.asString?.isEmpty == false, "\(name): no summary")
            #expect(annotations.value(for: "description")?.asString?.isEmpty == false, "\(name): no description")
            let used = try Self.metricNames(expr)
            #expect(!used.isEmpty || expr.contains("up{"), "\(name) watches no Leasehold metric: \(expr)")
            for metric in used { #expect(Self.metrics.contains(metric), "\(name): unknown metric \(metric)") }
        }
        #expect(Set(names).count == names.count, "duplicate alert names: \(names)")
        for expected in [
            "LeaseholdJobOverdue", "LeaseholdJobFailing", "LeaseholdJobNoLeader", "LeaseholdMemberDown",
            "LeaseholdCatalogSkew", "LeaseholdCatalogReloadFailed",
        ] {
            #expect(names.contains(expected), "missing \(expected)")
        }
        // Runbook links point at headings that exist in Docs/OPERATIONS.md.
        let anchors = try Self.operationsAnchors()
        for rule in rules {
            guard let link = rule.value(for: "annotations")?.value(for: "runbook")?.asString else { continue }
            let anchor = try #require(link.split(separator: "#").last.map(String.init))
            #expect(link.hasPrefix("Docs/OPERATIONS.md#") && anchors.contains(anchor), "dangling runbook link \(link)")
        }
    }

    @Test func theDashboardParsesAndUsesKnownMetrics() throws {
        let data = try Data(contentsOf: Self.alerts.appendingPathComponent("leasehold.dashboard.json"))
        let dashboard = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        let panels = try #require(dashboard["panels"] as? [[String: Any]])
        let titles = panels.compactMap { $0["title"] as? String }
        for expected in ["Jobs led per member", "Leaderless time", "Run results", "Overdue jobs"] {
            #expect(titles.contains(expected), "no panel \(expected): \(titles)")
        }
        var exprs: [String] = []
        for panel in panels {
            let targets = try #require(panel["targets"] as? [[String: Any]], "\(panel["title"] ?? "?") has no targets")
            exprs += targets.compactMap { $0["expr"] as? String }
        }
        #expect(exprs.count >= panels.count)
        for expr in exprs {
            let used = try Self.metricNames(expr)
            #expect(!used.isEmpty, "\(expr) uses no Leasehold metric")
            for metric in used { #expect(Self.metrics.contains(metric), "unknown metric \(metric) in \(expr)") }
        }
    }

    /// GitHub's anchors for the headings of Docs/OPERATIONS.md: lowercased, punctuation
    /// dropped, spaces to dashes.
    static func operationsAnchors() throws -> Set<String> {
        let text = try String(contentsOf: root.appendingPathComponent("Docs/OPERATIONS.md"), encoding: .utf8)
        var anchors = Set<String>()
        for line in text.split(separator: "\n") where line.hasPrefix("#") {
            let title = line.drop { $0 == "#" }.trimmingCharacters(in: .whitespaces).lowercased()
            let kept = title.unicodeScalars.filter {
                CharacterSet.alphanumerics.contains($0) || $0 == " " || $0 == "-" || $0 == "_"
            }
            anchors.insert(String(String.UnicodeScalarView(kept)).replacingOccurrences(of: " ", with: "-"))
        }
        return anchors
    }
}
