import Foundation
import Testing
@testable import Conformance

/// The clause files as data: they load, their IDs are stable-looking and unique, and a
/// malformed row is refused with where and why.
@Suite struct ClauseCatalogTests {
    static func catalog() throws -> ClauseCatalog { try ClauseCatalog(directory: ClauseCatalog.defaultDirectory()) }

    @Test func theProjectFilesLoad() throws {
        let catalog = try Self.catalog()
        #expect(Set(catalog.areas).isSuperset(of: ["ring", "xenbus", "blkif-backend", "blkif-frontend"]))
        #expect(catalog.clauses.count >= 100, "\(catalog.clauses.count) clauses")
        #expect(Set(catalog.clauses.map(\.id)).count == catalog.clauses.count)
        // Each area's IDs share its prefix, so an ID says where it is written.
        let prefixes = ["ring": "RING-", "xenbus": "XENBUS-", "blkif-backend": "BLKIF-BE-", "blkif-frontend": "BLKIF-FE-"]
        for clause in catalog.clauses {
            if let prefix = prefixes[clause.area] { #expect(clause.id.hasPrefix(prefix), "\(clause.id) in \(clause.area)") }
            #expect(clause.source.hasSuffix(".h"), "\(clause.id) cites \(clause.source)")
        }
        #expect(catalog.clauses.contains { $0.kind == .negative && $0.role == .backend })
        #expect(catalog.clauses.contains { $0.kind == .negative && $0.role == .frontend })
        #expect(catalog.clause("BLKIF-BE-019")?.feature == FeatureCondition(key: "max-ring-page-order", test: .above(0)))
        #expect(catalog.clause("BLKIF-BE-026")?.feature == FeatureCondition(key: "info", test: .bits(4)))
    }

    static let header = "id\trole\tkind\tsource\tfield\tfeature\trequirement\tpass\n"

    @Test(arguments: [
        ("X-01\tbackend\tpositive\tio/ring.h\tf\t-\tr\tp\n", 4, "not AREA-NNN"),
        ("X-001\tguest\tpositive\tio/ring.h\tf\t-\tr\tp\n", 4, "role guest"),
        ("X-001\tbackend\tmaybe\tio/ring.h\tf\t-\tr\tp\n", 4, "kind maybe"),
        ("X-001\tbackend\tpositive\tio/ring.h\tf\tKEY\tr\tp\n", 4, "feature KEY"),
        ("X-001\tbackend\tpositive\tio/ring.h\tf\tkey>lots\tr\tp\n", 4, "feature key>lots"),
        ("X-001\tbackend\tpositive\tio/ring.h\tf\t-\tr\n", 4, "7 fields"),
        ("X-001\tbackend\tpositive\tio/ring.h\t\t-\tr\tp\n", 4, "empty field"),
    ])
    func malformedRowsAreRefused(row: String, line: Int, reason: String) throws {
        let text = "# comment\n\n" + Self.header + row
        #expect {
            try ClauseCatalog(name: "x.tsv", text: text)
        } throws: { error in
            guard case let .malformed(file, at, why) = error as? ConformanceError else { return false }
            return file == "x.tsv" && at == line && why.contains(reason)
        }
    }

    @Test func aDuplicateIDIsRefused() throws {
        let row = "X-001\tbackend\tpositive\tio/ring.h\tf\t-\tr\tp\n"
        #expect(throws: ConformanceError.duplicateID("X-001", file: "x.tsv", line: 2)) {
            try ClauseCatalog(name: "x.tsv", text: Self.header + row + row)
        }
    }

    @Test func featureConditions() throws {
        let nodes = ["a": "1", "z": "0", "n": "3", "junk": "many", "info": "5"]
        #expect(try FeatureCondition.parse("a")?.isOffered(by: nodes) == true)
        #expect(try FeatureCondition.parse("z")?.isOffered(by: nodes) == false)
        #expect(try FeatureCondition.parse("absent")?.isOffered(by: nodes) == false)
        #expect(try FeatureCondition.parse("n>2")?.isOffered(by: nodes) == true)
        #expect(try FeatureCondition.parse("n>3")?.isOffered(by: nodes) == false)
        #expect(try FeatureCondition.parse("junk>0")?.isOffered(by: nodes) == false)
        #expect(try FeatureCondition.parse("info&4")?.isOffered(by: nodes) == true)
        #expect(try FeatureCondition.parse("info&2")?.isOffered(by: nodes) == false)
        #expect(try FeatureCondition.parse("-") == nil)
    }

    @Test func expectationsNeedAReasonForAnythingButPass() throws {
        let catalog = try Self.catalog()
        let header = "clause\ttarget\toutcome\treason\tissue\n"
        let ok = try Expectations(text: header + "RING-001\tours\tpass\t-\t-\nRING-007\tours\tfail\tnot yet\t[x]\n", catalog: catalog)
        #expect(ok.entry(clause: "RING-007", target: "ours")?.outcome == .fail)
        #expect(throws: ConformanceError.self) { try Expectations(text: header + "RING-007\tours\tfail\t-\t-\n", catalog: catalog) }
        #expect(throws: ConformanceError.self) { try Expectations(text: header + "NOPE-001\tours\tpass\t-\t-\n", catalog: catalog) }
        #expect(throws: ConformanceError.self) {
            try Expectations(text: header + "RING-001\tours\tpass\t-\t-\nRING-001\tours\tpass\t-\t-\n", catalog: catalog)
        }
    }
}
