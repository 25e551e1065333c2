// Swift tests for the B3IQ package. Run on a Mac after scripts/build-xcframework.sh:
//   cd bindings/swift && swift test
// They were NOT run in this repository's CI (no Swift toolchain on Linux); the same surface is
// tested through uniffi's generated Python bindings (tests/test_uniffi_vectors.py).
import Foundation
import XCTest
@testable import B3IQ

final class B3IQTests: XCTestCase {
    func testSignAndVerify() throws {
        let key = try NodeKey.fromSeed(seed: Data(repeating: 7, count: 32))
        let signature = key.sign(message: Data("hello".utf8))
        XCTAssertTrue(try key.publicKey().verify(message: Data("hello".utf8), signature: signature))
        XCTAssertFalse(try key.publicKey().verify(message: Data("hellO".utf8), signature: signature))
        XCTAssertTrue(key.nodeId().text().hasPrefix("b3n_"))
    }

    func testBadNodeIdThrowsInvalidInput() {
        XCTAssertThrowsError(try NodeId.parse(text: "nope")) { error in
            guard case B3iqError.InvalidInput(let code, _) = error else {
                return XCTFail("expected InvalidInput, got \(error)")
            }
            XCTAssertEqual(code, "invalid_node_id")
        }
    }

    func testSplitSumsToTotal() {
        let parts = split(total: 1001, hasPublisher: true)
        XCTAssertEqual(parts.host + parts.publisher + parts.`protocol` + parts.verifier, 1001)
    }

    /// The one category -> case table (docs/bindings.md), fed every category the core defines.
    func testEveryErrorCategoryThrowsItsCase() {
        let expected: [(category: String, caseName: String)] = [
            ("invalid_input", "InvalidInput"),
            ("unauthenticated", "Auth"),
            ("expired", "Expired"),
            ("replayed", "Replay"),
            ("policy_denied", "Policy"),
            ("state", "State"),
            ("io", "Io"),
            ("runtime", "Runtime"),
            ("internal", "Internal"),
        ]
        XCTAssertEqual(testingErrorCategories(), expected.map { $0.category })
        for (category, caseName) in expected {
            XCTAssertThrowsError(try testingErrorForCategory(category: category)) { error in
                guard let error = error as? B3iqError else {
                    return XCTFail("expected a B3iqError, got \(error)")
                }
                let (name, code, message) = describe(error)
                XCTAssertEqual(name, caseName, category)
                XCTAssertEqual(code, "error_probe", category)
                XCTAssertTrue(message.hasSuffix(": the probe's cause"), message)
            }
        }
    }

    private func describe(_ error: B3iqError) -> (String, String, String) {
        switch error {
        case let .InvalidInput(code, message): return ("InvalidInput", code, message)
        case let .Auth(code, message): return ("Auth", code, message)
        case let .Expired(code, message): return ("Expired", code, message)
        case let .Replay(code, message): return ("Replay", code, message)
        case let .Policy(code, message): return ("Policy", code, message)
        case let .State(code, message): return ("State", code, message)
        case let .Io(code, message): return ("Io", code, message)
        case let .Runtime(code, message): return ("Runtime", code, message)
        case let .Internal(code, message): return ("Internal", code, message)
        }
    }
}
