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
}
